"""Merging levels: the ``SortedKV`` protocol, the merged read iterator and the compaction filter.

Levels are given newest first.  Three rules live here and nowhere else
(DESIGN.md, "Levels and merging"):

  - **Tables merge by a growth factor** (``pick_run``): the first run of
    adjacent tables, newest first, in which each next table is at most
    ``growth_factor - 1`` times the size of all before it in the run, merges
    into one, so table sizes grow geometrically and a read consults
    O(log(size)) tables.
  - **Newest level wins.**  For a key present in several levels, the newest
    level's version is the one a reader sees; a newer level always holds
    higher sequence numbers for a key than an older one.
  - **Tombstones are dropped only when writing the oldest level.**  A merge
    keeps each key's newest version and every older version some live
    snapshot can still see; when its output becomes the oldest table, a
    delete that is the oldest version kept is dropped, since "deleted" and
    "never written" then read the same.
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

__all__ = ["SortedKV", "compact_entries", "merge_entries", "merge_items", "pick_run"]

Item = tuple[bytes, "bytes | None"]
Entry = tuple[bytes, int, "bytes | None"]

# Max-heap helpers of the C heapq module (public from Python 3.14 on).
_heapq: Any = heapq
_heapify_max: Any = getattr(_heapq, "heapify_max", None) or _heapq._heapify_max
_heapreplace_max: Any = getattr(_heapq, "heapreplace_max", None) or _heapq._heapreplace_max
_heappop_max: Any = getattr(_heapq, "heappop_max", None) or _heapq._heappop_max


class SortedKV(Protocol):
    """A sorted level: the memtable or a table (a transaction's pending writes serve ``items`` only)."""

    def get(self, key: bytes, snapshot: int) -> tuple[int, bytes | None] | None:
        """The newest version of ``key`` at or before ``snapshot`` as (sequence, value), or None."""
        ...

    def items(self, start: bytes | None, snapshot: int, reverse: bool = False,
              inclusive: bool = True) -> Iterator[Item]:
        """(key, value or None for a delete), newest visible version of each key, from ``start`` on."""
        ...

    def entries(self) -> Iterator[Entry]:
        """Every version as (key, sequence, value), keys ascending, sequences descending."""
        ...


def merge_items(iters: Sequence[Iterator[Item]], reverse: bool = False) -> Iterator[tuple[bytes, bytes]]:
    """Merge per-level item iterators (newest first) into the live (key, value) pairs a reader sees.

    Each key is taken from the newest level that has it; deletes are dropped.
    Cost: O(log levels) per key of every level walked.
    """
    if len(iters) == 1:
        for item in iters[0]:
            if item[1] is not None:
                yield item  # type: ignore[misc]
        return
    # heap entries: (key, level, item, iterator); the level (negated going backward) orders equal keys
    # newest first and is never equal between two entries, so items and iterators are never compared
    heap: list[tuple[bytes, int, Item, Iterator[Item]]] = []
    for prio, it in enumerate(iters):
        for item in it:
            heap.append((item[0], -prio if reverse else prio, item, it))
            break
    if not reverse:
        heapq.heapify(heap)
        replace, pop = heapq.heapreplace, heapq.heappop
    else:
        _heapify_max(heap)
        replace, pop = _heapreplace_max, _heappop_max
    while len(heap) > 1:
        key, prio, winner, it = heap[0]
        while True:
            nxt = next(it, None)
            if nxt is None:
                pop(heap)
            else:
                replace(heap, (nxt[0], prio, nxt, it))
            if not heap or heap[0][0] != key:
                break
            _, prio, _, it = heap[0]  # an older level's version of the same key: skipped
        if winner[1] is not None:
            yield winner  # type: ignore[misc]
    if heap:  # one level left: the rest of it, as it comes
        _, _, item, it = heap[0]
        if item[1] is not None:
            yield item  # type: ignore[misc]
        for item in it:
            if item[1] is not None:
                yield item  # type: ignore[misc]


def merge_entries(sources: Sequence[Iterator[Entry]]) -> Iterator[Entry]:
    """Merge per-level entry iterators (newest first) into one stream in table order."""
    if len(sources) == 1:
        return iter(sources[0])
    return _merge_entries(sources)


def _merge_entries(sources: Sequence[Iterator[Entry]]) -> Iterator[Entry]:
    # heap entries: (key, level, entry, iterator): equal keys come newest level first, and a level's own
    # versions of a key are already newest first
    heap: list[tuple[bytes, int, Entry, Iterator[Entry]]] = []
    for prio, it in enumerate(sources):
        for entry in it:
            heap.append((entry[0], prio, entry, it))
            break
    heapq.heapify(heap)
    replace, pop = heapq.heapreplace, heapq.heappop
    while len(heap) > 1:
        _, prio, entry, it = heap[0]
        yield entry
        nxt = next(it, None)
        if nxt is None:
            pop(heap)
        else:
            replace(heap, (nxt[0], prio, nxt, it))
    if heap:
        _, _, entry, it = heap[0]
        yield entry
        yield from it


def compact_entries(sources: Sequence[Iterator[Entry]], snapshots: Sequence[int], bottom: bool) -> Iterator[Entry]:
    """The entries a merge of ``sources`` (newest first) writes.

    ``snapshots`` are the sequences of live snapshots, ascending.  Keeps each
    key's newest version and each older version that some snapshot sees (the
    newest version at or before it); with ``bottom`` (the output is the
    oldest table) drops deletes that are the oldest kept version of a key.
    """
    merged = merge_entries(sources)
    if not snapshots:
        last = None
        for entry in merged:
            key = entry[0]
            if key == last:
                continue
            last = key
            if entry[2] is None and bottom:
                continue
            yield entry
        return
    pending: Entry | None = None  # the newest version of the current key
    group: list[Entry] | None = None  # every version of the current key, when it has more than one
    for entry in merged:
        if pending is not None and entry[0] == pending[0]:
            if group is None:
                group = [pending]
            group.append(entry)
            continue
        if group is not None:
            yield from _retain(group, snapshots, bottom)
            group = None
        elif pending is not None and (pending[2] is not None or not bottom):
            yield pending  # the usual case, one version: kept unless a bottom delete
        pending = entry
    if group is not None:
        yield from _retain(group, snapshots, bottom)
    elif pending is not None and (pending[2] is not None or not bottom):
        yield pending


def _retain(versions: list[Entry], snapshots: Sequence[int], bottom: bool) -> list[Entry]:
    """The versions of one key (newest first) that some reader can see."""
    kept = [versions[0]]
    newer = versions[0][1]
    nsnap = len(snapshots)
    for entry in versions[1:]:
        seq = entry[1]
        i = bisect.bisect_left(snapshots, seq)
        if i < nsnap and snapshots[i] < newer:
            kept.append(entry)  # snapshot snapshots[i] sees this version
        newer = seq
    if bottom:
        while kept and kept[-1][2] is None:
            kept.pop()
    return kept


def pick_run(sizes: Sequence[int], growth_factor: float) -> tuple[int, int] | None:
    """``(i, j)``: tables ``i`` to ``j - 1`` (sizes newest first) are the first run the growth-factor rule
    merges, or None when the rule holds.

    >>> pick_run([10, 10, 100], 4), pick_run([10, 100, 1000], 4)
    ((0, 2), None)
    """
    factor = growth_factor - 1
    for i in range(len(sizes) - 1):
        acc = sizes[i]
        j = i + 1
        while j < len(sizes) and sizes[j] <= factor * acc:
            acc += sizes[j]
            j += 1
        if j - i >= 2:
            return i, j
    return None
