"""Reading one snapshot: point reads, the reader that holds a view, scans and cursors.

A read sees the database as of one sequence number (its *snapshot*) through
one view (``view.View``): the memtables, newest first, then the tables,
newest first; the first level that holds a version of a key at or below the
snapshot answers, and a tombstone answers "absent".  A ``Reader`` holds its
view and snapshot until it is released; a transaction's reader adds the
transaction's pending writes as the newest level and records what it reads
(``isolation``).  ``Scan`` hands out a scan's rows; cursors and the read
calls ``KV`` and ``KVTX`` share are in ``cursor``.
"""

from __future__ import annotations

import bisect
import itertools
import operator
from collections.abc import Callable, Iterable, Iterator
from typing import cast

from kvstore import bloom, record
from kvstore.chunks import Chunk, chunks_of
from kvstore.core import Core, closed_error
from kvstore.covered import hidden_by_newer, own_hidden, visible
from kvstore.errors import ClosedError, TxClosedError
from kvstore.expiry import unexpired
from kvstore.isolation import Pending, Range, TxState
from kvstore.keyspace import DEFAULT, Space
from kvstore.merge import merge_chunks
from kvstore.rangedel import Fragments
from kvstore.runs import Run
from kvstore.sorted_array import Memtable
from kvstore.sorted_file import TableReader
from kvstore.view import View

__all__ = ["Reader", "Scan", "get_in"]


_Expiring = record.Expiring


def get_in(view: View, key: bytes, snapshot: int, clock: Callable[[], float] | None) -> bytes | None:
    """The value of ``key`` at ``snapshot`` in ``view``, or None when it is absent or deleted.  A level's
    range tombstone over the key, newer than the level's own version of it, answers "absent" (every older
    level is older than it).  A value that expires is absent once ``clock()`` (read only then) reaches its
    expiry, and hides older versions all the same; ``clock`` None returns it as stored (``record.Expiring``)."""
    for mem in view.mems:
        found = mem.get(key, snapshot)
        if mem.ranges:
            cover = mem.fragments().covering(key, snapshot)
            if cover and (found is None or found[0] < cover):
                return None
        if found is not None:
            value = found[1]
            return value if type(value) is not _Expiring or clock is None else value.alive(clock())
    readers = view.runs
    if readers:  # the key is hashed, and its bloom mask made, once for every table
        probe = bloom.probe(record.key_hash(key), readers[0].bloom_k)
        for reader in readers:
            found = reader.get(key, snapshot, probe)
            if reader.ranged:
                cover = reader.fragments.covering(key, snapshot)
                if cover and (found is None or found[0] < cover):
                    return None
            if found is not None:
                value = found[1]
                return value if type(value) is not _Expiring or clock is None else value.alive(clock())
    return None


class Reader:
    """A snapshot and a view held for a scan, a cursor or a transaction; ``release()`` lets them go."""

    __slots__ = ("kv", "view", "snapshot", "pending", "released", "tx", "__weakref__")

    def __init__(self, kv: Core, pending: Pending | None, tx: TxState | None = None) -> None:
        self.kv = kv
        self.pending = pending
        self.tx = tx  # the owning transaction's state (not the KVTX: its finalizer holds this reader)
        self.released = False
        with kv._lock:  # one step: a commit published after the pin finds the transaction's snapshot held
            self.view, self.snapshot = kv._pin()
            kv._snapshots.hold(self.snapshot)
            if tx is not None:
                kv._writesets.hold(self.snapshot)

    def check(self) -> None:
        """Raise ``ClosedError`` or ``TxClosedError`` when this reader may no longer be used."""
        if self.kv._closed:
            raise closed_error()
        if self.tx is not None and self.tx.closed:
            raise TxClosedError("the transaction is closed")
        if self.released:
            raise ClosedError("the cursor or scan is closed")

    def get(self, key: bytes, clock: Callable[[], float] | None) -> bytes | None:
        """The value of ``key`` as this reader sees it (its transaction's own writes first); with ``clock``
        None, as stored (``get_in``)."""
        pending = self.pending
        if pending is not None:
            if key in pending.writes:
                return pending.writes[key]
            if pending.ranges and pending.covers(key):
                return None  # deleted by this transaction: answered by its own write
        if self.tx is not None:
            self.tx.reads.add(key)
        return get_in(self.view, key, self.snapshot, clock)

    def chunks(self, start: bytes | None, reverse: bool, inclusive: bool) -> Iterator[list[tuple[bytes, bytes]]]:
        """The live pairs from ``start`` on (``inclusive`` or not), in chunks in the direction of travel."""
        snap = self.snapshot
        levels: list[Iterator[Chunk]] = []
        above: Fragments | None = None  # the range tombstones of the levels added so far, visible at snap
        pending = self.pending
        clock = self.kv._clock
        if pending is not None:  # live: the transaction's later writes are seen when reached
            levels.append(chunks_of(pending.items(start, snap, reverse, inclusive), reverse, 1, 1))
            if pending.ranges:
                above = pending.fragments()
        for mem in self.view.mems:
            own = visible(mem.fragments(), snap) if mem.ranges else None
            if len(mem):  # keys written into it from now on are past the snapshot
                rows = (mem.chunks(start, snap, reverse, inclusive) if above is None and own is None
                        else _level(mem, start, snap, reverse, inclusive, above, own))
                levels.append(unexpired(rows, clock) if mem.expiring else rows)
            if own is not None:
                above = own if above is None else above.merge(own)
        for reader in self.view.runs:
            own = visible(reader.fragments, snap) if reader.ranged else None
            if start is None or not (start < reader.smallest if reverse else start > reader.largest):
                rows = (reader.chunks(start, snap, reverse, inclusive) if above is None and own is None
                        else _level(reader, start, snap, reverse, inclusive, above, own))
                levels.append(unexpired(rows, clock) if reader.expiring else rows)
            # else the table's entries lie wholly behind the start
            if own is not None:
                above = own if above is None else above.merge(own)
        return merge_chunks(levels, reverse)

    def items(self, start: bytes | None, reverse: bool, inclusive: bool) -> Iterator[tuple[bytes, bytes]]:
        """The live pairs from ``start`` on, one at a time."""
        return itertools.chain.from_iterable(self.chunks(start, reverse, inclusive))

    def release(self) -> None:
        if self.released:
            return
        self.released = True
        kv = self.kv
        with kv._lock:  # one step, as the hold was
            kv._snapshots.release(self.snapshot)
            if self.tx is not None:
                kv._writesets.release(self.snapshot)
            free = self.view.release()
        if free:
            kv._collect_soon()


def merge_rows(reader: Reader, space: Space) -> Iterator[tuple[bytes, bytes]]:
    """The live pairs of key space ``space`` as ``reader`` sees them, keys as stored."""
    rows = reader.items(space.lo, False, True)
    return itertools.takewhile(lambda row: row[0] < space.hi, rows)


def _level(level: Memtable | TableReader | Run, start: bytes | None, snapshot: int, reverse: bool, inclusive: bool,
           above: Fragments | None, own: Fragments | None) -> Iterator[Chunk]:
    """One level's chunks for ``Reader.chunks``, less what the range tombstones of newer levels (``above``)
    and of its own (``own``) hide from ``snapshot`` (``covered``)."""

    def position(key: bytes | None, inclusive: bool) -> Iterator[Chunk]:
        chunks = level.chunks(key, snapshot, reverse, inclusive)
        return chunks if own is None else own_hidden(chunks, own, level.get, snapshot)

    if above is None:
        return position(start, inclusive)
    return hidden_by_newer(position, start, inclusive, reverse, above)


class _ScanState:
    """What a scan's rows and its ``close()`` share: the reader, the bounds, the range a transaction's scan
    covered, whether the scan was closed or ran out, and the chunk of rows it is handing out."""

    __slots__ = ("reader", "owns", "lo", "hi", "reverse", "range", "closed", "done", "rows", "space")

    def __init__(self, reader: Reader, owns: bool, lo: bytes | None, hi: bytes | None, reverse: bool,
                 space: Space) -> None:
        self.reader = reader
        self.space = space  # the key space the bounds (stored keys) lie in: rows are handed out in its keys
        self.owns = owns
        self.lo, self.hi, self.reverse = lo, hi, reverse
        self.range: Range | None = None
        if reader.tx is not None:  # a transaction's scan: what it walks joins the read set
            self.range = Range()
            reader.tx.ranges.append(self.range)
        self.closed = False  # close() was called
        self.done = False  # exhausted: StopIteration from now on, as iterators do
        self.rows: list[tuple[bytes, bytes]] | None = None  # a KV scan's chunk the chain is walking

    def check(self) -> None:
        """Raise what asking a closed scan, or one whose KV or transaction closed, for more raises."""
        if self.closed and not self.owns:
            raise ClosedError("the cursor or scan is closed")
        self.reader.check()

    def cut(self) -> None:
        """Stop handing out the rows of the current chunk: the next ``next()`` asks for the next chunk,
        which checks whether the scan may go on (``close()``, and the KV's close, call this)."""
        rows = self.rows
        if rows is not None:
            rows.clear()

    def finish(self) -> None:
        """The scan ran out: a transaction's covers its whole bound; a KV's lets its snapshot go."""
        self.done = True
        self.rows = None
        self.reader.kv._snapshots.scans.discard(self)
        r = self.range
        if r is not None:
            r.lo, r.hi, r.hi_inclusive, r.active = self.lo, self.hi, self.hi is None, True
        if self.owns:
            self.reader.release()


class Scan(itertools.chain[tuple[bytes, bytes]]):
    """The iterator ``scan()`` returns: pairs from one snapshot; closing it (or exhausting it) lets go.

    A KV's scan chains its chunks of rows, which ``itertools.chain`` walks
    in C: a Python step runs once per chunk, and ``close()`` (the scan's or
    the KV's) empties the chunk being handed out, so no row comes after it
    (``_scan_chunks``).  A transaction's scan chains a generator that checks
    the scan, its KV and its transaction before each row (``_scan_rows``).
    """

    __slots__ = ("_state", "_owner")
    _state: _ScanState
    _owner: object  # the KV or KVTX it reads, kept alive while it is used

    def __new__(cls, reader: Reader, owns: bool, lo: bytes | None, hi: bytes | None, reverse: bool,
                space: Space = DEFAULT) -> Scan:
        state = _ScanState(reader, owns, lo, hi, reverse, space)
        self = cast(Scan, cls.from_iterable(_scan_sources(state)))  # chain's own constructor: a cls
        self._state = state
        self._owner = None
        return self

    def close(self) -> None:
        """Stop the scan and release its snapshot and files (a transaction's snapshot stays with the
        transaction); idempotent.  Asking a closed scan for more raises ``ClosedError``, an exhausted
        one ``StopIteration``."""
        state = self._state
        if not state.done:
            state.closed = True
            state.cut()
        state.reader.kv._snapshots.scans.discard(state)
        if state.owns:
            state.reader.release()

    def __del__(self) -> None:
        try:  # a finalizer must not raise; the KV may be gone
            state = self._state
            state.reader.kv._snapshots.scans.discard(state)
            if state.owns:
                state.reader.release()
        except Exception:  # noqa: BLE001 - nothing to tell anyone from a finalizer
            pass


def _scan_sources(state: _ScanState) -> Iterator[Iterable[tuple[bytes, bytes]]]:
    """What a scan chains: a KV scan's chunks of rows (lists the chain walks in C), a transaction's rows
    (a generator), then, only when they stopped on an error (a closed scan, KV or transaction, or a
    failed read), a generator that raises it again for each later ``next()``."""
    if state.reader.tx is None:
        chunks = _scan_chunks(state)
        while True:
            try:
                rows = next(chunks, None)
            except Exception as exc:  # noqa: BLE001 - a failed read: this and every later next() raise it
                while True:
                    yield _raising_error(exc)
            if rows is None:
                break
            yield rows
    else:
        yield _scan_rows(state)
    while not state.done:
        yield _raising(state)


def _raising_error(exc: Exception) -> Iterator[tuple[bytes, bytes]]:
    raise exc
    yield  # pragma: no cover - a generator: the error comes from the first next()


def _raising(state: _ScanState) -> Iterator[tuple[bytes, bytes]]:
    state.check()
    raise ClosedError("the cursor or scan is closed")  # pragma: no cover - check() raised
    yield  # a generator: the error comes from the first next()


def _scan_chunks(state: _ScanState) -> Iterator[list[tuple[bytes, bytes]]]:
    """A KV scan's rows as chunks, each checked for before it is handed out: the scan and its KV open.
    The chunk handed out is ``state.rows``, which ``close()`` empties (``_ScanState.cut``), so no row
    comes after a close."""
    reader, lo, hi, reverse, space = state.reader, state.lo, state.hi, state.reverse, state.space
    own = space.prefix is None  # the KV's own space: a chunk with no key from FF up is handed out as it is
    kv = reader.kv
    if reader.released or kv._closed:
        return  # not done: the chain raises ClosedError from here on (_raising)
    if lo is None or hi is None or lo < hi:
        kv._snapshots.scans.add(state)  # until the scan runs out, is closed or is collected (_ScanState.finish, Scan)
        stop = lo if reverse else hi
        chunks = reader.chunks(hi if reverse else lo, reverse, not reverse)
        while True:
            rows = next(chunks, None)  # a resumed scan was checked open by the step before (below)
            if rows is None:
                break
            if stop is not None and (rows[-1][0] >= stop if not reverse else rows[-1][0] < stop):
                rows = _before(rows, stop, reverse)
                if rows:
                    if not (own and rows[0][0] < b"\xff" and rows[-1][0] < b"\xff"):
                        rows = space.rows(rows)
                    state.rows = rows
                    if not (state.closed or reader.released or kv._closed):
                        yield rows
                break
            if not (own and rows[0][0] < b"\xff" and rows[-1][0] < b"\xff"):
                rows = space.rows(rows)
            state.rows = rows  # set before the check: a close from now on empties these rows
            if state.closed or reader.released or kv._closed:
                return
            yield rows
            if state.closed or reader.released or kv._closed:
                return  # closed while its rows were handed out: no further read
    if state.closed or reader.released or kv._closed:
        return
    state.finish()


def _before(rows: list[tuple[bytes, bytes]], stop: bytes, reverse: bool) -> list[tuple[bytes, bytes]]:
    """The rows of a chunk before ``stop`` in the direction of travel (``stop`` excluded going forward,
    included going backward)."""
    if not reverse:
        return rows[: bisect.bisect_left(rows, stop, key=_KEY)]
    n = 0
    for row in rows:
        if row[0] < stop:
            break
        n += 1
    return rows[:n]


def _scan_rows(state: _ScanState) -> Iterator[tuple[bytes, bytes]]:
    """A transaction's scan's rows, each step checking that the scan, its KV and its transaction are
    open."""
    reader, lo, hi = state.reader, state.lo, state.hi
    kv, tx = reader.kv, reader.tx
    assert tx is not None
    if reader.released or kv._closed or tx.closed:
        state.check()
    if lo is None or hi is None or lo < hi:
        step = _tx_rows(state).__next__
        space = state.space
        own = space.prefix is None  # the KV's own space: only keys starting with FF change
        while True:
            if state.closed or reader.released or kv._closed or tx.closed:
                state.check()
            try:
                row = step()
            except StopIteration:
                break
            yield row if own and row[0] < b"\xff" else (space.key(row[0]), row[1])
    state.finish()


def _tx_rows(state: _ScanState) -> Iterator[tuple[bytes, bytes]]:
    """A transaction's scan's rows: what it walked joins the transaction's read set (``state.range``), and
    when the transaction wrote since the last row, the levels are positioned again from that row, so the
    scan sees the write once it reaches its key."""
    reader, lo, hi, reverse, r = state.reader, state.lo, state.hi, state.reverse, state.range
    pending = reader.pending
    assert pending is not None and r is not None
    start, stop = (hi, lo) if reverse else (lo, hi)
    inclusive = not reverse  # of start: the lower bound going forward; going backward, past the last row
    mark = pending.mark()
    rows = _rows(reader.chunks(start, reverse, inclusive), stop, reverse)
    while True:
        if pending.moved(mark):
            mark = pending.mark()
            rows = _rows(reader.chunks(start, reverse, inclusive), stop, reverse)
        row = next(rows, None)
        if row is None:
            return
        if not reverse:  # walked [lo, key]
            r.lo, r.hi, r.hi_inclusive = lo, row[0], True
        else:  # walked [key, hi)
            r.lo, r.hi, r.hi_inclusive = row[0], hi, hi is None
        r.active = True
        start, inclusive = row[0], False
        yield row


def _rows(chunks: Iterator[list[tuple[bytes, bytes]]], stop: bytes | None,
          reverse: bool) -> Iterator[tuple[bytes, bytes]]:
    """The rows of ``chunks`` before ``stop`` (the bound in the direction of travel: excluded going
    forward, the last included going backward), one at a time."""
    if stop is None:
        for chunk in chunks:
            yield from chunk
        return
    for chunk in chunks:
        last = chunk[-1][0]
        if not reverse:
            if last >= stop:
                yield from chunk[: bisect.bisect_left(chunk, stop, key=_KEY)]
                return
        elif last < stop:
            for row in chunk:
                if row[0] < stop:
                    return
                yield row
        yield from chunk


_KEY = operator.itemgetter(0)
