"""The cost of a flush or a merge per entry, or of a whole fill, on one checkout: for comparing two.

    python examples/flush_merge.py CASE [--bloom BITS] [--runs N]

    flush        a memtable of 36,000 keys (16-byte keys, 100-byte values, random order) written to a table
    merge2       two tables (100,000 and 60,000 keys, drawn from 400,000) merged into one by compact(full=True)
    merge4       four tables (100,000, 80,000, 60,000 and 40,000 keys) likewise
    merge2snap   merge2 with a transaction open since the oldest table was written (its snapshot is live,
    merge4snap   so the versions it reads are kept)
    fill         a whole process: 1,000,000 keys in ascending order in transactions of 1,000, then 100,000
                 single sets of random existing keys, then close(); Config(sync=False), background threads

A flush or merge runs inline (``Config(background=False)``) on an in-memory file system (``SimFS``: no
disk, no fsync, only the engine's own work) and is timed alone, in CPU seconds of the process, divided by
the entries it reads; the figure printed is the median of ``--runs`` runs in microseconds.  ``fill``
prints wall-clock seconds of each phase and the process's CPU seconds.  DESIGN.md, "Flushes and merges in
chunks", compares two checkouts so:

    PYTHONPATH=CHECKOUT python examples/flush_merge.py merge4 --runs 5

and counts instructions per entry, which do not depend on the machine's load, as ``(Ir(CASE) - Ir(CASE
--setup-only)) / entries`` under valgrind's callgrind with ``--runs 1`` and ``PYTHONHASHSEED=0``.
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import tempfile
import time

from kvstore import KV, Config
from kvstore.simfs import SimFS

CASES = ("flush", "merge2", "merge4", "merge2snap", "merge4snap", "fill")
VALUE = b"v" * 100
TABLES = {"merge2": (100_000, 60_000), "merge4": (100_000, 80_000, 60_000, 40_000)}


def _write(kv: KV, keys: list[bytes]) -> None:
    for i in range(0, len(keys), 1000):
        with kv.new_tx() as tx:
            for key in keys[i : i + 1000]:
                tx.set(key, VALUE)


def flush_once(config: Config, seed: int, setup_only: bool = False) -> float:
    """CPU seconds per entry of flushing a memtable of 36,000 keys."""
    rng = random.Random(seed)
    keys = [b"%016d" % k for k in rng.sample(range(10_000_000), 36_000)]
    with KV.open("/db", config, fs=SimFS()) as kv:
        _write(kv, keys)
        if setup_only:
            return 0.0
        start = time.process_time()
        kv.flush()
        return (time.process_time() - start) / len(keys)


def merge_once(config: Config, sizes: tuple[int, ...], snapshot: bool, seed: int, setup_only: bool = False) -> float:
    """CPU seconds per entry read of merging tables of ``sizes`` keys (oldest first) into one."""
    rng = random.Random(seed)
    with KV.open("/db", config, fs=SimFS()) as kv:
        held = None
        for size in sizes:  # each older table larger than the next newer one: the policy merges none
            _write(kv, [b"%016d" % k for k in sorted(rng.sample(range(400_000), size))])
            kv.flush()
            if snapshot and held is None:
                held = kv.new_tx()
                held.get(b"")
        assert len(kv.stats().tables) == len(sizes), kv.stats().tables
        if setup_only:
            return 0.0
        start = time.process_time()
        kv.compact(full=True)
        spent = time.process_time() - start
        if held is not None:
            held.abort()
        return spent / sum(sizes)


def fill() -> None:
    """Wall-clock seconds of 10^6 ascending keys in transactions of 1,000, 10^5 single sets, close()."""
    path = tempfile.mkdtemp()
    rng = random.Random(1)
    try:
        cpu = time.process_time()
        start = time.perf_counter()
        kv = KV.open(path, Config(sync=False))
        _write(kv, [b"%016d" % i for i in range(1_000_000)])
        filled = time.perf_counter()
        for i in rng.choices(range(1_000_000), k=100_000):
            kv.set(b"%016d" % i, VALUE)
        overwritten = time.perf_counter()
        kv.close()
        end = time.perf_counter()
        print(f"fillseq {filled - start:.2f} s, overwrite {overwritten - filled:.2f} s, "
              f"close {end - overwritten:.2f} s, total {end - start:.2f} s wall, "
              f"{time.process_time() - cpu:.2f} s CPU")
    finally:
        shutil.rmtree(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("case", choices=CASES)
    parser.add_argument("--bloom", type=int, default=10, help="Config.bloom_bits_per_key (default 10)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--setup-only", action="store_true", help="stop before the flush or merge")
    args = parser.parse_args()
    if args.case == "fill":
        fill()
        return
    config = Config(sync=False, background=False, memtable_size=1 << 30, bloom_bits_per_key=args.bloom)
    results = []
    for run in range(args.runs):
        if args.case == "flush":
            results.append(flush_once(config, run, args.setup_only))
        else:
            sizes = TABLES[args.case.removesuffix("snap")]
            results.append(merge_once(config, sizes, args.case.endswith("snap"), run, args.setup_only))
    print(f"{args.case} bloom={args.bloom}: {statistics.median(results) * 1e6:.3f} us per entry "
          f"(runs: {', '.join(f'{r * 1e6:.3f}' for r in results)})")


if __name__ == "__main__":
    main()
