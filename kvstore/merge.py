"""Merging levels: the ``SortedKV`` protocol, the merged read iterator and the compaction filter.

Levels are given newest first.  Three rules live here and nowhere else
(DESIGN.md, "Levels and merging"):

  - **Tables merge by a growth factor** (``pick_run``): each table must be
    more than ``growth_factor - 1`` times the size of all newer tables
    together; the first that is not merges with the newer tables it needs,
    so table sizes grow geometrically and a read consults O(log(size))
    tables.
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
import itertools
import operator
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol

from kvstore.chunks import chunks_of
from kvstore.expiry import Expired
from kvstore.rangedel import Fragments

__all__ = ["EntryChunk", "SortedKV", "compact_chunks", "entry_chunks_of", "merge_chunks", "merge_entry_chunks",
           "merge_items", "pick_run"]

Item = tuple[bytes, "bytes | None"]
Entry = tuple[bytes, int, "bytes | None"]
#: Entries in table order as parallel lists: (keys, sequences, values), a value None is a delete.
EntryChunk = tuple[list[bytes], list[int], list["bytes | None"]]


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

    def entry_chunks(self) -> Iterator[EntryChunk]:
        """Every version, in the order of ``entries``, as chunks; a key's versions never span two."""
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
    When one level holds them all they pass as they are; two parts of
    which one has at most an eighth of the other's rows are merged by
    bisecting the few into the many (``_merge_few``); otherwise the
    parts, oldest level first, are sorted by key (a stable sort that merges
    the presorted parts in C), a dict keeps each key's last, newest, value,
    and deletes are dropped.  A level is asked for its next chunk only when
    a round needs it, so a live level (a transaction's writes) is read late.
    Cost: O(rows log levels) in C per round, plus a few Python steps per
    round and per level.
    """
    if len(levels) == 1:
        yield from _passed(levels[0], reverse)
        return
    # heads[n] is the unread part of level its[n]'s current chunk, oldest level first
    its = list(reversed(levels))
    heads: list[list[Item]] = [[] for _ in its]
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
        parts = _round(heads, reverse)
        if len(parts) == 1:
            rows = _live(parts[0])
        elif len(parts) == 2 and min(len(parts[0]), len(parts[1])) * _FEW <= max(len(parts[0]), len(parts[1])):
            rows = _live(_merge_few(parts[0], parts[1]))
        else:
            merged = list(itertools.chain.from_iterable(parts))
            merged.sort(key=_KEY)  # stable: a key's versions stay oldest level first
            # each key's last, newest, row, in key order (a dict keeps a key where it first came)
            rows = _live(list(dict(zip(map(_KEY, merged), merged)).values()))
        if rows:
            if reverse:
                rows.reverse()
            yield rows
    if its:  # one level left: the rest of it, as it comes
        yield from _passed(itertools.chain((heads[0],), its[0]), reverse)


_FEW = 8  # a round's smaller part at most 1/_FEW of the larger: bisect its rows in (_merge_few)


def _merge_few(older: list[Item], newer: list[Item]) -> list[Item]:
    """Two ascending parts of a round merged, the newer part's row kept for a key in both: each row of the
    smaller part is bisected into the larger, and the rows between are copied as slices (in C)."""
    if len(newer) <= len(older):
        big, small, small_wins = older, newer, True
    else:
        big, small, small_wins = newer, older, False
    out: list[Item] = []
    lo, n = 0, len(big)
    for row in small:
        pos = bisect.bisect_left(big, row[0], lo, key=_KEY)
        out += big[lo:pos]
        if pos < n and big[pos][0] == row[0]:
            out.append(row if small_wins else big[pos])
            lo = pos + 1
        else:
            out.append(row)
            lo = pos
    out += big[lo:]
    return out


def _round(heads: list[list[Item]], reverse: bool) -> list[list[Item]]:
    """Take from each level's unread rows (``heads``, cut in place) those up to the nearest chunk end of
    any level, in the direction of travel: the parts of one round, oldest level first."""
    parts: list[list[Item]] = []
    if not reverse:
        bound = min([head[-1][0] for head in heads])
        for n, head in enumerate(heads):
            if head[-1][0] <= bound:
                parts.append(head)
                heads[n] = []
            else:
                cut = bisect.bisect_right(head, bound, key=_KEY)
                if cut:
                    parts.append(head[:cut])
                    heads[n] = head[cut:]
        return parts
    bound = max([head[0][0] for head in heads])
    for n, head in enumerate(heads):
        if head[0][0] >= bound:
            parts.append(head)
            heads[n] = []
        else:
            cut = bisect.bisect_left(head, bound, key=_KEY)
            if cut < len(head):
                parts.append(head[cut:])
                heads[n] = head[:cut]
    return parts


def _passed(chunks: Iterable[list[Item]], reverse: bool) -> Iterator[list[tuple[bytes, bytes]]]:
    """The chunks of the one level left, without their deletes, in the direction of travel."""
    for chunk in chunks:
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


def entry_chunks_of(entries: Iterable[Entry], size: int = 512) -> Iterator[EntryChunk]:
    """Entries in table order as chunks of about ``size`` entries, the versions of a key never split
    between two (as ``merge_entry_chunks`` needs its sources' chunks)."""
    it = iter(entries)
    keys: list[bytes] = []
    seqs: list[int] = []
    values: list[bytes | None] = []
    while True:
        batch = list(itertools.islice(it, size))
        if batch:
            batch_keys, batch_seqs, batch_values = zip(*batch)
            keys += batch_keys
            seqs += batch_seqs
            values += batch_values
            cut = bisect.bisect_left(keys, keys[-1])  # the last key's versions may go on in the next batch
        else:
            cut = len(keys)
        if cut:
            yield keys[:cut], seqs[:cut], values[:cut]
            keys, seqs, values = keys[cut:], seqs[cut:], values[cut:]
        if not batch:
            return


def merge_entry_chunks(sources: Sequence[Iterator[EntryChunk]]) -> Iterator[EntryChunk]:
    """Merge per-level chunk iterators (newest first) into chunks in table order.

    A source's chunks must each hold every version of the keys in it.  Each
    step takes from every source its entries up to the smallest last key
    among the sources' current chunks (so every version of those keys there
    is) and sorts them by key with one stable sort, which merges the sorted
    runs in C and keeps equal keys newest level first.  Cost per entry: a
    share of the sort, and tuples packed and unpacked, all in C builtins.
    """
    if len(sources) == 1:
        return iter(sources[0])
    return _merge_entry_chunks(sources)


def _next_entry_chunk(it: Iterator[EntryChunk]) -> EntryChunk | None:
    for chunk in it:
        if chunk[0]:
            return chunk
    return None


def _merge_entry_chunks(sources: Sequence[Iterator[EntryChunk]]) -> Iterator[EntryChunk]:
    heads: list[list[Any]] = []  # [keys, seqs, values, position, iterator] per source with entries left
    for it in sources:
        chunk = _next_entry_chunk(it)
        if chunk is not None:
            heads.append([*chunk, 0, it])
    by_key = operator.itemgetter(0)
    while len(heads) > 1:
        bound = min([head[0][-1] for head in heads])
        parts = []
        for head in heads:  # newest first: a stable sort keeps equal keys in this order
            pos = head[3]
            end = bisect.bisect_right(head[0], bound, pos)
            if end > pos:
                parts.append((head[0][pos:end], head[1][pos:end], head[2][pos:end]))
                head[3] = end
        if len(parts) == 1:
            yield parts[0]
        else:
            batch = list(itertools.chain.from_iterable(zip(*part) for part in parts))
            batch.sort(key=by_key)
            keys, seqs, values = zip(*batch)
            yield list(keys), list(seqs), list(values)
        live = []
        for head in heads:
            if head[3] == len(head[0]):
                chunk = _next_entry_chunk(head[4])
                if chunk is None:
                    continue
                head[:4] = [*chunk, 0]
            live.append(head)
        heads = live
    if heads:  # one level left: the rest of it, as it comes
        keys, seqs, values, pos, it = heads[0]
        yield keys[pos:], seqs[pos:], values[pos:]
        yield from it


def compact_chunks(sources: Sequence[Iterator[EntryChunk]], snapshots: Sequence[int],
                   bottom: bool, fragments: Fragments | None = None,
                   expired: Expired | None = None) -> Iterator[EntryChunk]:
    """The entries a merge of ``sources`` (chunks, newest level first) writes, as non-empty chunks.

    ``snapshots`` are the sequences of live snapshots, ascending.  Drops every
    version a range tombstone of ``fragments`` (those of every source) hides
    from every snapshot (``Fragments.drops``); then keeps each key's newest
    version and each older version that some snapshot sees (the newest
    version at or before it); with ``bottom`` (the output is the oldest
    table) drops deletes that are the oldest kept version of a key.  A chunk
    is filtered by C builtins; only keys with several versions while
    snapshots are live, and keys under range tombstones, take Python code
    per version (``_retain``, ``Fragments.drops``).  What the merge writes of
    the tombstones themselves is ``fragments.retained(snapshots, bottom)``.
    With ``expired`` (some source holds values that expire), each value
    expired by its clock is first a delete: it reads as one for every
    reader from now on, whatever its snapshot.
    """
    lt = operator.lt
    for keys, seqs, values in merge_entry_chunks(sources):
        if expired is not None:
            values = expired.values(values)
        if keys and fragments:
            alive = list(map(operator.not_, fragments.drops(keys, seqs, snapshots)))
            if not all(alive):
                keys = list(itertools.compress(keys, alive))
                seqs = list(itertools.compress(seqs, alive))
                values = list(itertools.compress(values, alive))
        if not keys:
            continue
        if all(map(lt, keys, itertools.islice(keys, 1, None))):  # one version per key: the common case
            if not bottom or None not in values:
                yield keys, seqs, values
                continue
            keep = list(map(operator.is_not, values, itertools.repeat(None)))
        else:
            keep = _keep(keys, seqs, values, snapshots, bottom)
        kept = list(itertools.compress(keys, keep))
        if kept:
            yield kept, list(itertools.compress(seqs, keep)), list(itertools.compress(values, keep))


def _keep(keys: list[bytes], seqs: list[int], values: list[bytes | None], snapshots: Sequence[int],
          bottom: bool) -> list[bool]:
    """Which entries of a chunk (table order, each key's versions all in it) a merge keeps."""
    first = list(map(operator.ne, keys, itertools.chain((None,), keys)))  # each key's newest version
    if bottom:
        keep = list(map(operator.and_, first, map(operator.is_not, values, itertools.repeat(None))))
    else:
        keep = first.copy()
    if not snapshots:
        return keep
    n = len(keys)
    end = 0
    for i in itertools.compress(range(n), map(operator.not_, first)):  # an older version of the key before it
        if i < end:
            continue
        start = i - 1
        end = i + 1
        while end < n and not first[end]:
            end += 1
        keep[start:end] = _retain(seqs[start:end], values[start:end], snapshots, bottom)
    return keep


def _retain(seqs: list[int], values: list[bytes | None], snapshots: Sequence[int], bottom: bool) -> list[bool]:
    """Which versions of one key (newest first, as sequences and values) some reader can see."""
    keep = [True]
    newer = seqs[0]
    nsnap = len(snapshots)
    for seq in seqs[1:]:
        i = bisect.bisect_left(snapshots, seq)
        keep.append(i < nsnap and snapshots[i] < newer)  # snapshot snapshots[i] sees this version
        newer = seq
    if bottom:  # deletes at the oldest end of what is kept read as absent
        for j in range(len(keep) - 1, -1, -1):
            if keep[j]:
                if values[j] is not None:
                    break
                keep[j] = False
    return keep


def pick_run(sizes: Sequence[int], growth_factor: float) -> tuple[int, int] | None:
    """``(i, j)``: tables ``i`` to ``j - 1`` (sizes newest first) are the run the growth-factor rule
    merges, or None when the rule holds: every table is more than ``growth_factor - 1`` times the sizes of
    all newer tables together.

    The first (newest) table ``t`` that breaks the rule is merged with the fewest newest-adjacent tables
    whose sizes sum to at least ``size[t] / (growth_factor - 1)``; older tables join the run while each is
    at most ``growth_factor - 1`` times the run so far.

    >>> pick_run([10, 10, 100], 4), pick_run([10, 100, 1000], 4), pick_run([36, 37, 38, 200], 2)
    ((0, 2), None, (0, 3))
    """
    factor = growth_factor - 1
    newer = 0
    for t in range(1, len(sizes)):
        newer += sizes[t - 1]
        if sizes[t] <= factor * newer:
            i, acc = t - 1, sizes[t - 1]
            while sizes[t] > factor * acc:
                i -= 1
                acc += sizes[i]
            acc += sizes[t]
            j = t + 1
            while j < len(sizes) and sizes[j] <= factor * acc:
                acc += sizes[j]
                j += 1
            return i, j
    return None
