"""What range deletes cost: one ``delete_range`` over 100,000 keys, and reads through 1,000 range tombstones
beside the same reads without them, in one run.

    python examples/range_deletes.py [N]

Three databases read the same live rows (16-byte keys, 100-byte values): "live only" holds just the
live keys, in one table; "point deletes" holds N keys (default 100,000) in one table and, in a newer table,
10,000 of them deleted one by one; "range deletes" holds the same N keys and, in a newer table, 1,000
range tombstones over 10 keys each (so every read passes them).  Each figure is the median of five rounds.
"""

from __future__ import annotations

import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

from kvstore import KV, Config

VALUE = b"v" * 100
ROUNDS = 5


def key(i: int) -> bytes:
    return b"%016d" % i


def load(path: str, keys: list[int], config: Config) -> KV:
    kv = KV.open(path, config)
    for start in range(0, len(keys), 1000):
        with kv.new_tx() as tx:
            for i in keys[start : start + 1000]:
                tx.set(key(i), VALUE)
    kv.compact(full=True)
    return kv


def median_seconds(fn: Callable[[], object]) -> float:
    times = []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(n: int) -> None:
    config = Config(background=False, sync=False)
    rng = random.Random(1)
    with tempfile.TemporaryDirectory() as tmp:
        big = load(os.path.join(tmp, "big"), list(range(n)), Config(background=False))
        start = time.perf_counter()
        big.delete_range(key(0), key(n))  # durable: one log record and its fsync
        one_call = time.perf_counter() - start
        assert big.get(key(n // 2)) is None and next(iter(big.scan()), None) is None
        big.close()
        print(f"delete_range over {n:,} keys, one call (sync=True): {one_call * 1e3:.2f} ms")

        step = n // 1000
        live = [i for i in range(n) if i % step >= 10]
        only = load(os.path.join(tmp, "only"), live, config)
        points = load(os.path.join(tmp, "points"), list(range(n)), config)
        ranged = load(os.path.join(tmp, "ranged"), list(range(n)), config)
        for t in range(1000):  # 1,000 tombstones over 10 keys each, spread over the key space
            lo = t * step
            ranged.delete_range(key(lo), key(lo + 10))
            with points.new_tx() as tx:
                for i in range(lo, lo + 10):
                    tx.delete(key(i))
        dbs = (only, points, ranged)
        for kv in dbs:
            kv.flush()
        probes = [key(rng.choice(live)) for _ in range(20_000)]
        starts = [key(rng.randrange(n)) for _ in range(2_000)]
        assert list(only.scan()) == list(points.scan()) == list(ranged.scan())
        print(f"tables: {', '.join(str(len(kv.stats().tables)) for kv in dbs)}; {len(live):,} live keys; "
              f"median of {ROUNDS} rounds, per read")
        print(f"{'read':<28}{'live only':>12}{'point deletes':>16}{'range deletes':>16}")
        for name, per, fn in (
            ("get (a live key)", len(probes), lambda kv: [kv.get(k) for k in probes]),
            ("scan, every row", len(live), lambda kv: sum(1 for _ in kv.scan())),
            ("scan reverse, every row", len(live), lambda kv: sum(1 for _ in kv.scan(reverse=True))),
            ("seek + 10 rows", len(starts), lambda kv: [list(zip(range(10), kv.scan(s))) for s in starts]),
        ):
            cells = [median_seconds(lambda kv=kv, fn=fn: fn(kv)) / per * 1e6 for kv in dbs]
            print(f"{name:<28}" + "".join(f"{c:>13.2f} us" for c in cells))
        for kv in dbs:
            kv.close()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
