"""The asyncio API: ``AsyncKV``, its transactions, scans and cursors, as coroutines over one ``KV``.

    >>> import asyncio, tempfile
    >>> from kvstore.aio import AsyncKV
    >>> async def main(path):
    ...     async with await AsyncKV.open(path) as kv:
    ...         await kv.set(b"a", b"1")
    ...         async with kv.new_tx() as tx:
    ...             await tx.set(b"b", b"2")
    ...         return [pair async for pair in kv.scan()]
    >>> asyncio.run(main(tempfile.mkdtemp()))
    [(b'a', b'1'), (b'b', b'2')]

Every call that may touch a file (a read that misses the block cache, a
commit, its fsync, a flush, a merge, a close) runs on the ``AsyncKV``'s own
threads (``loop.run_in_executor``), never on the event loop; what only takes a
lock for a moment (starting a scan or a transaction, buffering a transaction's
``set``) runs on the loop.  Semantics are the sync API's, on the same engine:
concurrent coroutines' durable commits are concurrent commits of the write
queue and share fsyncs as threads' do.  Scans fetch their rows in batches
(16 rows first, growing to 1,024), so ``async for`` costs little per row.

Cancellation: a coroutine cancelled while a call it awaits runs on a thread
leaves that call running to its end (``asyncio.shield``): a write is then
applied or not as if nothing had been cancelled.  ``await tx.outcome()``
waits for a transaction's commit and says which (DESIGN.md, "The asyncio API").
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from types import TracebackType
from typing import TypeVar

from kvstore.aiorun import Runner, Sets
from kvstore.collection import Collection
from kvstore.config import Config
from kvstore.core import closed_error
from kvstore.cursor import Cursor
from kvstore.errors import ConflictError, FailedError, TxClosedError
from kvstore.fs import FileSystem
from kvstore.keys import Bytes
from kvstore.store import KV, Stats
from kvstore.trace import Trace
from kvstore.transaction import KVTX

__all__ = ["AsyncCollection", "AsyncCursor", "AsyncKV", "AsyncKVTX", "AsyncScan"]

T = TypeVar("T")

#: Threads an ``AsyncKV`` runs its calls on, at most: as many durable commits can wait on one fsync.
DEFAULT_THREADS = 64
#: Rows a scan fetches in its first batch (a seek reads a few), then four times as many up to ``_BATCH``.
_FIRST_BATCH = 16
_BATCH = 1024


class AsyncKV:
    """A ``KV`` for asyncio code.  Open one with ``await AsyncKV.open(path, config)``.

    ``async with`` closes it at the end of the block.  Every method is a
    coroutine but ``scan`` and ``new_tx``, which start something on the loop
    (they take a snapshot, which never waits on a file).
    After ``close()`` every call raises ``ClosedError``, as the sync KV's.
    The sync ``KV`` underneath is ``kv.sync`` (for calls from other threads).
    """

    def __init__(self, kv: KV, runner: Runner) -> None:
        self.sync = kv
        """The sync ``KV`` these coroutines drive; other threads may use it too."""
        self._runner = runner
        self._sets = Sets(kv, runner)

    @classmethod
    async def open(cls, path: str | os.PathLike[str], config: Config | None = None, *,
                   fs: FileSystem | None = None, clock: Callable[[], float] = time.time,
                   threads: int = DEFAULT_THREADS) -> AsyncKV:
        """Open (or create) the database at ``path`` on a thread, as ``KV.open`` does, raising what it
        raises; ``threads`` bounds the threads its calls run on (``ValueError`` below 1)."""
        if isinstance(threads, bool) or not isinstance(threads, int):
            raise TypeError(f"threads must be an int, not {type(threads).__name__}")
        if threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        runner = Runner(threads)
        try:
            kv = await runner.run(functools.partial(KV.open, path, config, fs=fs, clock=clock))
        except BaseException:
            runner.pool.shutdown(wait=False)
            raise
        return cls(kv, runner)

    async def __aenter__(self) -> AsyncKV:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the KV on a thread (``KV.close``: waits for commits and background work, flushes, lets go
        of the lock); idempotent.  Later calls raise ``ClosedError``."""
        runner = self._runner
        if runner.closed:
            return
        try:
            await runner.run(self.sync.close)
        finally:
            runner.closed = True
            runner.pool.shutdown(wait=False)

    # ---------------------------------------------------------------- one-operation calls

    async def get(self, key: Bytes) -> bytes | None:
        """``KV.get``: the value, or None.  Answered on the loop when every block it needs is in the
        cache (no file is read), else on a thread."""
        return await self._runner.read(self.sync.get, key)

    async def ttl(self, key: Bytes) -> float | None:
        """``KV.ttl``: seconds left before ``key`` expires, or None (read as ``get`` is)."""
        return await self._runner.read(self.sync.ttl, key)

    async def set(self, key: Bytes, value: Bytes, *, ttl: float | None = None) -> None:
        """``KV.set``: returns once committed (durable per ``Config.sync``).  Sets that coroutines make
        while one is being committed are committed together next, as one write (``Sets``)."""
        await self._sets.set(key, value, ttl)

    async def delete(self, key: Bytes) -> bool:
        """``KV.delete``: True when the key existed."""
        return await self._runner.run(self.sync.delete, key)

    async def delete_range(self, start: Bytes, end: Bytes) -> None:
        """``KV.delete_range``: every key in ``[start, end)``, as one write."""
        await self._runner.run(self.sync.delete_range, start, end)

    async def flush(self) -> None:
        """``KV.flush`` on a thread."""
        await self._runner.run(self.sync.flush)

    async def compact(self, *, full: bool = False) -> None:
        """``KV.compact`` on a thread."""
        await self._runner.run(functools.partial(self.sync.compact, full=full))

    async def stats(self) -> Stats:
        """``KV.stats`` on a thread."""
        return await self._runner.run(self.sync.stats)

    async def metrics_text(self) -> str:
        """``KV.metrics_text`` on a thread."""
        return await self._runner.run(self.sync.metrics_text)

    async def trace(self, key: Bytes, *, collection: str | None = None) -> Trace:
        """``KV.trace`` on a thread (a traced lookup may read blocks)."""
        return await self._runner.run(functools.partial(self.sync.trace, key, collection=collection))

    async def check(self) -> list[str]:
        """``KV.check`` on a thread: every problem found, empty when healthy."""
        return await self._runner.run(self.sync.check)

    async def backup(self, dest: str | os.PathLike[str]) -> list[tuple[str, str]]:
        """``KV.backup`` to ``dest`` on a thread."""
        return await self._runner.run(self.sync.backup, dest)

    # ---------------------------------------------------------------- reads that go on

    def scan(self, start: Bytes | None = None, end: Bytes | None = None, *, prefix: Bytes | None = None,
             reverse: bool = False) -> AsyncScan:
        """``KV.scan`` as an async iterator of ``(key, value)``: its snapshot is taken now."""
        self._check_open()
        return AsyncScan(self.sync.scan(start, end, prefix=prefix, reverse=reverse), self._runner)

    async def seek(self, key: Bytes = b"") -> AsyncCursor:
        """``KV.seek``: a cursor on the first key ``>= key``, positioned on a thread."""
        return AsyncCursor(await self._runner.run(self.sync.seek, key), self._runner)

    async def seek_for_prev(self, key: Bytes) -> AsyncCursor:
        """``KV.seek_for_prev``: a cursor on the last key ``<= key``."""
        return AsyncCursor(await self._runner.run(self.sync.seek_for_prev, key), self._runner)

    # ---------------------------------------------------------------- transactions

    def new_tx(self) -> AsyncKVTX:
        """A transaction reading the snapshot of now (``KV.new_tx``); ``async with`` commits it on a normal
        exit and aborts it on an exception."""
        self._check_open()
        return AsyncKVTX(self.sync.new_tx(), self._runner)

    async def transact(self, fn: Callable[[AsyncKVTX], Awaitable[T]], *, attempts: int = 10) -> T:
        """Run ``await fn(tx)`` in a new transaction and commit it, again in a fresh one on
        ``ConflictError``, at most ``attempts`` times in all (``KV.transact``); returns ``fn``'s result."""
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        for attempt in range(attempts):
            tx = self.new_tx()
            try:
                result = await fn(tx)
                if not tx.closed:
                    await tx.commit()
                return result
            except ConflictError:
                if attempt == attempts - 1:
                    raise
            finally:
                tx.abort()
        raise AssertionError("unreachable")

    def collection(self, name: str) -> AsyncCollection:
        """The collection ``name`` (``KV.collection``) with the calls of this ``AsyncKV``; its sets join the
        same batches."""
        self._check_open()
        return AsyncCollection(self.sync.collection(name), self._runner, self._sets)

    def _check_open(self) -> None:
        if self._runner.closed:
            raise closed_error()


class AsyncCollection:
    """A ``Collection`` for asyncio code: its calls as coroutines, run where ``AsyncKV``'s (or
    ``AsyncKVTX``'s) run."""

    def __init__(self, collection: Collection, runner: Runner, sets: Sets | None) -> None:
        self.sync = collection
        """The sync ``Collection`` underneath."""
        self._runner = runner
        self._sets = sets  # the AsyncKV's batches; None in a transaction, where sets are buffered

    @property
    def name(self) -> str:
        """The collection's name."""
        return self.sync.name

    async def get(self, key: Bytes) -> bytes | None:
        """``Collection.get`` (on the loop when the cache holds what it reads)."""
        return await self._runner.read(self.sync.get, key)

    async def ttl(self, key: Bytes) -> float | None:
        """``Collection.ttl``."""
        return await self._runner.read(self.sync.ttl, key)

    async def set(self, key: Bytes, value: Bytes, *, ttl: float | None = None) -> None:
        """``Collection.set``: in a KV, committed in the ``AsyncKV``'s batches; in a transaction, buffered."""
        if self._sets is None:
            if self._runner.closed:
                raise closed_error()
            self.sync.set(key, value, ttl=ttl)
        else:
            await self._sets.set(key, value, ttl, self.sync._space)

    async def delete(self, key: Bytes) -> bool:
        """``Collection.delete``: True when the key existed."""
        return await self._runner.run(self.sync.delete, key)

    async def delete_range(self, start: Bytes, end: Bytes) -> None:
        """``Collection.delete_range``."""
        if self._sets is None:
            if self._runner.closed:
                raise closed_error()
            self.sync.delete_range(start, end)
        else:
            await self._runner.run(self.sync.delete_range, start, end)

    def scan(self, start: Bytes | None = None, end: Bytes | None = None, *, prefix: Bytes | None = None,
             reverse: bool = False) -> AsyncScan:
        """``Collection.scan`` as an async iterator."""
        if self._runner.closed:
            raise closed_error()
        return AsyncScan(self.sync.scan(start, end, prefix=prefix, reverse=reverse), self._runner)

    async def seek(self, key: Bytes = b"") -> AsyncCursor:
        """``Collection.seek``."""
        return AsyncCursor(await self._runner.run(self.sync.seek, key), self._runner)

    async def seek_for_prev(self, key: Bytes) -> AsyncCursor:
        """``Collection.seek_for_prev``."""
        return AsyncCursor(await self._runner.run(self.sync.seek_for_prev, key), self._runner)


class AsyncScan:
    """An async iterator over a ``KV.scan`` or ``KVTX.scan``: rows fetched on a thread in batches.

    ``aclose()`` (or ``async with``) lets its snapshot go early, as ``close()`` does on the sync scan."""

    def __init__(self, scan: Iterator[tuple[bytes, bytes]], runner: Runner) -> None:
        self._scan = scan
        self._runner = runner
        self._rows: list[tuple[bytes, bytes]] = []
        self._at = 0
        self._want = _FIRST_BATCH
        self._done = False

    def __aiter__(self) -> AsyncScan:
        return self

    async def __anext__(self) -> tuple[bytes, bytes]:
        if self._at < len(self._rows):
            row = self._rows[self._at]
            self._at += 1
            return row
        if self._done:
            raise StopAsyncIteration
        want = self._want
        self._want = min(_BATCH, want * 4)
        rows = await self._runner.run(_take, self._scan, want)
        if len(rows) < want:
            self._done = True
        if not rows:
            raise StopAsyncIteration
        self._rows, self._at = rows, 1
        return rows[0]

    async def aclose(self) -> None:
        """Stop the scan and let its snapshot go (the sync scan's ``close()``)."""
        if self._at < len(self._rows):  # rows fetched but not handed out: the sync scan says it is closed
            self._rows, self._at, self._done = [], 0, False
        self._scan.close()  # type: ignore[attr-defined]  # a lock for a moment: no file is touched

    async def __aenter__(self) -> AsyncScan:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()


def _take(scan: Iterator[tuple[bytes, bytes]], n: int) -> list[tuple[bytes, bytes]]:
    return list(itertools.islice(scan, n))


class AsyncCursor:
    """A ``Cursor`` for asyncio code: ``valid``, ``key`` and ``value`` as on the sync cursor (what the
    last move found); ``await next()``/``await prev()`` move it on a thread; ``async for`` yields
    ``(key, value)`` from the current position forward, moving it."""

    def __init__(self, cursor: Cursor, runner: Runner) -> None:
        self._cursor = cursor
        self._runner = runner

    @property
    def valid(self) -> bool:
        """True while the cursor is on a key."""
        return self._cursor.valid

    @property
    def key(self) -> bytes:
        """The key it is on; ``InvalidCursorError`` when it is on none."""
        return self._cursor.key

    @property
    def value(self) -> bytes:
        """The value of the key it is on; ``InvalidCursorError`` when it is on none."""
        return self._cursor.value

    async def next(self) -> None:
        """One step forward (``Cursor.next``)."""
        await self._runner.run(self._cursor.next)

    async def prev(self) -> None:
        """One step backward (``Cursor.prev``)."""
        await self._runner.run(self._cursor.prev)

    async def close(self) -> None:
        """Let the snapshot go (``Cursor.close``); idempotent."""
        self._cursor.close()

    def __aiter__(self) -> AsyncIterator[tuple[bytes, bytes]]:
        return self._pairs()

    async def _pairs(self) -> AsyncIterator[tuple[bytes, bytes]]:
        cursor = self._cursor
        while cursor.valid:
            pair = (cursor.key, cursor.value)
            await self._runner.run(cursor.next)
            yield pair

    async def __aenter__(self) -> AsyncCursor:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()


class AsyncKVTX:
    """A ``KVTX`` for asyncio code: the same snapshot, buffering, conflicts and errors.

    ``async with`` commits on a normal exit and aborts when the block
    raises.  A transaction belongs to one coroutine at a time: do not run two
    of its calls at once.  Reads run on a thread; ``set`` and
    ``delete_range`` only buffer, on the loop.  A commit whose coroutine is
    cancelled runs to its end on its thread; ``await tx.outcome()`` then
    says whether it was applied.
    """

    def __init__(self, tx: KVTX, runner: Runner) -> None:
        self.sync = tx
        """The sync ``KVTX`` underneath."""
        self._runner = runner
        self._commit: asyncio.Future[None] | None = None

    @property
    def closed(self) -> bool:
        """True once committed (or a commit was started) or aborted."""
        return self._commit is not None or self.sync._closed

    async def get(self, key: Bytes) -> bytes | None:
        """``KVTX.get``: the value as this transaction sees it (on the loop when the cache holds what it
        reads, as ``AsyncKV.get``)."""
        return await self._runner.read(self.sync.get, key)

    async def ttl(self, key: Bytes) -> float | None:
        """``KVTX.ttl``."""
        return await self._runner.read(self.sync.ttl, key)

    async def set(self, key: Bytes, value: Bytes, *, ttl: float | None = None) -> None:
        """``KVTX.set``: buffered until commit (no file is touched)."""
        self._check_usable()
        self.sync.set(key, value, ttl=ttl)

    async def delete(self, key: Bytes) -> bool:
        """``KVTX.delete``: True when the key exists in this transaction's view (a read, on a thread)."""
        return await self._runner.run(self.sync.delete, key)

    async def delete_range(self, start: Bytes, end: Bytes) -> None:
        """``KVTX.delete_range``: buffered until commit."""
        self._check_usable()
        self.sync.delete_range(start, end)

    def scan(self, start: Bytes | None = None, end: Bytes | None = None, *, prefix: Bytes | None = None,
             reverse: bool = False) -> AsyncScan:
        """``KVTX.scan`` as an async iterator (this transaction's writes merged in)."""
        self._check_usable()
        return AsyncScan(self.sync.scan(start, end, prefix=prefix, reverse=reverse), self._runner)

    async def seek(self, key: Bytes = b"") -> AsyncCursor:
        """``KVTX.seek``."""
        return AsyncCursor(await self._runner.run(self.sync.seek, key), self._runner)

    async def seek_for_prev(self, key: Bytes) -> AsyncCursor:
        """``KVTX.seek_for_prev``."""
        return AsyncCursor(await self._runner.run(self.sync.seek_for_prev, key), self._runner)

    async def commit(self, *, sync: bool | None = None) -> None:
        """``KVTX.commit`` on a thread, raising what it raises.  Cancelled while in flight, the commit
        goes on to its end; ``outcome()`` tells whether it was applied."""
        self._check_usable()
        self._commit = self._runner.submit(functools.partial(self.sync.commit, sync=sync))
        await asyncio.shield(self._commit)

    async def outcome(self) -> bool:
        """Wait for this transaction's commit to end: True when it was applied, False when nothing was
        (it raised ``ConflictError`` or another error that applies nothing, or no commit was started).
        Raises ``FailedError`` when the commit failed on I/O, whose outcome is known only after a reopen."""
        if self._commit is None:
            return False
        try:
            await asyncio.shield(self._commit)
        except FailedError:
            raise
        except Exception:  # noqa: BLE001 - any other error applied nothing
            return False
        return True

    def collection(self, name: str) -> AsyncCollection:
        """The collection ``name`` as this transaction sees it (``KVTX.collection``)."""
        self._check_usable()
        return AsyncCollection(self.sync.collection(name), self._runner, None)

    def abort(self) -> None:
        """``KVTX.abort``: drop the buffered writes; does nothing on a closed transaction (nor on one whose
        commit was started)."""
        if self._commit is None:
            self.sync.abort()

    def _check_usable(self) -> None:
        if self._commit is not None:
            raise TxClosedError("the transaction is closed")
        if self._runner.closed:
            raise closed_error()

    async def __aenter__(self) -> AsyncKVTX:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if exc_type is None:
            if not self.closed:
                await self.commit()
        else:
            self.abort()

