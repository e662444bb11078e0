"""One hot path of kvstore, ``COUNT`` times, after a fixed setup: for counting instructions per operation.

    python examples/hot_paths.py OP COUNT   OP: get scan_row seek10 cursor10 set tx_commit delete fillseq

The setup is the same every run (20,000 keys written in transactions of 1,000, flushed, then 5,000 of them
set again, so a read meets the memtable and a table; flushes inline, no fsync), so the instructions a run
executes depend only on the code.  Under valgrind's callgrind, ``(Ir(OP, COUNT) - Ir(OP, 0)) / COUNT`` is
the instructions one operation costs, the same whatever else the machine is doing; DESIGN.md, "The store
split into modules", compares two checkouts so:

    PYTHONHASHSEED=0 PYTHONPATH=CHECKOUT valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        python examples/hot_paths.py get 5000
"""

from __future__ import annotations

import itertools
import random
import shutil
import sys
import tempfile

from kvstore import KV, Config

OPS = ("get", "scan_row", "seek10", "cursor10", "set", "tx_commit", "delete", "fillseq")


def main(op: str, count: int) -> None:
    if op not in OPS:
        raise SystemExit(f"OP must be one of {', '.join(OPS)}")
    rng = random.Random(1)
    keys = [b"%016d" % i for i in range(20_000)]
    rng.shuffle(keys)
    val = b"v" * 100
    path = tempfile.mkdtemp()
    kv = KV.open(path, Config(sync=False, background=False))
    try:
        for i in range(0, len(keys), 1000):
            with kv.new_tx() as tx:
                for k in keys[i : i + 1000]:
                    tx.set(k, val)
        kv.flush()
        for k in keys[:5000]:
            kv.set(k, val)
        _run(kv, op, keys[5000 : 5000 + count], count, val)
    finally:
        kv.close()
        shutil.rmtree(path)


def _run(kv: KV, op: str, probe: list[bytes], count: int, val: bytes) -> None:
    if op == "get":
        for k in probe:
            kv.get(k)
    elif op == "scan_row":
        for _ in itertools.islice(kv.scan(), count):
            pass
    elif op == "seek10":
        for s in probe:
            list(itertools.islice(kv.scan(start=s), 10))
    elif op == "cursor10":
        for s in probe:
            with kv.seek(s) as c:
                for _ in range(10):
                    _ = c.key, c.value
                    c.next()
    elif op == "set":
        for k in probe:
            kv.set(k, val)
    elif op == "tx_commit":
        for k in probe:
            with kv.new_tx() as tx:
                tx.get(k)
                tx.set(k, val)
    elif op == "fillseq":  # COUNT new keys above every other, ascending, in transactions of 1,000
        for start in range(0, count, 1000):
            with kv.new_tx() as tx:
                for i in range(start, min(count, start + 1000)):
                    tx.set(b"z%015d" % i, val)
    else:
        for k in probe:
            kv.delete(k)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
