"""What an ``await`` on kvstore.aio costs, beside the sync call, in one process.

    python examples/asyncio_costs.py [--n 20000]

Loads ``--n`` keys (16-byte keys, 100-byte values), then times, one after the other: sync ``kv.get``;
``await kv.get`` from one coroutine; ``await kv.get`` from 64 coroutines at once; a thread trip that does
nothing (``run_in_executor`` of a no-op, what every awaited read pays beside the read); and
``await tx.set`` (buffered on the loop).  Prints microseconds per operation and operations per second.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time

from kvstore import Config
from kvstore.aio import AsyncKV


async def main(n: int) -> None:
    keys = [b"%016d" % i for i in range(n)]
    order = keys[:]
    random.Random(1).shuffle(order)
    async with await AsyncKV.open(tempfile.mkdtemp(), Config(sync=False)) as kv:
        for i in range(0, n, 1000):
            async with kv.new_tx() as tx:
                for k in keys[i : i + 1000]:
                    await tx.set(k, b"v" * 100)
        await kv.flush()
        sync = kv.sync
        for k in order:  # warm the block cache, so every figure below reads cached blocks
            sync.get(k)

        def line(name: str, ops: int, secs: float) -> None:
            print(f"{name:<34} {secs / ops * 1e6:9.2f} us/op {ops / secs:12,.0f} ops/s")

        t = time.perf_counter()
        for k in order:
            sync.get(k)
        line("sync kv.get", n, time.perf_counter() - t)
        t = time.perf_counter()
        for k in order:
            await kv.get(k)
        line("await kv.get, one coroutine", n, time.perf_counter() - t)
        per = n // 64

        async def reader(part: list[bytes]) -> None:
            for k in part:
                await kv.get(k)

        t = time.perf_counter()
        await asyncio.gather(*(reader(order[c * per : (c + 1) * per]) for c in range(64)))
        line("await kv.get, 64 coroutines", per * 64, time.perf_counter() - t)
        loop = asyncio.get_running_loop()
        pool = kv._runner.pool
        t = time.perf_counter()
        for _ in range(n):
            await loop.run_in_executor(pool, int)
        line("a thread trip doing nothing", n, time.perf_counter() - t)
        tx = kv.new_tx()
        t = time.perf_counter()
        for k in order:
            await tx.set(k, b"w" * 100)
        line("await tx.set (buffered)", n, time.perf_counter() - t)
        tx.abort()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="number of keys (default 20000)")
    asyncio.run(main(parser.parse_args().n))
