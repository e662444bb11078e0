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
import itertools
import operator
from collections.abc import Iterator, Sequence
from typing import Protocol

from kvstore.chunks import chunks_of

__all__ = ["SortedKV", "compact_entries", "merge_chunks", "merge_entries", "merge_items", "pick_run"]

Item = tuple[bytes, "bytes | None"]
Entry = tuple[bytes, int, "bytes | None"]

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
    The rows go through ``merge_chunks``, a few at a time per level.
    """
    levels = [chunks_of(it, reverse, 8, 64) for it in iters]
    return itertools.chain.from_iterable(merge_chunks(levels, reverse))


def merge_chunks(levels: Sequence[Iterator[list[Item]]], reverse: bool = False) -> Iterator[list[tuple[bytes, bytes]]]:
    """Merge levels (newest first) given as chunks into chunks of the live (key, value) pairs a reader sees.

    Each level yields non-empty chunks of (key, value or None for a delete),
    one row per key, every chunk in ascending key order; going forward
    each chunk lies above the one before, going backward below it.  The
    output chunks are in the direction of travel (descending backward).

    A round takes, from every level, the rows up to the nearest chunk end
    of any level (``bound``): every version of those keys is then at hand.
    When one level holds them all they pass as they are; otherwise the
    parts, oldest level first, are sorted by key (a stable sort that merges
    the presorted parts in C), a dict keeps each key's last, newest, value,
    and deletes are dropped.  A level is asked for its next chunk only when
    a round needs it, so a live level (a transaction's writes) is read late.
    Cost: O(rows log levels) in C per round, plus a few Python steps per
    round and per level.
    """
    if len(levels) == 1:
        for chunk in levels[0]:
            rows = _live(chunk)
            if rows:
                if reverse:
                    rows.reverse()
                yield rows
        return
    # heads[n] is the unread part of level its[n]'s current chunk, oldest level first
    its = list(reversed(levels))
    heads: list[list[Item]] = [[] for _ in its]
    key = _KEY
    while True:
        n = 0
        while n < len(its):  # refill the levels a round used up; drop those that ran out
            if not heads[n]:
                for chunk in its[n]:
                    heads[n] = chunk
                    break
                else:
                    del its[n], heads[n]
                    continue
            n += 1
        if len(its) <= 1:
            break
        parts: list[list[Item]] = []
        if not reverse:
            bound = min([head[-1][0] for head in heads])
            for n, head in enumerate(heads):
                if head[-1][0] <= bound:
                    parts.append(head)
                    heads[n] = []
                else:
                    cut = bisect.bisect_right(head, bound, key=key)
                    if cut:
                        parts.append(head[:cut])
                        heads[n] = head[cut:]
        else:
            bound = max([head[0][0] for head in heads])
            for n, head in enumerate(heads):
                if head[0][0] >= bound:
                    parts.append(head)
                    heads[n] = []
                else:
                    cut = bisect.bisect_left(head, bound, key=key)
                    if cut < len(head):
                        parts.append(head[cut:])
                        heads[n] = head[:cut]
        if len(parts) == 1:
            rows = _live(parts[0])
        else:
            merged = list(itertools.chain.from_iterable(parts))
            merged.sort(key=key)  # stable: a key's versions stay oldest level first
            # each key's last, newest, row, in key order (a dict keeps a key where it first came)
            rows = _live(list(dict(zip(map(key, merged), merged)).values()))
        if rows:
            if reverse:
                rows.reverse()
            yield rows
    if its:  # one level left: the rest of it, as it comes
        for chunk in itertools.chain((heads[0],), its[0]):
            rows = _live(chunk)
            if rows:
                if reverse:
                    rows.reverse()
                yield rows


_KEY = operator.itemgetter(0)
_VALUE = operator.itemgetter(1)


def _live(rows: list[Item]) -> list[tuple[bytes, bytes]]:
    """``rows`` without its deletes (the same list when it has none)."""
    if None in map(_VALUE, rows):
        return [row for row in rows if row[1] is not None]  # type: ignore[misc]
    return rows  # type: ignore[return-value]


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
