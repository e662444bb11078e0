"""A complete kvstore workload: random fill in transactions, random reads, forward and backward scans, reopen.

    python examples/workload.py [--n 200000] [--dir DIR]

Writes ``--n`` random 16-byte keys with 100-byte values in transactions of
1,000 (4 MiB memtable, so tables are flushed and merged), reads every key back
in random order, scans the whole database forward and backward, closes and
reopens it, and checks every answer.  Prints one line per phase.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time

from kvstore import KV, Config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000, help="number of keys (default 200000)")
    parser.add_argument("--dir", help="database directory (default: a fresh temporary one, removed after)")
    args = parser.parse_args(argv)
    path = args.dir or tempfile.mkdtemp(prefix="kvstore-workload-")
    rnd = random.Random(42)
    keys = list({rnd.randbytes(16) for _ in range(args.n)})
    values = {k: rnd.randbytes(100) for k in keys}
    n = len(keys)
    config = Config(memtable_size=4 << 20, sync=False)

    def phase(name: str, ops: int, started: float) -> None:
        secs = time.perf_counter() - started
        print(f"{name:<12} {ops:>9,} ops  {secs:7.2f} s  {ops / secs:>11,.0f} ops/s")

    try:
        kv = KV.open(path, config)
        started = time.perf_counter()
        for i in range(0, n, 1000):
            with kv.new_tx() as tx:
                for k in keys[i : i + 1000]:
                    tx.set(k, values[k])
        phase("fill", n, started)
        order = keys[:]
        rnd.shuffle(order)
        started = time.perf_counter()
        for k in order:
            if kv.get(k) != values[k]:
                raise SystemExit(f"wrong value for {k!r}")
        phase("readrandom", n, started)
        expected = sorted(values.items())
        started = time.perf_counter()
        if list(kv.scan()) != expected:
            raise SystemExit("forward scan differs")
        phase("scan", n, started)
        started = time.perf_counter()
        if list(kv.scan(reverse=True)) != expected[::-1]:
            raise SystemExit("backward scan differs")
        phase("scan reverse", n, started)
        stats = kv.stats()
        kv.close()
        started = time.perf_counter()
        with KV.open(path, config) as kv:
            probe = keys[0]
            if kv.get(probe) != values[probe]:
                raise SystemExit("reopened database lost data")
            reopen_ms = (time.perf_counter() - started) * 1000
            if sum(1 for _ in kv.scan()) != n:
                raise SystemExit("reopened database has the wrong number of keys")
        print(f"reopen       {reopen_ms:.1f} ms (open + first get)")
        print(f"tables       {len(stats.tables)} ({', '.join(str(t.bytes >> 10) + ' KiB' for t in stats.tables)})")
        print(f"flushes {stats.flushes}, merges {stats.merges}, "
              f"write amplification {stats.write_amplification:.2f}, disk {stats.disk_bytes / 2**20:.1f} MiB")
        print("all answers checked: OK")
    finally:
        if not args.dir:
            shutil.rmtree(path, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
