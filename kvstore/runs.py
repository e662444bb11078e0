"""Sorted runs: adjacent tables whose key ranges are pairwise disjoint, read and merged as one level.

The table list is newest first, and a read merges one level per table.  But
tables whose key ranges ``[smallest, largest]`` do not overlap hold no key in
common, so their order in the list does not matter: read in key order they
are one sorted run (a level of LevelDB's kind).  ``group`` cuts the list,
newest first, into maximal such runs; the growth-factor rule
(``merge.pick_run``) weighs runs, not tables, and a read consults a run as
one level (``Run``).  A load in key order (ascending or descending keys, a
time series) writes tables that overlap nothing before them: each joins the
run of the newest tables and none is merged again (DESIGN.md, "Sorted
runs").

Invariants:
  - runs are contiguous in the table list, so every run is newer than every run after it;
  - within a run no two tables' key ranges overlap, so a key lives in at most one of them;
  - a ``Run`` is immutable and shared by every thread that reads its view.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterator, Sequence

from kvstore.bloom import Probe
from kvstore.chunks import Chunk
from kvstore.rangedel import Fragments
from kvstore.sorted_file import TableReader

__all__ = ["Run", "group", "runs_of", "unhidden"]

EntryChunk = tuple[list[bytes], list[int], list["bytes | None"]]  # as merge.EntryChunk


def group(ranges: Sequence[tuple[bytes, bytes]]) -> list[int]:
    """How many tables each run holds, newest first, for tables with key ranges ``ranges`` (newest first):
    a table joins the run before it when its range overlaps none of that run's.

    >>> group([(b"m", b"p"), (b"a", b"c"), (b"d", b"f"), (b"b", b"e")])
    [3, 1]
    """
    counts: list[int] = []
    lows: list[bytes] = []  # the current run's ranges, ordered by smallest key
    highs: list[bytes] = []
    for low, high in ranges:
        i = bisect.bisect_right(lows, low)
        if counts and (i == 0 or highs[i - 1] < low) and (i == len(lows) or high < lows[i]):
            lows.insert(i, low)
            highs.insert(i, high)
            counts[-1] += 1
        else:
            lows, highs = [low], [high]
            counts.append(1)
    return counts


class Run:
    """Two or more tables of disjoint key ranges read as one level, in key order.

    ``get`` finds the one table whose range holds the key with a bisect; ``chunks`` and ``entry_chunks``
    chain the tables' own, positioning only the table that holds the start.  Duck-types the
    ``TableReader`` methods a read and a merge use.
    """

    __slots__ = ("readers", "smallest", "largest", "bloom_k", "fragments", "ranged", "expiring", "_lows", "_highs")

    def __init__(self, readers: Sequence[TableReader]) -> None:
        self.readers = tuple(sorted(readers, key=_low))
        self._lows = [r.lo for r in self.readers]
        self._highs = [r.hi for r in self.readers]
        self.smallest = self._lows[0]
        self.largest = self._highs[-1]
        self.bloom_k = self.readers[0].bloom_k
        # the tables' range tombstones lie within their disjoint bounds: together, one level's
        self.fragments = Fragments([], [], []).merge(*(r.fragments for r in self.readers if r.ranged))
        self.ranged = bool(self.fragments)
        self.expiring = sum(r.expiring for r in self.readers)

    def get(self, key: bytes, snapshot: int, probe: Probe | None = None
            ) -> tuple[int, bytes | None] | None:
        """As ``TableReader.get``, from the one table whose key range holds ``key``."""
        i = bisect.bisect_right(self._lows, key) - 1
        if i < 0 or key > self._highs[i]:
            return None
        return self.readers[i].get(key, snapshot, probe)

    def chunks(self, start: bytes | None, snapshot: int, reverse: bool = False,
               inclusive: bool = True) -> Iterator[Chunk]:
        """As ``TableReader.chunks``: the tables from the one that holds ``start`` on, in the direction of
        travel, each positioned only when the one before it ran out."""
        if not reverse:
            i = 0 if start is None else bisect.bisect_left(self._highs, start)
            return _chained(self.readers[i:], start, snapshot, False, inclusive)
        i = len(self.readers) if start is None else bisect.bisect_right(self._lows, start)
        return _chained(self.readers[i - 1 :: -1] if i else (), start, snapshot, True, inclusive)

    def entry_chunks(self) -> Iterator[EntryChunk]:
        """Every stored version in table order: the tables' ``entry_chunks`` one after another."""
        return itertools.chain.from_iterable(r.entry_chunks() for r in self.readers)


def _chained(readers: Sequence[TableReader], start: bytes | None, snapshot: int, reverse: bool,
             inclusive: bool) -> Iterator[Chunk]:
    for n, reader in enumerate(readers):
        if n == 0:
            yield from reader.chunks(start, snapshot, reverse, inclusive)
        else:
            yield from reader.chunks(None, snapshot, reverse)


def _low(reader: TableReader) -> bytes:
    return reader.lo


def unhidden(readers: Sequence[TableReader], fragments: Fragments | None,
             snapshots: Sequence[int]) -> tuple[TableReader, ...]:
    """The tables of a merge whose entries it must read: those of ``readers`` that the merge's range
    tombstones ``fragments`` do not hide whole (``Fragments.hides_all``); the others are dropped unread."""
    if not fragments:
        return tuple(readers)
    return tuple(r for r in readers
                 if not r.num_entries or not fragments.hides_all(r.smallest, r.largest, r.min_seq, r.max_seq,
                                                                 snapshots))


def runs_of(readers: tuple[TableReader, ...]) -> tuple[TableReader | Run, ...]:
    """The levels a read consults for tables ``readers`` (newest first): a table alone in its run as
    itself, a run of several as a ``Run``."""
    levels: list[TableReader | Run] = []
    pos = 0
    for count in group([(r.lo, r.hi) for r in readers]):
        levels.append(readers[pos] if count == 1 else Run(readers[pos : pos + count]))
        pos += count
    return tuple(levels)
