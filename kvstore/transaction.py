"""``KVTX``: a buffered transaction over one snapshot, committed atomically through the write queue
(docs/transactions.md; DESIGN.md, "Isolation").

Writes are buffered in ``isolation.Pending`` and read back by the
transaction's own reads; reads come from its ``snapshot.Reader`` and are
recorded for the conflict check its commit undergoes in the write queue
(``commit``).  Nothing is visible to others before ``commit()``.
"""

from __future__ import annotations

import weakref
from types import TracebackType

from kvstore import record
from kvstore.collection import Collection
from kvstore.commit import COMMIT
from kvstore.core import Core, closed_error
from kvstore.cursor import Reads
from kvstore.errors import KeyOrValueTooLargeError, TxClosedError
from kvstore.expiry import check_ttl, remaining
from kvstore.isolation import Pending, TxState
from kvstore.keys import Bytes, as_bytes
from kvstore.keyspace import DEFAULT, Space
from kvstore.snapshot import Reader

__all__ = ["KVTX"]


class KVTX(Reads):
    """A buffered transaction over one snapshot.  Create one with ``kv.new_tx()``.

    Reads see the database as of ``new_tx()`` plus this transaction's own
    writes; nothing is visible to others before ``commit()``, which applies
    every write under one sequence number or none.  A KVTX belongs to one
    thread at a time.  After ``commit()`` or ``abort()`` every call but
    ``abort()`` raises ``TxClosedError``; once its KV is closed, every call
    but ``abort()`` raises ``ClosedError``.  Use it as a context manager: a
    normal exit commits, an exception aborts.  A transaction dropped without
    either is aborted when it is garbage collected, letting its snapshot go.
    """

    def __init__(self, kv: Core) -> None:
        self._kv = kv
        self._state = TxState()
        self._pending = Pending()
        self._reader = Reader(kv, self._pending, self._state)
        # a transaction dropped without commit or abort still lets its snapshot go
        self._finalizer = weakref.finalize(self, self._reader.release)

    @property
    def _closed(self) -> bool:
        return self._state.closed

    def _check_usable(self) -> None:
        """Raise ``TxClosedError`` or ``ClosedError`` when the transaction or its KV has ended."""
        if self._closed:
            raise TxClosedError("the transaction is closed")
        if self._kv._closed:
            raise closed_error()

    def _own(self) -> Space:
        return self._kv._own_space

    def _reading(self) -> tuple[Reader, bool]:
        self._check_usable()
        return self._reader, False

    def get(self, key: Bytes) -> bytes | None:
        """The value of ``key`` in this transaction's view (its own writes first), or None.  Unless its
        own write answers, ``key`` joins the read set its commit is checked against.  A key that expires
        reads as absent once the KV's clock, read at this call, reaches its expiry."""
        key = as_bytes(key, "key")
        if key >= b"\xff" and not self._kv._legacy:  # the KV's own keys starting with FF: stored escaped
            key = b"\xff\x00" + key[1:]
        self._check_usable()
        return self._reader.get(key, self._kv._clock)

    def _get_in(self, space: Space, key: Bytes) -> bytes | None:
        """``get`` in ``space``."""
        key = space.stored(as_bytes(key, "key"))
        self._check_usable()
        return self._reader.get(key, self._kv._clock)

    def ttl(self, key: Bytes) -> float | None:
        """The seconds ``key`` has left before it expires in this transaction's view, by the KV's clock
        now; None when it does not expire, has expired or is absent.  A key this transaction set with a
        ``ttl`` has that whole ttl left (it counts from the commit).  A read: ``key`` joins the read set
        unless the transaction's own write answers."""
        return self._ttl_in(self._kv._own_space, key)

    def _ttl_in(self, space: Space, key: Bytes) -> float | None:
        """``ttl`` in ``space``."""
        key = space.stored(as_bytes(key, "key"))
        self._check_usable()
        pending = self._pending
        if key in pending.writes:
            return pending.ttls.get(key) if pending.writes[key] is not None else None
        return remaining(self._reader.get(key, None), self._kv._clock())

    def set(self, key: Bytes, value: Bytes, *, ttl: float | None = None) -> None:
        """Buffer ``key = value``; nothing is written before ``commit()``.  With ``ttl`` (seconds, an int
        or a float above 0) the key expires ``ttl`` seconds after the commit, by the KV's clock; until the
        commit it reads as set.  Raises ``TypeError`` and ``KeyOrValueTooLargeError`` as ``KV.set``,
        ``TypeError`` or ``ValueError`` for a bad ``ttl``, buffering nothing."""
        kv = self._kv
        config = kv._config
        if type(key) is not bytes or len(key) > config.max_key_size:  # the checks of Core._key, inline
            key = kv._key(key)
        if key >= b"\xff" and not kv._legacy:  # the KV's own keys starting with FF: stored escaped
            key = kv._stored(key, DEFAULT)
        if type(value) is not bytes or len(value) > config.max_value_size:
            value = kv._value(value)
        if self._state.closed or kv._closed:
            self._check_usable()
        pending = self._pending
        if ttl is not None:
            pending.ttls[key] = check_ttl(ttl)  # before the write: a bad ttl buffers nothing
        elif pending.ttls:
            pending.ttls.pop(key, None)
        writes = pending.writes
        if key not in writes:  # a new key: scans see it by the count of writes (``Pending.moved``)
            pending._sorted = None
        else:  # a new value for a key: what a scan read ahead may be stale
            pending.changes += 1
        writes[key] = value  # ``_put`` is this, for keys already stored (collections)

    def _set_in(self, space: Space, key: Bytes, value: Bytes, ttl: float | None) -> None:
        """``set`` in ``space``."""
        self._put(self._kv._stored(self._kv._key(key), space), value, ttl)

    def _put(self, key: bytes, value: Bytes, ttl: float | None) -> None:
        """Buffer stored key ``key`` = ``value`` (checked here), expiring ``ttl`` seconds after the commit
        (``set``'s second half, which ``set`` has written out: it is the hot path of a transaction)."""
        kv = self._kv
        config = kv._config
        if type(value) is not bytes or len(value) > config.max_value_size:
            value = kv._value(value)
        if self._state.closed or kv._closed:
            self._check_usable()
        pending = self._pending
        if ttl is not None:
            pending.ttls[key] = check_ttl(ttl)  # before the write: a bad ttl buffers nothing
        elif pending.ttls:
            pending.ttls.pop(key, None)
        writes = pending.writes
        if key not in writes:  # a new key: scans see it by the count of writes (``Pending.moved``)
            pending._sorted = None
        else:  # a new value for a key: what a scan read ahead may be stale
            pending.changes += 1
        writes[key] = value

    def delete(self, key: Bytes) -> bool:
        """Buffer a delete of ``key``; True when the key exists in this transaction's view (a read:
        ``key`` joins the read set unless its own write answers)."""
        return self._delete_in(DEFAULT, key)

    def _delete_in(self, space: Space, key: Bytes) -> bool:
        """``delete`` in ``space``."""
        key = self._kv._stored(self._kv._key(key), space)
        self._check_usable()
        existed = self._reader.get(key, self._kv._clock) is not None
        self._pending.put(key, None)
        return existed

    def delete_range(self, start: Bytes, end: Bytes) -> None:
        """Buffer a delete of every key in ``[start, end)``: this transaction's own writes in the range are
        dropped, and from now on its reads miss every key of the range, unless it writes the key again.
        ``start >= end`` does nothing.  It reads nothing (no conflict of its own); at commit it is one
        range tombstone, written with the transaction's sequence.  Raises ``TypeError`` or
        ``KeyOrValueTooLargeError`` naming the bound, buffering nothing."""
        self._delete_range_in(DEFAULT, start, end)

    def _delete_range_in(self, space: Space, start: Bytes, end: Bytes) -> None:
        """``delete_range`` in ``space``."""
        start, end = self._kv._bounds(start, end)
        self._check_usable()
        if start < end:
            self._pending.delete_range(self._kv._stored(start, space), self._kv._stored(end, space))

    def collection(self, name: str) -> Collection:
        """The collection ``name`` as this transaction sees it: its reads are this transaction's, its
        writes buffered into it and committed with it (``KV.collection``)."""
        self._check_usable()
        self._kv._check_spaces()
        return Collection(self, name)

    def commit(self, *, sync: bool | None = None) -> None:
        """Apply every write atomically under one sequence number; ``sync`` None takes ``Config.sync``.

        Raises ``ConflictError`` (nothing applied) when a transaction that
        committed after this one's snapshot wrote a key this one read or a
        key inside a range its scans and cursors covered
        (docs/transactions.md); ``KeyOrValueTooLargeError`` (nothing applied)
        when its writes encode to more than one WAL record holds (4 GiB);
        ``ReadOnlyError`` on a read-only KV with writes buffered;
        ``FailedError`` on an I/O error (the outcome is known only after a
        reopen).  The transaction is closed afterwards in every case.  A
        durable commit with nothing to write still makes every commit
        before it durable.
        """
        self._check_usable()
        try:
            pending = self._pending
            kv = self._kv
            durable = kv._config.sync if sync is None else bool(sync)
            if pending.writes or pending.ranges:
                writes = pending.commit_writes(kv._clock() if pending.ttls else 0.0)
                size = record.commit_size(writes)
                if size > record.MAX_RECORD_PAYLOAD:  # refused here, not in a group it would fail whole
                    raise KeyOrValueTooLargeError(f"transaction encodes to {size} bytes, the WAL limit is 4 GiB")
                kv._write(COMMIT, writes, durable, self._reader)
            elif durable and not kv._read_only:  # nothing to write, but every commit before it becomes durable
                kv._write(COMMIT, [], True, self._reader)
        finally:
            self._close()

    def abort(self) -> None:
        """Drop every buffered write and release the snapshot; does nothing on a closed transaction."""
        self._close()

    def _close(self) -> None:
        if not self._state.closed:
            self._state.closed = True
            self._finalizer()

    def __enter__(self) -> KVTX:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            if not self._closed:
                self.commit()
        else:
            self.abort()
