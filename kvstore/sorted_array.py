"""The memtable: a versioned sorted table in memory: a dict of versions beside a ``sortedcontainers.SortedList``
of its keys.

Each key maps to its versions, oldest first, as ``(sequence, value)`` pairs
where a value of ``None`` is a delete.  Every version stays until the
memtable is flushed: a reader that took its snapshot without registering it
(a one-shot ``kv.get``) can never lose the version it reads, and the flush
drops the versions no live snapshot sees (``merge.compact_chunks``).  One
writer at a time (the commit leader) adds versions; any number of readers
read meanwhile: ``get`` is a dict lookup and a walk over a list that only
grows at its end, and iterators take ``lock`` for each chunk of keys, since
sortedcontainers' index is not safe to read while a key is inserted.  On disk
the memtable exists only as the WAL (DESIGN.md, "Write path").

Invariants:
  - ``_keys`` holds exactly the keys of ``_data``, in ascending byte order;
  - each version list is non-empty with strictly increasing sequences;
  - ``bytes`` is the sum of ``len(key) + len(value) + ENTRY_OVERHEAD`` over stored versions;
  - ``max_seq`` is the largest sequence stored (0 when empty), ``min_seq`` the smallest;
  - ``expiring`` counts the stored versions whose value is an ``Expiring``, counted before they are stored.
"""

from __future__ import annotations

import itertools
import operator
import threading
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from sortedcontainers import SortedList

from kvstore.rangedel import Fragments, Tombstone
from kvstore.record import Expiring, RangeEnd

__all__ = ["ENTRY_OVERHEAD", "Memtable"]

#: Bytes charged per stored version beside its key and value (sequence, kind, lengths).
ENTRY_OVERHEAD = 16
# keys fetched per step of an iterator: few at first (a seek often reads a handful), then many
_FIRST_CHUNK = 8
_CHUNK = 256
# writes in one commit from which their new keys go to ``_add_keys`` together
_BULK = 64

Version = tuple[int, "bytes | None"]


def _cut(keys: list[bytes], load: int) -> list[list[bytes]]:
    """``keys`` cut into sublists of ``load`` keys, a short last one joined to the one before it, so every
    sublist but a lone one holds from half to twice ``load`` keys (what sortedcontainers keeps)."""
    parts = [keys[pos : pos + load] for pos in range(0, len(keys), load)]
    if len(parts) > 1 and len(parts[-1]) < load // 2:
        last = parts.pop()
        parts[-1] += last
    return parts


class Memtable:
    """A sorted, versioned key-value table in memory.

    Cost: ``put`` O(log n) for a new key, O(1) for an existing one; ``get``
    O(1) plus the versions newer than the snapshot; iteration O(log n) per
    chunk of keys plus O(1) per key.
    """

    def __init__(self) -> None:
        self._data: dict[bytes, list[Version]] = {}
        self._keys: SortedList[bytes] = SortedList()  # the keys of _data, ascending; a key enters _data first
        #: Held while the key index changes and while an iterator reads a chunk of it.
        self.lock = threading.Lock()
        self.bytes = 0
        self.max_seq = 0
        self.min_seq = 0
        self.entries_count = 0
        #: versions whose value expires (``record.Expiring``): while 0, reads need not look at expiries
        self.expiring = 0
        #: the range tombstones (start, end, sequence) in commit order; only appended to
        self.ranges: list[Tombstone] = []
        self._fragments: tuple[int, Fragments] = (0, Fragments([], [], []))

    def __len__(self) -> int:
        """The number of distinct keys."""
        return len(self._data)

    def bounds(self) -> tuple[bytes | None, bytes | None]:
        """(smallest, largest) key of its versions and range tombstones; (None, None) when it is empty."""
        with self.lock:
            keys = self._keys
            los = [keys[0]] if keys else []
            his = [keys[-1]] if keys else []
        ranges = self.ranges[:]
        los += [t[0] for t in ranges]
        his += [t[1] for t in ranges]
        return (min(los), max(his)) if los else (None, None)

    def empty(self) -> bool:
        """True when nothing was written: no key and no range tombstone."""
        return not self._data and not self.ranges

    def fragments(self) -> Fragments:
        """The range tombstones as fragments (``rangedel``), built again only after a new one arrived.  Safe
        beside the writer: a reader whose snapshot covers a tombstone finds it appended already."""
        ranges = self.ranges
        count, fragments = self._fragments
        if count != len(ranges):
            count = len(ranges)
            fragments = Fragments.of(ranges[:count])
            self._fragments = (count, fragments)
        return fragments

    @property
    def num_entries(self) -> int:
        """The number of stored versions."""
        return self.entries_count

    def put(self, key: bytes, seq: int, value: bytes | None) -> None:
        """Add version ``seq`` of ``key`` (``value`` None is a delete).

        ``seq`` must be at least every sequence stored (the writes of one
        transaction share one sequence; a key appears once in it).
        """
        with self.lock:
            self._put(key, seq, value)

    def apply_many(self, commits: Sequence[tuple[int, Sequence[tuple[bytes, bytes | None]]]]) -> int:
        """Add the writes of several commits, each under its sequence, taking the lock once; returns the
        bytes of keys and values added."""
        data = self._data
        added = 0
        count = 0
        with self.lock:
            for seq, writes in commits:
                assert seq >= self.max_seq, (seq, self.max_seq)
                if writes and type(writes[-1][1]) is RangeEnd:  # range deletes come last in a commit
                    writes, ranged, bounds = self._split(writes, seq)
                    count += ranged
                    added += bounds
                fresh: list[bytes] = []
                add = fresh.append if len(writes) >= _BULK else self._keys.add  # many: laid on at once
                for key, value in writes:
                    if type(value) is Expiring:
                        self.expiring += 1
                    versions = data.get(key)
                    if versions is None:
                        data[key] = [(seq, value)]
                        add(key)
                    else:
                        assert versions[-1][0] < seq, (key, seq)
                        versions.append((seq, value))
                    added += len(key) if value is None else len(key) + len(value)
                if fresh:
                    self._add_keys(fresh)
                count += len(writes)
                if not self.min_seq:
                    self.min_seq = seq
                self.max_seq = seq
            self.bytes += added + count * ENTRY_OVERHEAD
            self.entries_count += count
        return added

    def _split(self, writes: Sequence[tuple[bytes, bytes | None]], seq: int
               ) -> tuple[Sequence[tuple[bytes, bytes | None]], int, int]:
        """Take a commit's range deletes (``record.RangeEnd`` values) into ``ranges`` at ``seq`` (under
        ``lock``); returns the other writes, how many range deletes there were and the bytes of their
        bounds (each is charged as an entry: bounds plus ``ENTRY_OVERHEAD``)."""
        points = [w for w in writes if type(w[1]) is not RangeEnd]
        added = 0
        for start, end in writes[len(points):]:
            assert end is not None
            self.ranges.append((start, bytes(end), seq))
            added += len(start) + len(end)
        return points, len(writes) - len(points), added

    def _add_keys(self, fresh: list[bytes]) -> None:
        """Add keys new to the memtable to its key index (under ``lock``).  Keys that all lie past either
        end of the index (a load in key order) are laid on as whole sublists of the sorted list, with its
        invariants kept (each sublist sorted, non-empty and at most its load long, ``_maxes`` their last
        keys, the positional index rebuilt on demand); others are added one by one."""
        keys = self._keys
        fresh.sort()
        raw: Any = keys  # the sorted list's internals, as sortedcontainers lays them out
        lists, maxes, load = raw._lists, raw._maxes, raw._load
        if not maxes or fresh[0] > maxes[-1]:  # after every key: the last sublist and the new keys, re-cut
            parts = _cut(lists.pop() + fresh if lists else fresh, load)
            lists[len(lists):] = parts
            maxes[len(lists) - len(parts):] = [part[-1] for part in parts]
        elif fresh[-1] < lists[0][0]:  # before every key: the new keys and the first sublist, re-cut
            parts = _cut(fresh + lists[0], load)
            lists[:1] = parts
            maxes[:1] = [part[-1] for part in parts]
        else:
            for key in fresh:
                keys.add(key)
            return
        raw._len += len(fresh)
        del raw._index[:]

    def _put(self, key: bytes, seq: int, value: bytes | None) -> None:
        assert seq >= self.max_seq, (seq, self.max_seq)
        if type(value) is Expiring:
            self.expiring += 1
        versions = self._data.get(key)
        if versions is None:
            self._data[key] = [(seq, value)]
            self._keys.add(key)
        else:
            assert versions[-1][0] < seq, (key, seq)
            versions.append((seq, value))
        self.bytes += len(key) + ENTRY_OVERHEAD + (0 if value is None else len(value))
        self.entries_count += 1
        if not self.min_seq:
            self.min_seq = seq
        self.max_seq = seq

    def get(self, key: bytes, snapshot: int) -> Version | None:
        """The newest version of ``key`` at or before ``snapshot``, or None when there is none."""
        versions = self._data.get(key)
        if versions is not None:
            for version in reversed(versions):
                if version[0] <= snapshot:
                    return version
        return None

    def _chunk(self, last: bytes | None, reverse: bool, inclusive: bool,
               size: int) -> list[tuple[bytes, list[Version]]]:
        """The next ``size`` keys (with their version lists) after ``last`` in the direction of travel."""
        data = self._data
        with self.lock:
            chunk = self._next_keys(last, reverse, inclusive, size)
            if reverse:
                chunk.reverse()
            return [(key, data[key]) for key in chunk]

    def _next_keys(self, last: bytes | None, reverse: bool, inclusive: bool, size: int) -> list[bytes]:
        """Up to ``size`` keys, ascending, next after ``last`` in the direction of travel (under ``lock``).

        Reads the sorted list's sublists and their maxima directly (a bisect
        and a slice in C each) rather than through its positional index.
        """
        lists: list[list[bytes]] = self._keys._lists  # type: ignore[attr-defined]
        maxes: list[bytes] = self._keys._maxes  # type: ignore[attr-defined]
        if not maxes:
            return []
        if not reverse:
            if last is None:
                pos, i = 0, 0
            else:
                pos = bisect_left(maxes, last) if inclusive else bisect_right(maxes, last)
                if pos == len(maxes):
                    return []
                i = bisect_left(lists[pos], last) if inclusive else bisect_right(lists[pos], last)
            chunk = lists[pos][i : i + size]
            while len(chunk) < size and pos + 1 < len(lists):
                pos += 1
                chunk += lists[pos][: size - len(chunk)]
            return chunk
        if last is None:
            pos = len(maxes) - 1
            j = len(lists[pos])
        else:
            pos = bisect_left(maxes, last)
            if pos == len(maxes):
                pos -= 1
                j = len(lists[pos])
            else:
                j = bisect_right(lists[pos], last) if inclusive else bisect_left(lists[pos], last)
        chunk = lists[pos][max(0, j - size) : j]
        while len(chunk) < size and pos > 0:
            pos -= 1
            chunk[:0] = lists[pos][-(size - len(chunk)) :]
        return chunk

    def items(self, start: bytes | None, snapshot: int, reverse: bool = False,
              inclusive: bool = True) -> Iterator[tuple[bytes, bytes | None]]:
        """(key, value) of the newest version at or before ``snapshot`` of each key, deletes included.

        Forward from the first key ``>= start`` (``> start`` when not
        ``inclusive``), or backward from the last key ``<= start`` (``<``);
        ``start`` None means from the first (last) key.  Keys inserted while
        iterating are found by key, never by position, so none is skipped or
        seen twice.
        """
        for chunk in self._chunks(start, reverse, inclusive, _FIRST_CHUNK):
            for key, versions in chunk:
                for seq, value in reversed(versions):
                    if seq <= snapshot:
                        yield key, value
                        break

    def chunks(self, start: bytes | None, snapshot: int, reverse: bool = False, inclusive: bool = True,
               first: int = _FIRST_CHUNK) -> Iterator[list[tuple[bytes, bytes | None]]]:
        """What ``items`` yields, in ascending chunks for ``merge.merge_chunks``: ``first`` keys, then four
        times as many each time, up to ``_CHUNK`` (fewer where a key has no version at ``snapshot``)."""
        for chunk in self._chunks(start, reverse, inclusive, first):
            rows: list[tuple[bytes, bytes | None]] = []
            append = rows.append
            for key, versions in chunk:
                seq, value = versions[-1]
                if seq <= snapshot:
                    append((key, value))
                    continue
                for seq, value in reversed(versions):
                    if seq <= snapshot:
                        append((key, value))
                        break
            if rows:
                if reverse:
                    rows.reverse()
                yield rows

    def entries(self) -> Iterator[tuple[bytes, int, bytes | None]]:
        """Every stored version as (key, sequence, value), keys ascending, sequences descending."""
        for chunk in self._chunks(None, False, True, _CHUNK):
            for key, versions in chunk:
                for seq, value in reversed(versions):
                    yield key, seq, value

    def entry_chunks(self, size: int = _CHUNK) -> Iterator[tuple[list[bytes], list[int], list[bytes | None]]]:
        """Every stored version in table order as (keys, sequences, values) lists, ``size`` keys at a time
        with all their versions; for a flush.  Each chunk is found by key after the last one, as for
        ``items``, and built with C builtins (no Python code per version)."""
        data = self._data
        only = operator.itemgetter(0)
        last: bytes | None = None
        while True:
            with self.lock:
                i = 0 if last is None else self._keys.bisect_right(last)
                keys = list(self._keys.islice(i, i + size))
            if not keys:
                return
            last = keys[-1]
            versions = list(map(data.__getitem__, keys))
            pairs: Iterable[Version]
            if max(map(len, versions)) == 1:
                pairs = map(only, versions)
            else:  # newest version first; each key repeated once per version
                pairs = itertools.chain.from_iterable(map(reversed, versions))
                keys = list(itertools.chain.from_iterable(map(itertools.repeat, keys, map(len, versions))))
            seqs, values = zip(*pairs)
            yield keys, list(seqs), list(values)

    def _chunks(self, start: bytes | None, reverse: bool, inclusive: bool,
                first: int) -> Iterator[list[tuple[bytes, list[Version]]]]:
        """Successive chunks of keys with their version lists from ``start`` on: ``first`` keys, then four
        times as many each time, up to ``_CHUNK`` (a seek that reads a few rows builds few); each chunk is
        found by key after the last one."""
        last = start
        size = first
        while True:
            chunk = self._chunk(last, reverse, inclusive, size)
            if not chunk:
                return
            yield chunk
            last = chunk[-1][0]
            inclusive = False
            size = min(_CHUNK, size * 4)

    def _check(self) -> None:
        """Assert the invariants (O(n)); for tests."""
        keys = list(self._keys)
        assert keys == sorted(self._data) and len(set(keys)) == len(keys)
        total = 0
        count = 0
        top = 0
        bottom = 0
        expiring = 0
        for key in keys:
            versions = self._data[key]
            assert versions, key
            seqs = [s for s, _ in versions]
            assert all(a < b for a, b in itertools.pairwise(seqs)), (key, seqs)
            top = max(top, seqs[-1])
            bottom = seqs[0] if not bottom else min(bottom, seqs[0])
            count += len(versions)
            total += sum(len(key) + ENTRY_OVERHEAD + (0 if v is None else len(v)) for _, v in versions)
            expiring += sum(type(v) is Expiring for _, v in versions)
        for start, end, seq in self.ranges:
            total += len(start) + len(end) + ENTRY_OVERHEAD
            count += 1
            top = max(top, seq)
            bottom = seq if not bottom else min(bottom, seq)
        assert total == self.bytes, (total, self.bytes)
        assert count == self.entries_count, (count, self.entries_count)
        assert top == self.max_seq, (top, self.max_seq)
        assert bottom == self.min_seq, (bottom, self.min_seq)
        assert expiring == self.expiring, (expiring, self.expiring)
