"""The memtable: a versioned sorted table in memory, on ``sortedcontainers.SortedDict``.

Each key maps to its versions, newest first, as ``(sequence, value)`` pairs
where a value of ``None`` is a delete.  Old versions are kept while a live
snapshot may need them.  Readers iterate in chunks and re-find their place by
key, so a writer inserting meanwhile never breaks them; keys are never
removed, only given new versions.  On disk the memtable exists only as the WAL
(DESIGN.md, "Write path").

Invariants:
  - keys are in ascending byte order (SortedDict);
  - each version list is non-empty with strictly decreasing sequences;
  - ``bytes`` is the sum of ``len(key) + len(value) + ENTRY_OVERHEAD`` over stored versions;
  - ``max_seq`` is the largest sequence stored (0 when empty).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

from sortedcontainers import SortedDict

__all__ = ["ENTRY_OVERHEAD", "Memtable"]

#: Bytes charged per stored version beside its key and value (sequence, kind, lengths).
ENTRY_OVERHEAD = 16
# keys fetched per step of an iterator
_CHUNK = 256

Version = tuple[int, "bytes | None"]


class Memtable:
    """A sorted, versioned key-value table in memory.

    Cost: ``put`` O(log n) for a new key, O(1) for an existing one; ``get``
    O(1); iteration O(log n) per chunk of keys plus O(1) per key.
    """

    def __init__(self) -> None:
        self._data: SortedDict[bytes, list[Version]] = SortedDict()
        self.bytes = 0
        self.max_seq = 0
        self.min_seq = 0

    def __len__(self) -> int:
        """The number of distinct keys."""
        return len(self._data)

    @property
    def num_entries(self) -> int:
        """The number of stored versions."""
        return sum(len(v) for v in self._data.values())

    def put(self, key: bytes, seq: int, value: bytes | None, oldest_snapshot: int | None = None) -> None:
        """Add version ``seq`` of ``key`` (``value`` None is a delete).

        ``seq`` must be at least every sequence stored (the writes of one
        transaction share one sequence; a key appears once in it).  Older versions of ``key``
        are dropped unless a snapshot at or after ``oldest_snapshot`` may
        still read them.
        """
        assert seq >= self.max_seq, (seq, self.max_seq)
        charge = len(key) + ENTRY_OVERHEAD + (0 if value is None else len(value))
        versions = self._data.get(key)
        if versions is None:
            self._data[key] = [(seq, value)]
        elif oldest_snapshot is None:
            for _, old in versions:
                charge -= len(key) + ENTRY_OVERHEAD + (0 if old is None else len(old))
            self._data[key] = [(seq, value)]
        else:
            kept: list[Version] = [(seq, value)]
            for version in versions:
                kept.append(version)
                if version[0] <= oldest_snapshot:
                    break  # the newest version the oldest snapshot sees; older ones nobody sees
            for _, old in versions[len(kept) - 1 :]:
                charge -= len(key) + ENTRY_OVERHEAD + (0 if old is None else len(old))
            self._data[key] = kept
        self.bytes += charge
        if not self.min_seq:
            self.min_seq = seq
        self.max_seq = seq

    def get(self, key: bytes, snapshot: int) -> Version | None:
        """The newest version of ``key`` at or before ``snapshot``, or None when there is none."""
        versions = self._data.get(key)
        if versions is not None:
            for version in versions:
                if version[0] <= snapshot:
                    return version
        return None

    def items(self, start: bytes | None, snapshot: int, reverse: bool = False,
              inclusive: bool = True) -> Iterator[tuple[bytes, bytes | None]]:
        """(key, value) of the newest version at or before ``snapshot`` of each key, deletes included.

        Forward from the first key ``>= start`` (``> start`` when not
        ``inclusive``), or backward from the last key ``<= start`` (``<``);
        ``start`` None means from the first (last) key.
        """
        data = self._data
        keys = data.keys()
        if not reverse:
            if start is None:
                i = 0
            else:
                i = data.bisect_left(start) if inclusive else data.bisect_right(start)
            while True:
                chunk = keys[i : i + _CHUNK]
                if not chunk:
                    return
                for key in chunk:
                    for seq, value in data[key]:
                        if seq <= snapshot:
                            yield key, value
                            break
                i = data.bisect_right(chunk[-1])
        else:
            if start is None:
                j = len(keys)
            else:
                j = data.bisect_right(start) if inclusive else data.bisect_left(start)
            while j > 0:
                chunk = keys[max(0, j - _CHUNK) : j]
                for key in reversed(chunk):
                    for seq, value in data[key]:
                        if seq <= snapshot:
                            yield key, value
                            break
                j = data.bisect_left(chunk[0])

    def entries(self) -> Iterator[tuple[bytes, int, bytes | None]]:
        """Every stored version as (key, sequence, value), keys ascending, sequences descending."""
        data = self._data
        for key in data:
            for seq, value in data[key]:
                yield key, seq, value

    def _check(self) -> None:
        """Assert the invariants (O(n)); for tests."""
        keys = list(self._data.keys())
        assert keys == sorted(keys)
        total = 0
        top = 0
        for key, versions in self._data.items():
            assert versions, key
            seqs = [s for s, _ in versions]
            assert all(a > b for a, b in itertools.pairwise(seqs)), (key, seqs)
            top = max(top, seqs[0])
            total += sum(len(key) + ENTRY_OVERHEAD + (0 if v is None else len(v)) for _, v in versions)
        assert total == self.bytes, (total, self.bytes)
        assert top == self.max_seq, (top, self.max_seq)
