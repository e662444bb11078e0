"""``BlockCache``: the decoded data blocks of one KV's tables, least recently used first out, bounded by the
memory they take; it also counts the tables' bloom filter answers for the KV's metrics."""

from __future__ import annotations

import collections
import threading

from kvstore.block import BlockEntries as Block

__all__ = ["BlockCache"]


class BlockCache:
    """An LRU cache of decoded blocks keyed by (file number, offset), bounded by the memory they take
    (encoded bytes plus ``DECODED_ENTRY_BYTES`` per entry)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0
        self.hits = 0
        self.misses = 0
        # the tables' filters, over every table of the KV (``TableReader.get``; lock-free, see ``metrics``)
        self.bloom_negatives = 0  # a key the filter ruled out
        self.bloom_false_positives = 0  # a key the filter passed that the table lacks
        self._map: collections.OrderedDict[tuple[int, int], tuple[Block, int]] = collections.OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[int, int]) -> Block | None:
        with self._lock:
            hit = self._map.get(key)
            if hit is None:
                self.misses += 1
                return None
            self._map.move_to_end(key)
            self.hits += 1
            return hit[0]

    def holds(self, key: tuple[int, int]) -> bool:
        """Whether the block ``key`` is cached now (a question that counts neither a hit nor a miss)."""
        with self._lock:
            return key in self._map

    def put(self, key: tuple[int, int], block: Block, charge: int) -> None:
        if charge > self.capacity:
            return
        with self._lock:
            if key in self._map:
                return
            self._map[key] = (block, charge)
            self.used += charge
            while self.used > self.capacity:
                _, (_, old) = self._map.popitem(last=False)
                self.used -= old

    def evict_file(self, file_number: int) -> None:
        """Drop every block of one file (called when the file is deleted)."""
        with self._lock:
            for key in [k for k in self._map if k[0] == file_number]:
                self.used -= self._map.pop(key)[1]
