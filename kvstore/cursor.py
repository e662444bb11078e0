"""Cursors and the read calls ``KV`` and ``KVTX`` share: ``seek``, ``seek_for_prev`` and ``scan``.

A ``Cursor`` is a position in the key order of one snapshot, read through a
``snapshot.Reader``; it steps one row at a time, either way, and stops at the
ends of its key space (``keyspace``).  ``Reads`` gives ``KV`` and ``KVTX``
their cursors and scans (``snapshot.Scan``), in the KV's own key space or a
collection's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from kvstore.errors import InvalidCursorError
from kvstore.isolation import Range
from kvstore.keys import Bytes, as_bytes, bounds
from kvstore.keyspace import DEFAULT, Space
from kvstore.snapshot import Reader, Scan

__all__ = ["Cursor", "Reads"]


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

    __slots__ = ("_reader", "_owns", "_it", "_forward", "_key", "_value", "valid", "_owner", "_range", "_seen",
                 "_space", "_stored", "_plain_below")

    def __init__(self, reader: Reader, owns: bool, key: bytes, for_prev: bool, space: Space = DEFAULT) -> None:
        self._reader = reader
        self._space = space  # the key space it walks: ``key`` is stored, it stops at the space's ends
        #: Stored keys below this one are keys of its space as they are (``FF`` in the KV's own space, else
        #: ``b""``): a step onto one is the short path of ``_step``.
        self._plain_below = b"\xff" if space.prefix is None else b""
        self._owns = owns
        self._owner: object = None  # the KV or KVTX it reads, kept alive while it is used
        self._key: bytes | None = None  # the key under the cursor, as its user sees it
        self._stored: bytes | None = None  # the same key as stored (where a re-seek starts from)
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
        pending = self._reader.pending
        self._seen = pending.mark() if pending is not None else (0, 0)  # a transaction's writes as read from here
        self._it = self._reader.items(key, reverse, inclusive)
        self._forward = not reverse
        self._step()

    def _step(self) -> None:
        nxt = next(self._it, None)
        if nxt is not None and nxt[0] < self._plain_below:  # a key of the KV's own, stored as it is
            key, self._value = nxt
            self._key = self._stored = key
            self.valid = True
        else:
            space = self._space
            if nxt is None or not space.lo <= nxt[0] < space.hi:  # past either end of its key space
                self.valid = False
                self._key = self._value = self._stored = None
            else:
                self._stored, self._value = nxt
                self._key = space.key(nxt[0])
                self.valid = True
        if self._range is not None:
            if self._stored is None:  # past the end of its key space (or of every key): up to that end
                self._range.reach_bound(self._space.hi if self._forward else self._space.lo, self._forward)
            else:
                self._range.reach(self._stored, self._forward)

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
        stored = self._stored
        if stored is None:
            raise InvalidCursorError("cannot move a cursor that is not on a key")
        pending = self._reader.pending
        if self._forward and (pending is None or not pending.moved(self._seen)):
            self._step()
        else:  # turning around, or its transaction wrote since it read on: from here afresh
            self._start(stored, reverse=False, inclusive=False)

    def prev(self) -> None:
        """Move to the previous key; before the first one the cursor becomes invalid.  Raises as
        ``next``; costs as ``next``, one re-seek after ``next()``."""
        self._reader.check()
        stored = self._stored
        if stored is None:
            raise InvalidCursorError("cannot move a cursor that is not on a key")
        pending = self._reader.pending
        if not self._forward and (pending is None or not pending.moved(self._seen)):
            self._step()
        else:
            self._start(stored, reverse=True, inclusive=False)

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
        self._key = self._value = self._stored = None
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

    def _own(self) -> Space:
        """The KV's own key space (``Core._own_space``)."""
        raise NotImplementedError

    def seek(self, key: Bytes = b"") -> Cursor:
        """A ``Cursor`` on the first key ``>= key``, invalid when there is none.

        Raises ``TypeError`` when ``key`` is not bytes-like, ``ClosedError``
        (``TxClosedError``) when the KV (the transaction) is closed.  Cost:
        one positioning per memtable and table, then about one comparison
        per level for each step.
        """
        key = as_bytes(key, "key")  # ``_seek_in`` written out: a call level costs a seek about 1%
        space = self._own()
        if key >= b"\xff":
            key = space.stored(key)
        reader, owns = self._reading()
        cursor = Cursor(reader, owns, key, False, space)
        cursor._owner = self  # a dropped KVTX would release the snapshot under its cursor
        return cursor

    def _seek_in(self, space: Space, key: Bytes, for_prev: bool) -> Cursor:
        """``seek`` (``seek_for_prev`` with ``for_prev``) in key space ``space``."""
        key = space.stored(as_bytes(key, "key"))
        reader, owns = self._reading()
        cursor = Cursor(reader, owns, key, for_prev, space)
        cursor._owner = self  # a dropped KVTX would release the snapshot under its cursor
        return cursor

    def seek_for_prev(self, key: Bytes) -> Cursor:
        """A ``Cursor`` on the last key ``<= key``, invalid when there is none; raises as ``seek``."""
        return self._seek_in(self._own(), key, True)

    def scan(self, start: Bytes | None = None, end: Bytes | None = None, *, prefix: Bytes | None = None,
             reverse: bool = False) -> Iterator[tuple[bytes, bytes]]:
        """Iterate ``(key, value)`` over ``[start, end)`` intersected with the keys starting with ``prefix``,
        in key order (descending with ``reverse``).

        A KV's scan reads a snapshot taken now; close the iterator (or
        exhaust it) to release it early.  ``start >= end`` yields nothing.
        An exhausted scan raises ``StopIteration`` again when asked for
        more, as iterators do, whatever closed since; a scan closed before
        it ran out raises ``ClosedError``.
        Raises ``TypeError`` for a bound that is not bytes-like,
        ``ClosedError`` (``TxClosedError``) when the KV (the transaction) is
        closed, from the call or from any later ``next()`` of a scan not
        yet exhausted.  Cost: rows come a chunk at a time from each level,
        merged in C; a row costs about the same whatever the number of
        levels, a first row one positioning per level.
        """
        space = self._own()  # ``_scan_in`` written out, keys below FF kept as they are: a call costs ~1%
        lo, hi = bounds(start, end, prefix)
        lo = space.lo if lo is None else lo if lo < b"\xff" else space.stored(lo)
        hi = space.hi if hi is None else hi if hi < b"\xff" else space.stored(hi)
        reader, owns = self._reading()
        scan = Scan(reader, owns, lo, hi, reverse, space)
        scan._owner = self
        return scan

    def _scan_in(self, space: Space, start: Bytes | None, end: Bytes | None, prefix: Bytes | None,
                 reverse: bool) -> Iterator[tuple[bytes, bytes]]:
        """``scan`` in key space ``space``."""
        lo, hi = bounds(start, end, prefix)
        lo = space.lo if lo is None else space.stored(lo)
        hi = space.hi if hi is None else space.stored(hi)
        reader, owns = self._reading()
        scan = Scan(reader, owns, lo, hi, reverse, space)
        scan._owner = self
        return scan
