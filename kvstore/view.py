"""What a reader holds: the live tables with their reference counts, views, frozen memtables, snapshots.

A *view* is the memtables and tables one reader sees, newest first.  The KV
holds one reference to its current view; every reader (a get, a scan, a
cursor, a transaction, a backup) holds one more while it reads.  A view holds
one reference on each of its tables, so a table a merge dropped stays open,
and its file on disk, until the last view that holds it is let go
(DESIGN.md, "Threads and locks").  All counts here change under the KV's
``_lock``.

Invariants:
  - ``View.refs >= 1`` while the view is current or read; at 0 it has let go of its tables;
  - ``Table.refs`` is the number of views holding the table; ``removed_in`` is set once, by the
    merge that dropped it;
  - ``Snapshots.oldest == min(Snapshots.counts)`` (None when empty).
"""

from __future__ import annotations

import time
from typing import Any

from kvstore.runs import Run, runs_of
from kvstore.sorted_array import Memtable
from kvstore.sorted_file import TableReader

__all__ = ["Frozen", "Snapshots", "Table", "View"]


class Table:
    """A live table's reader and how many views hold it."""

    __slots__ = ("reader", "refs", "removed_in")

    def __init__(self, reader: TableReader) -> None:
        self.reader = reader
        self.refs = 0
        self.removed_in: int | None = None  # meta version that dropped it


class Frozen:
    """An immutable memtable waiting for its flush, and the log that follows it (whose number becomes the
    meta's ``log_number`` once the flush is in the meta)."""

    __slots__ = ("mem", "next_log")

    def __init__(self, mem: Memtable, next_log: int) -> None:
        self.mem = mem
        self.next_log = next_log


class View:
    """What one reader sees besides its snapshot: memtables and tables, newest first."""

    __slots__ = ("mems", "tables", "readers", "runs", "refs")

    def __init__(self, mems: tuple[Memtable, ...], tables: tuple[Table, ...], before: View | None = None) -> None:
        self.mems = mems
        self.tables = tables
        self.readers = tuple(t.reader for t in tables)
        self.runs: tuple[TableReader | Run, ...]
        if before is not None and before.readers == self.readers:  # only the memtables changed
            self.runs = before.runs
        else:
            self.runs = runs_of(self.readers)
        """The levels a read consults below the memtables: tables of disjoint key ranges as one ``Run``."""
        self.refs = 1  # the KV's own, while this is the current view
        for t in tables:
            t.refs += 1

    def release(self) -> bool:
        """Let go of one hold (under the KV's ``_lock``); True when a table a merge dropped became free."""
        self.refs -= 1
        if self.refs:
            return False
        free = False
        for t in self.tables:
            t.refs -= 1
            if t.refs == 0 and t.removed_in is not None:
                free = True
        return free


class Snapshots:
    """The sequence numbers live readers read at, how many readers read at each, and since when
    (under the KV's ``_lock``).  Merges keep every version one of them may see.  ``scans``: the KV's
    scans handing out rows, which ``KV.close`` cuts short (``snapshot._scan_chunks``)."""

    __slots__ = ("counts", "times", "oldest", "scans")

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.times: dict[int, float] = {}
        self.oldest: int | None = None
        self.scans: set[Any] = set()

    def hold(self, snapshot: int) -> None:
        counts = self.counts
        counts[snapshot] = counts.get(snapshot, 0) + 1
        self.times.setdefault(snapshot, time.monotonic())
        self.oldest = min(counts)

    def release(self, snapshot: int) -> None:
        counts = self.counts
        count = counts[snapshot] - 1
        if count:
            counts[snapshot] = count
        else:
            del counts[snapshot]
            self.times.pop(snapshot, None)
        self.oldest = min(counts) if counts else None

    def live(self) -> int:
        """How many readers hold a snapshot."""
        return sum(self.counts.values())

    def oldest_age(self) -> float | None:
        """Seconds since the oldest snapshot was taken; None when there is none."""
        return None if self.oldest is None else time.monotonic() - self.times[self.oldest]

    def _check(self) -> None:
        assert self.oldest == (min(self.counts) if self.counts else None)
