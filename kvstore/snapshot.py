"""Reading one snapshot: point reads, the reader that holds a view, scans and cursors.

A read sees the database as of one sequence number (its *snapshot*) through
one view (``view.View``): the memtables, newest first, then the tables,
newest first; the first level that holds a version of a key at or below the
snapshot answers, and a tombstone answers "absent".  A ``Reader`` holds its
view and snapshot until it is released; a transaction's reader adds the
transaction's pending writes as the newest level and records what it reads
(``isolation``).  ``Reads`` gives ``KV`` and ``KVTX`` one ``seek``,
``seek_for_prev`` and ``scan``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from kvstore import bloom, record
from kvstore.core import Core, closed_error
from kvstore.errors import ClosedError, InvalidCursorError, TxClosedError
from kvstore.isolation import Item, Pending, Range, TxState
from kvstore.keys import Bytes, as_bytes, bounds
from kvstore.merge import merge_items
from kvstore.view import View

__all__ = ["Cursor", "Reader", "Reads", "Scan", "get_in"]


def get_in(view: View, key: bytes, snapshot: int) -> bytes | None:
    """The value of ``key`` at ``snapshot`` in ``view``, or None when it is absent or deleted."""
    for mem in view.mems:
        found = mem.get(key, snapshot)
        if found is not None:
            return found[1]
    readers = view.readers
    if readers:  # the key is hashed, and its bloom mask made, once for every table
        probe = bloom.probe(record.key_hash(key), readers[0].bloom_k)
        for reader in readers:
            found = reader.get(key, snapshot, probe)
            if found is not None:
                return found[1]
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

    def get(self, key: bytes) -> bytes | None:
        if self.pending is not None and key in self.pending.writes:
            return self.pending.writes[key]
        if self.tx is not None:
            self.tx.reads.add(key)
        return get_in(self.view, key, self.snapshot)

    def items(self, start: bytes | None, reverse: bool, inclusive: bool) -> Iterator[tuple[bytes, bytes]]:
        snap = self.snapshot
        levels: list[Iterator[Item]] = []
        if self.pending is not None:  # live: the transaction's later writes are seen when reached
            levels.append(self.pending.items(start, snap, reverse, inclusive))
        for mem in self.view.mems:
            if len(mem):  # keys written into it from now on are past the snapshot
                levels.append(mem.items(start, snap, reverse, inclusive))
        for reader in self.view.readers:
            levels.append(reader.items(start, snap, reverse, inclusive))
        return merge_items(levels, reverse)

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


class Scan(Iterator[tuple[bytes, bytes]]):
    """The iterator ``scan()`` returns: pairs from one snapshot; closing it (or exhausting it) lets go."""

    __slots__ = ("_reader", "_owns", "_gen", "_owner", "_range", "_lo", "_hi", "_reverse", "_stop", "_done")

    def __init__(self, reader: Reader, owns: bool, lo: bytes | None, hi: bytes | None, reverse: bool) -> None:
        self._reader = reader
        self._owns = owns
        self._owner: object = None  # the KV or KVTX it reads, kept alive while it is used
        self._lo, self._hi, self._reverse = lo, hi, reverse
        self._range: Range | None = None
        if reader.tx is not None:  # a transaction's scan: what it walks joins the read set
            self._range = Range()
            reader.tx.ranges.append(self._range)
        self._stop = lo if reverse else hi  # the bound in the direction of travel
        self._done = False  # exhausted: StopIteration from now on, as iterators do
        if lo is not None and hi is not None and lo >= hi:
            self._gen: Iterator[tuple[bytes, bytes]] = iter(())
        else:
            self._gen = reader.items(hi if reverse else lo, reverse, not reverse)

    def __iter__(self) -> Scan:
        return self

    def __next__(self) -> tuple[bytes, bytes]:
        reader = self._reader
        if reader.released or reader.kv._closed or (reader.tx is not None and reader.tx.closed):
            if self._done and not reader.kv._closed and (reader.tx is None or not reader.tx.closed):
                raise StopIteration
            reader.check()
        item = next(self._gen, None)
        stop = self._stop
        if item is not None and stop is not None and (item[0] < stop if self._reverse else item[0] >= stop):
            item = None
            self._gen = iter(())
        if item is None:
            done = self._range
            if done is not None:  # exhausted: the whole bound is covered
                done.lo, done.hi, done.hi_inclusive, done.active = self._lo, self._hi, self._hi is None, True
            self._done = True
            self.close()
            raise StopIteration
        r = self._range
        if r is not None:
            if not self._reverse:  # walked [lo, key]
                r.lo, r.hi, r.hi_inclusive = self._lo, item[0], True
            else:  # walked [key, hi)
                r.lo, r.hi, r.hi_inclusive = item[0], self._hi, self._hi is None
            r.active = True
        return item

    def close(self) -> None:
        """Stop the scan and release its snapshot and files (a transaction's snapshot stays with the
        transaction); idempotent.  Asking a closed scan for more raises ``ClosedError``, an exhausted
        one ``StopIteration``."""
        if self._owns:
            self._reader.release()
        elif not self._done:
            self._gen = _closed_rows()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # a finalizer must not raise; the KV may be gone
            if self._owns:
                self._reader.release()


def _closed_rows() -> Iterator[tuple[bytes, bytes]]:
    """What a transaction's scan yields once closed: nothing, as ``ClosedError``."""
    raise ClosedError("the cursor or scan is closed")
    yield  # a generator: the error comes from the first next()


class Cursor:
    """A position in the key order of one snapshot, movable both ways.

    ``kv.seek(key)`` places it on the first key ``>= key``,
    ``kv.seek_for_prev(key)`` on the last key ``<= key``; ``tx.seek`` and
    ``tx.seek_for_prev`` do the same in a transaction's view.  A cursor
    belongs to one thread at a time.  ``next()`` and ``prev()`` cost about
    the same; turning around costs one re-seek.  A KV's cursor holds its own
    snapshot until ``close()`` (use it as a context manager), even once it
    has stepped off either end; a transaction's cursor reads the
    transaction's snapshot, which it never releases.  After ``close()`` a
    KV's cursor raises ``ClosedError``, a transaction's is invalid
    (``InvalidCursorError``); after its KV or transaction closed, every use
    raises ``ClosedError`` or ``TxClosedError``.
    """

    __slots__ = ("_reader", "_owns", "_it", "_forward", "_key", "_value", "valid", "_owner", "_range")

    def __init__(self, reader: Reader, owns: bool, key: bytes, for_prev: bool) -> None:
        self._reader = reader
        self._owns = owns
        self._owner: object = None  # the KV or KVTX it reads, kept alive while it is used
        self._key: bytes | None = None
        self._value: bytes | None = None
        self.valid = False
        """True while the cursor is on a key; ``key`` and ``value`` raise ``InvalidCursorError`` otherwise."""
        self._range: Range | None = None
        if reader.tx is not None:  # a transaction's cursor: what it reaches joins the read set
            self._range = Range()
            self._range.place(key)
            reader.tx.ranges.append(self._range)
        self._start(key, reverse=for_prev, inclusive=True)

    def _start(self, key: bytes, reverse: bool, inclusive: bool) -> None:
        self._it = self._reader.items(key, reverse, inclusive)
        self._forward = not reverse
        self._step()

    def _step(self) -> None:
        nxt = next(self._it, None)
        if nxt is None:
            self.valid = False
            self._key = self._value = None
        else:
            self._key, self._value = nxt
            self.valid = True
        if self._range is not None:
            self._range.reach(self._key, self._forward)

    # key, value, next and prev are written out, each whole: they run once per step of a cursor

    @property
    def key(self) -> bytes:
        """The key under the cursor; ``InvalidCursorError`` when it is not on one, ``ClosedError`` or
        ``TxClosedError`` once the cursor, its KV or its transaction is closed."""
        self._reader.check()
        if self._key is None:
            raise InvalidCursorError("the cursor is not on a key")
        return self._key

    @property
    def value(self) -> bytes:
        """The value under the cursor; raises as ``key``."""
        self._reader.check()
        if self._value is None:
            raise InvalidCursorError("the cursor is not on a key")
        return self._value

    def next(self) -> None:
        """Move to the next key; past the last one the cursor becomes invalid.  Raises
        ``InvalidCursorError`` when it is not on a key, ``ClosedError``/``TxClosedError`` as ``key``.
        Cost: about one comparison per level, one re-seek after ``prev()``."""
        self._reader.check()
        if self._key is None:
            raise InvalidCursorError("cannot move a cursor that is not on a key")
        if self._forward:
            self._step()
        else:
            self._start(self._key, reverse=False, inclusive=False)

    def prev(self) -> None:
        """Move to the previous key; before the first one the cursor becomes invalid.  Raises as
        ``next``; costs as ``next``, one re-seek after ``next()``."""
        self._reader.check()
        if self._key is None:
            raise InvalidCursorError("cannot move a cursor that is not on a key")
        if not self._forward:
            self._step()
        else:
            self._start(self._key, reverse=True, inclusive=False)

    def __iter__(self) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) from the current position forward, moving the cursor."""
        while True:
            self._reader.check()
            if self._key is None or self._value is None:
                return
            yield self._key, self._value
            self.next()

    def close(self) -> None:
        """Release a KV cursor's snapshot and files (a transaction's stays with the transaction) and make
        the cursor invalid; idempotent."""
        if self._owns:
            self._reader.release()
        self.valid = False
        self._key = self._value = None
        self._it = iter(())

    def __enter__(self) -> Cursor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # a finalizer must not raise; the KV may be gone
            if self._owns:
                self._reader.release()


class Reads:
    """``seek``, ``seek_for_prev`` and ``scan``, for a KV (each call reads a snapshot of its own, taken
    now) and for a transaction (its snapshot and its own writes; what they cover joins its read set)."""

    def _reading(self) -> tuple[Reader, bool]:
        """The reader a new cursor or scan uses and whether it owns it (releases it when it closes)."""
        raise NotImplementedError

    def seek(self, key: Bytes = b"") -> Cursor:
        """A ``Cursor`` on the first key ``>= key``, invalid when there is none.

        Raises ``TypeError`` when ``key`` is not bytes-like, ``ClosedError``
        (``TxClosedError``) when the KV (the transaction) is closed.  Cost:
        one positioning per memtable and table, then about one comparison
        per level for each step.
        """
        key = as_bytes(key, "key")
        reader, owns = self._reading()
        cursor = Cursor(reader, owns, key, for_prev=False)
        cursor._owner = self  # a dropped KVTX would release the snapshot under its cursor
        return cursor

    def seek_for_prev(self, key: Bytes) -> Cursor:
        """A ``Cursor`` on the last key ``<= key``, invalid when there is none; raises as ``seek``."""
        key = as_bytes(key, "key")
        reader, owns = self._reading()
        cursor = Cursor(reader, owns, key, for_prev=True)
        cursor._owner = self
        return cursor

    def scan(self, start: Bytes | None = None, end: Bytes | None = None, *, prefix: Bytes | None = None,
             reverse: bool = False) -> Iterator[tuple[bytes, bytes]]:
        """Iterate ``(key, value)`` over ``[start, end)`` intersected with the keys starting with ``prefix``,
        in key order (descending with ``reverse``).

        A KV's scan reads a snapshot taken now; close the iterator (or
        exhaust it) to release it early.  ``start >= end`` yields nothing.
        An exhausted scan raises ``StopIteration`` again when asked for
        more; a closed one ``ClosedError``.
        Raises ``TypeError`` for a bound that is not bytes-like,
        ``ClosedError`` (``TxClosedError``) when the KV (the transaction) is
        closed, from the call or from any later ``next()``.
        """
        lo, hi = bounds(start, end, prefix)
        reader, owns = self._reading()
        scan = Scan(reader, owns, lo, hi, reverse)
        scan._owner = self
        return scan
