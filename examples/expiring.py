"""What expiring keys cost: writes with a ttl beside writes without, and reads of a database whose keys
all expire (later) beside one whose keys never do, in one run.

    python examples/expiring.py [N]

Two databases of N keys (default 100,000; 16-byte keys, 100-byte values), loaded in transactions of
1,000: "plain" sets every key without a ttl, "ttl" with a ttl of an hour.  Each is read once from its
memtable state and once after a full compaction (one table).  Then half of the "ttl" keys expire (a
clock moved past their expiry) and the reads run again, and a full compaction drops them.  Each figure is
the median of five rounds.
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


class Clock:
    """``time.time`` plus an offset the run moves."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


def key(i: int) -> bytes:
    return b"%016d" % i


def median_seconds(fn: Callable[[], object]) -> float:
    times = []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def load(kv: KV, n: int, ttl: float | None, expire_half: bool) -> float:
    """Set keys 0..n-1 (with ``ttl``; the odd ones with a ttl of 1 s when ``expire_half``); seconds taken."""
    start = time.perf_counter()
    for first in range(0, n, 1000):
        with kv.new_tx() as tx:
            for i in range(first, min(n, first + 1000)):
                tx.set(key(i), VALUE, ttl=1.0 if expire_half and i % 2 else ttl)
    return time.perf_counter() - start


def reads(kv: KV, n: int, rng: random.Random) -> dict[str, float]:
    """Microseconds per get, per scanned row (both ways) and per seek + 10 rows."""
    probes = [key(rng.randrange(n)) for _ in range(20_000)]
    seeks = probes[:2_000]

    def gets() -> None:
        get = kv.get
        for k in probes:
            get(k)

    def scan() -> int:
        return sum(1 for _ in kv.scan())

    def reverse() -> int:
        return sum(1 for _ in kv.scan(reverse=True))

    def seek10() -> None:
        for k in seeks:
            with kv.seek(k) as cursor:
                for _ in range(10):
                    if not cursor.valid:
                        break
                    cursor.next()

    rows = max(1, scan())
    return {"get": median_seconds(gets) / len(probes) * 1e6, "scan": median_seconds(scan) / rows * 1e6,
            "reverse": median_seconds(reverse) / rows * 1e6, "seek+10": median_seconds(seek10) / len(seeks) * 1e6}


def main(n: int) -> None:
    config = Config(background=False, sync=False, memtable_size=64 << 20)
    rng = random.Random(1)
    table: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        clock = Clock()
        with KV.open(os.path.join(tmp, "plain"), config, clock=clock) as plain, \
                KV.open(os.path.join(tmp, "ttl"), config, clock=clock) as ttl:
            writes = {"plain": load(plain, n, None, False), "ttl": load(ttl, n, 3600.0, False)}
            table["plain, memtable"] = reads(plain, n, rng)
            table["ttl, memtable"] = reads(ttl, n, rng)
            plain.compact(full=True)
            ttl.compact(full=True)
            table["plain, one table"] = reads(plain, n, rng)
            table["ttl, one table"] = reads(ttl, n, rng)
        with KV.open(os.path.join(tmp, "half"), config, clock=clock) as half:
            load(half, n, 3600.0, True)
            half.compact(full=True)
            clock.offset = 2.0  # the odd keys' expiry passed
            table["half expired, one table"] = reads(half, n, rng)
            start = time.perf_counter()
            half.compact(full=True)
            merge = time.perf_counter() - start
            stats = half.stats()
            assert stats.expired == n // 2 and sum(t.entries for t in stats.tables) == n - n // 2
            table["after the merge dropped them"] = reads(half, n, rng)
    print(f"{n:,} keys; set in transactions of 1,000: without ttl {writes['plain'] / n * 1e6:.2f} us, "
          f"with ttl {writes['ttl'] / n * 1e6:.2f} us per key")
    print(f"full compaction dropping {n // 2:,} expired keys: {merge * 1e3:.0f} ms")
    print()
    print("| database | get | scan row | reverse row | seek + 10 rows |")
    print("|---|---:|---:|---:|---:|")
    for name, row in table.items():
        print(f"| {name} | {row['get']:.2f} us | {row['scan']:.2f} us | {row['reverse']:.2f} us "
              f"| {row['seek+10']:.2f} us |")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
