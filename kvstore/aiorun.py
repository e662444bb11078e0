"""Where the asyncio API's calls run: ``Runner``, the threads of one ``AsyncKV`` (a point read tried on
the event loop first, with file reads forbidden), and ``Sets``, which batches the one-operation sets of
many coroutines into one transaction of blind writes per commit (DESIGN.md, "The asyncio API").
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import functools
from collections.abc import Callable
from typing import Any, TypeVar

from kvstore.commit import GROUP_BYTES
from kvstore.core import closed_error
from kvstore.expiry import check_ttl
from kvstore.keys import Bytes
from kvstore.keyspace import Space
from kvstore.sorted_file import NO_READS, WouldRead
from kvstore.store import KV

__all__ = ["Runner", "Sets"]

T = TypeVar("T")


class Runner:
    """The threads an ``AsyncKV`` and everything opened on it run their calls on."""

    __slots__ = ("pool", "closed")

    def __init__(self, threads: int) -> None:
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="kvstore-aio")
        self.closed = False

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on a thread; a cancelled caller leaves it running to its end."""
        if self.closed:
            raise closed_error()
        return await asyncio.shield(self.submit(fn, *args))

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)``, a point read: on the loop when it needs no block the cache does not hold (a
        read from memory costs less than a trip to a thread), else on a thread."""
        if self.closed:
            raise closed_error()
        NO_READS.cached_only = True
        try:
            return fn(*args)
        except WouldRead:
            pass
        finally:
            NO_READS.cached_only = False
        return await self.run(fn, *args)

    def submit(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """``fn(*args)`` started on a thread now, as a future of this loop."""
        if self.closed:
            raise closed_error()
        future = asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)
        future.add_done_callback(_retrieved)  # a cancelled caller's error is not "never retrieved"
        return future


def _retrieved(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


class Sets:
    """The one-operation sets of an ``AsyncKV``'s coroutines, committed on a thread one batch at a time:
    the sets made while a batch commits form the next (up to ``GROUP_BYTES`` of keys and values), which
    commits as one transaction of blind writes (no conflict possible): one WAL record and at most one
    fsync for all of them.  Each set is checked on the loop first, so a bad one raises alone."""

    __slots__ = ("kv", "runner", "queue", "busy")

    def __init__(self, kv: KV, runner: Runner) -> None:
        self.kv = kv
        self.runner = runner
        self.queue: collections.deque[tuple[bytes, bytes, float | None, asyncio.Future[None]]] = collections.deque()
        self.busy = False

    async def set(self, key: Bytes, value: Bytes, ttl: float | None, space: Space | None = None) -> None:
        kv = self.kv
        # a lock-free check: raises alone, before any batch; the key is then the stored key
        key, value = kv._stored(kv._key(key), kv._own_space if space is None else space), kv._value(value)
        if ttl is not None:
            ttl = check_ttl(ttl)
        if self.runner.closed:
            raise closed_error()
        kv._check_writable()
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.queue.append((key, value, ttl, done))
        if not self.busy:
            self._next()
        await asyncio.shield(done)  # cancelled, the set is still committed or not with its batch

    def _next(self) -> None:
        """Start committing the next batch on a thread, or stop when none waits (on the loop)."""
        queue = self.queue
        if not queue:
            self.busy = False
            return
        self.busy = True
        batch = [queue.popleft()]
        size = len(batch[0][0]) + len(batch[0][1])
        while queue and size < GROUP_BYTES:
            item = queue.popleft()
            size += len(item[0]) + len(item[1])
            batch.append(item)
        try:
            future = self.runner.submit(self._commit, [item[:3] for item in batch])
        except BaseException as exc:  # noqa: BLE001 - closed: every member is told
            self._answer(batch, exc)
            self._next()
            return
        future.add_done_callback(functools.partial(self._finished, batch))

    def _commit(self, writes: list[tuple[bytes, bytes, float | None]]) -> None:
        tx = self.kv.new_tx()
        try:
            for key, value, ttl in writes:
                tx._put(key, value, ttl)  # stored keys, checked when they were queued
            tx.commit()
        finally:
            tx.abort()

    def _finished(self, batch: list[tuple[bytes, bytes, float | None, asyncio.Future[None]]],
                  future: asyncio.Future[None]) -> None:
        self._answer(batch, None if future.cancelled() else future.exception())
        self._next()

    @staticmethod
    def _answer(batch: list[tuple[bytes, bytes, float | None, asyncio.Future[None]]],
                error: BaseException | None) -> None:
        for item in batch:
            done = item[3]
            if done.done():
                continue
            if error is None:
                done.set_result(None)
            else:
                done.set_exception(error)
