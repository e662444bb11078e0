"""A db_bench-style benchmark of kvstore, optionally side by side with the standard library's sqlite3.

    python -m kvstore.bench [--num N] [--value-size B] [--benchmarks a,b] [--compare sqlite3]
                            [--db DIR] [--json FILE]

The workloads are those of LevelDB's db_bench, with the definitions of the
project's side-by-side harness (16-byte keys ``b"%016d" % i``, values cut from a
buffer of random bytes, fills in batches of 1000 with sync off, scans in
chunks of 1000 rows); DESIGN.md ("Performance") describes each one.  Every
workload checks what it did (a read of an existing key found it, a scan saw
every row), and the run reports write amplification, disk bytes, peak RSS and
reopen time beside the timings.  Each line reads as db_bench's do::

    fillrandom   :       9.412 micros/op;   12.2 MB/s

Cost: about ten passes over ``--num`` keys per engine; the fill directories
live under ``--db`` (a temporary directory, removed afterwards, by default).
"""

from __future__ import annotations

import argparse
import array
import asyncio
import concurrent.futures
import itertools
import json
import os
import random
import resource
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from kvstore.aio import AsyncKV
from kvstore.config import Config
from kvstore.store import KV

__all__ = ["WORKLOADS", "main"]

BATCH = 1000  # puts per transaction in the fills
SCAN_CHUNK = 1000  # rows per scan in readseq and readreverse
SEEK_NEXT = 10  # rows read after each seek in seekrandom
THREADS = 8  # writer threads in concurrent_sync
COROUTINES = 64  # writer coroutines in concurrent_async
KEY_SIZE = 16

#: name -> what it does (ops counted as in db_bench)
WORKLOADS: dict[str, str] = {
    "fillseq": "N puts, ascending keys, batches of 1000, sync off",
    "fillrandom": "N puts, random order, batches of 1000, sync off",
    "overwrite": "N single puts of random existing keys, sync off",
    "readrandom": "N gets of random existing keys",
    "readmissing": "N gets of absent keys",
    "readseq": "full scan in key order, chunks of 1000 (ops = rows)",
    "readreverse": "full scan in descending key order, chunks of 1000 (ops = rows)",
    "seekrandom": "N/10 seeks to random existing keys, each reading 10 rows (ops = seeks)",
    "fillsync": "N/100 single puts, each durable (fsync) before returning",
    "concurrent_sync": "8 threads x N/400 single durable puts (ops = commits, all threads)",
    "concurrent_async": "64 coroutines x N/3200 single durable puts (kvstore.aio; ops = commits, all coroutines)",
}
# the workloads that run on the database fillrandom loads
_MAIN_DB = ("fillrandom", "overwrite", "readrandom", "readmissing", "readseq", "readreverse", "seekrandom")
ENGINES = ("kvstore", "sqlite3")

Pairs = list[tuple[bytes, bytes]]


def key_of(i: int) -> bytes:
    """The key of index ``i``: 16 decimal digits."""
    return b"%016d" % i


def missing_key_of(i: int) -> bytes:
    """A key between existing ones (15 digits and a dot) that never equals one."""
    return b"%015d." % i


class _Values:
    """Values cut from 1 MiB of random bytes (incompressible), one after another."""

    def __init__(self, size: int, seed: int = 301) -> None:
        self.size = size
        self.buf = random.Random(seed).randbytes(max(1 << 20, 2 * size))
        self.pos = 0

    def next(self) -> bytes:
        p = self.pos
        if p + self.size > len(self.buf):
            p = 0
        self.pos = p + self.size
        return self.buf[p : p + self.size]


# ---------------------------------------------------------------- engines


class _Engine:
    """One engine under test: the few operations the workloads use."""

    name = ""

    def put(self, key: bytes, value: bytes) -> None:
        raise NotImplementedError

    def write_batch(self, items: Pairs) -> None:
        raise NotImplementedError

    def get(self, key: bytes) -> bytes | None:
        raise NotImplementedError

    def scan(self, start: bytes, n: int) -> Pairs:
        """Up to ``n`` pairs with key ``>= start``, ascending."""
        raise NotImplementedError

    def scan_back(self, end: bytes | None, n: int) -> Pairs:
        """Up to ``n`` pairs with key ``< end`` (every key when None), descending."""
        raise NotImplementedError

    def stats(self) -> dict[str, float]:
        """Engine counters worth reporting (taken before ``close``)."""
        return {}

    def close(self) -> None:
        raise NotImplementedError


class _KVStore(_Engine):
    name = "kvstore"

    def __init__(self, path: str, sync: bool) -> None:
        self.kv = KV.open(path, Config(sync=sync))

    def put(self, key: bytes, value: bytes) -> None:
        self.kv.set(key, value)

    def write_batch(self, items: Pairs) -> None:
        with self.kv.new_tx() as tx:
            put = tx.set
            for key, value in items:
                put(key, value)

    def get(self, key: bytes) -> bytes | None:
        return self.kv.get(key)

    def scan(self, start: bytes, n: int) -> Pairs:
        return list(itertools.islice(self.kv.scan(start=start), n))

    def scan_back(self, end: bytes | None, n: int) -> Pairs:
        return list(itertools.islice(self.kv.scan(end=end, reverse=True), n))

    def stats(self) -> dict[str, float]:
        s = self.kv.stats()
        return {"write_amplification": round(s.write_amplification, 3), "tables": len(s.tables),
                "flushes": s.flushes, "merges": s.merges}

    def close(self) -> None:
        self.kv.close()


class _SQLite(_Engine):
    """sqlite3 as the side-by-side harness runs it: WAL journal, a WITHOUT ROWID table, one connection."""

    name = "sqlite3"

    def __init__(self, path: str, sync: bool) -> None:
        os.makedirs(path, exist_ok=True)
        self.lock = threading.Lock()
        self.c = sqlite3.connect(os.path.join(path, "kv.sqlite"), isolation_level=None, check_same_thread=False)
        self.c.execute("PRAGMA journal_mode=WAL")
        self.c.execute(f"PRAGMA synchronous={'FULL' if sync else 'OFF'}")
        self.c.execute("CREATE TABLE IF NOT EXISTS kv(k BLOB PRIMARY KEY, v BLOB) WITHOUT ROWID")

    def put(self, key: bytes, value: bytes) -> None:
        with self.lock:
            self.c.execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", (key, value))

    def write_batch(self, items: Pairs) -> None:
        with self.lock:
            self.c.execute("BEGIN")
            self.c.executemany("INSERT OR REPLACE INTO kv VALUES (?, ?)", items)
            self.c.execute("COMMIT")

    def get(self, key: bytes) -> bytes | None:
        with self.lock:
            row = self.c.execute("SELECT v FROM kv WHERE k = ?", (key,)).fetchone()
        return None if row is None else bytes(row[0])

    def scan(self, start: bytes, n: int) -> Pairs:
        with self.lock:
            return self.c.execute("SELECT k, v FROM kv WHERE k >= ? ORDER BY k LIMIT ?", (start, n)).fetchall()

    def scan_back(self, end: bytes | None, n: int) -> Pairs:
        with self.lock:
            if end is None:
                return self.c.execute("SELECT k, v FROM kv ORDER BY k DESC LIMIT ?", (n,)).fetchall()
            return self.c.execute("SELECT k, v FROM kv WHERE k < ? ORDER BY k DESC LIMIT ?", (end, n)).fetchall()

    def close(self) -> None:
        self.c.close()


_ENGINE_CLASSES: dict[str, Callable[[str, bool], _Engine]] = {"kvstore": _KVStore, "sqlite3": _SQLite}


# ---------------------------------------------------------------- workloads


def _shuffled(n: int, seed: int) -> array.array[int]:
    a = array.array("I", range(n))
    random.Random(seed).shuffle(a)
    return a


def _random_indices(rng: random.Random, count: int, upper: int) -> array.array[int]:
    a: array.array[int] = array.array("I")
    population = range(upper)
    while len(a) < count:
        a.extend(rng.choices(population, k=min(65536, count - len(a))))
    return a


def _disk_bytes(path: str) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class _Run:
    """The workloads of one engine, in db_bench's order, with their figures in ``result``."""

    def __init__(self, engine: str, num: int, value_size: int, root: str) -> None:
        self.make = _ENGINE_CLASSES[engine]
        self.engine = engine
        self.num = num
        self.value_size = value_size
        self.root = root
        self.values = _Values(value_size)
        self.result: dict[str, Any] = {"engine": engine, "workloads": {}}
        self._extra: dict[str, int] = {}  # counts a workload body reports beside its figures

    def _fresh(self, name: str, sync: bool) -> tuple[_Engine, str]:
        path = os.path.join(self.root, self.engine, name)
        shutil.rmtree(path, ignore_errors=True)
        os.makedirs(path)
        return self.make(path, sync), path

    def _record(self, name: str, fn: Callable[[], tuple[int, int, str | None]]) -> None:
        """Time ``fn`` -> (ops, bytes moved, problem or None) and keep its figures."""
        t0 = time.perf_counter()
        ops, nbytes, problem = fn()
        secs = time.perf_counter() - t0
        figures: dict[str, Any] = {
            "ops": ops, "secs": round(secs, 6),
            "micros_per_op": secs * 1e6 / ops if ops else 0.0,
            "ops_per_sec": ops / secs if secs > 0 else 0.0,
            "mb_per_sec": nbytes / 1e6 / secs if secs > 0 else 0.0,
            "ok": problem is None,
        }
        if problem is not None:
            figures["problem"] = problem
        figures.update(self._extra)
        self._extra = {}
        self.result["workloads"][name] = figures

    def _fill(self, db: _Engine, order: Sequence[int]) -> tuple[int, int, str | None]:
        batch, nextv, n = db.write_batch, self.values.next, len(order)
        for s in range(0, n, BATCH):
            batch([(key_of(j), nextv()) for j in order[s : s + BATCH]])
        return n, n * (KEY_SIZE + self.value_size), None

    def _count(self, db: _Engine) -> int:
        rows, start = 0, b""
        while True:
            chunk = db.scan(start, SCAN_CHUNK)
            rows += len(chunk)
            if len(chunk) < SCAN_CHUNK:
                return rows
            start = chunk[-1][0] + b"\0"

    def run(self, chosen: Sequence[str]) -> dict[str, Any]:
        n = self.num
        want = set(chosen)
        if "fillseq" in want:
            db, _ = self._fresh("fillseq", False)
            self._record("fillseq", lambda: self._fill(db, range(n)))
            rows = self._count(db)
            if rows != n:
                self._problem("fillseq", f"a scan after the fill saw {rows} rows, expected {n}")
            db.close()
        if want & set(_MAIN_DB):
            self._main_db(want)
        if "fillsync" in want:
            m = max(1, n // 100)
            db, _ = self._fresh("sync", True)
            self._record("fillsync", lambda: self._puts(db, _shuffled(m, 3), range(m)))
            db.close()
        if "concurrent_sync" in want:
            per = max(1, n // 400)
            order = _shuffled(per * THREADS, 4)
            lists = [[(key_of(j), self.values.next()) for j in order[t * per : (t + 1) * per]] for t in range(THREADS)]
            db, _ = self._fresh("concurrent", True)
            self._record("concurrent_sync", lambda: self._threads(db, lists))
            rows = self._count(db)
            if rows != per * THREADS:
                self._problem("concurrent_sync", f"{rows} rows after the writers, expected {per * THREADS}")
            db.close()
        if "concurrent_async" in want:
            per = max(1, n // (400 * COROUTINES // THREADS))  # as many commits in all as concurrent_sync
            order = _shuffled(per * COROUTINES, 5)
            lists = [[(key_of(j), self.values.next()) for j in order[t * per :][:per]] for t in range(COROUTINES)]
            db, path = self._fresh("coroutines", True)
            if self.engine == "kvstore":  # the asyncio API opens the directory itself
                db.close()
                self._record("concurrent_async", lambda: asyncio.run(_kvstore_coroutines(path, lists)))
                db = self.make(path, True)
            else:  # puts on threads, one per coroutine at most, as an asyncio wrapper of a sync engine does
                self._record("concurrent_async", lambda: asyncio.run(_engine_coroutines(db, lists)))
            rows = self._count(db)
            if rows != per * COROUTINES:
                self._problem("concurrent_async", f"{rows} rows after the writers, expected {per * COROUTINES}")
            db.close()
        self.result["peak_rss_mib"] = round(_peak_rss_mib(), 1)
        return self.result

    def _problem(self, name: str, problem: str) -> None:
        figures = self.result["workloads"][name]
        figures["ok"] = False
        figures.setdefault("problem", problem)

    def _main_db(self, want: set[str]) -> None:
        n = self.num
        perm = _shuffled(n, 1)
        db, path = self._fresh("main", False)
        if "fillrandom" in want:
            self._record("fillrandom", lambda: self._fill(db, perm))
        else:
            self._fill(db, perm)
        self.result.update(db.stats())
        db.close()
        self.result["disk_bytes"] = _disk_bytes(path)
        t0 = time.perf_counter()
        db = self.make(path, False)
        first = db.get(key_of(perm[0]))
        self.result["reopen_ms"] = round((time.perf_counter() - t0) * 1e3, 3)
        if first is None:
            self.result["reopen_problem"] = "the first key is missing after reopen"
        rng = random.Random(2)
        kbytes = KEY_SIZE + self.value_size
        if "overwrite" in want:
            idx = _random_indices(rng, n, n)
            self._record("overwrite", lambda: self._puts(db, perm, idx))
        if "readrandom" in want:
            idx = _random_indices(rng, n, n)
            self._record("readrandom", lambda: self._reads(db, perm, idx, key_of, True))
        if "readmissing" in want:
            idx = _random_indices(rng, n, n)
            self._record("readmissing", lambda: self._reads(db, perm, idx, missing_key_of, False))
        if "readseq" in want:
            self._record("readseq", lambda: self._readseq(db, n, kbytes))
        if "readreverse" in want:
            self._record("readreverse", lambda: self._readreverse(db, n, kbytes))
        if "seekrandom" in want:
            idx = _random_indices(rng, max(1, n // 10), n)
            self._record("seekrandom", lambda: self._seeks(db, perm, idx, kbytes))
        db.close()

    def _puts(self, db: _Engine, ids: Sequence[int], idx: Sequence[int]) -> tuple[int, int, str | None]:
        put, nextv = db.put, self.values.next
        for i in idx:
            put(key_of(ids[i]), nextv())
        return len(idx), len(idx) * (KEY_SIZE + self.value_size), None

    def _reads(self, db: _Engine, ids: Sequence[int], idx: Sequence[int], make_key: Callable[[int], bytes],
               expect: bool) -> tuple[int, int, str | None]:
        get, found, nbytes = db.get, 0, 0
        for i in idx:
            value = get(make_key(ids[i]))
            if value is not None:
                found += 1
                nbytes += KEY_SIZE + len(value)
        wrong = len(idx) - found if expect else found
        self._extra = {"found": found}
        return len(idx), nbytes, (f"{wrong} of {len(idx)} lookups wrong" if wrong else None)

    def _readseq(self, db: _Engine, expected: int, kbytes: int) -> tuple[int, int, str | None]:
        scan, start, rows, last = db.scan, b"", 0, b""
        while True:
            chunk = scan(start, SCAN_CHUNK)
            if chunk and chunk[0][0] < last:
                return rows, rows * kbytes, "the scan went backwards"
            rows += len(chunk)
            if len(chunk) < SCAN_CHUNK:
                break
            last = chunk[-1][0]
            start = last + b"\0"
        return rows, rows * kbytes, None if rows == expected else f"the scan saw {rows} rows, expected {expected}"

    def _readreverse(self, db: _Engine, expected: int, kbytes: int) -> tuple[int, int, str | None]:
        scan_back, end, rows = db.scan_back, None, 0
        while True:
            chunk = scan_back(end, SCAN_CHUNK)
            if chunk and end is not None and chunk[0][0] >= end:
                return rows, rows * kbytes, "the scan went forwards"
            rows += len(chunk)
            if len(chunk) < SCAN_CHUNK:
                break
            end = chunk[-1][0]
        return rows, rows * kbytes, None if rows == expected else f"the scan saw {rows} rows, expected {expected}"

    def _seeks(self, db: _Engine, ids: Sequence[int], idx: Sequence[int], kbytes: int) -> tuple[int, int, str | None]:
        scan, short, rows = db.scan, 0, 0
        for i in idx:
            key = key_of(ids[i])
            chunk = scan(key, SEEK_NEXT)
            if not chunk or chunk[0][0] != key:
                short += 1
            rows += len(chunk)
        self._extra = {"rows": rows}
        return len(idx), rows * kbytes, (f"{short} seeks did not land on their key" if short else None)

    def _threads(self, db: _Engine, lists: list[Pairs]) -> tuple[int, int, str | None]:
        errors: list[str] = []
        barrier = threading.Barrier(len(lists))

        def work(items: Pairs) -> None:
            try:
                barrier.wait()
                put = db.put
                for key, value in items:
                    put(key, value)
            except Exception as exc:  # noqa: BLE001 - reported as the workload's problem
                errors.append(repr(exc))

        threads = [threading.Thread(target=work, args=(items,)) for items in lists]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        ops = sum(len(items) for items in lists)
        return ops, ops * (KEY_SIZE + self.value_size), errors[0] if errors else None


async def _kvstore_coroutines(path: str, lists: list[Pairs]) -> tuple[int, int, str | None]:
    """One coroutine per list, each awaiting ``AsyncKV.set`` (durable) for each of its pairs."""
    async with await AsyncKV.open(path, Config(sync=True), threads=len(lists)) as kv:
        return await _gathered(kv.set, lists)


async def _engine_coroutines(db: _Engine, lists: list[Pairs]) -> tuple[int, int, str | None]:
    """One coroutine per list, each awaiting the engine's durable put on a thread of a shared pool."""
    loop = asyncio.get_running_loop()
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(lists)) as pool:
        return await _gathered(lambda key, value: loop.run_in_executor(pool, db.put, key, value), lists)


async def _gathered(put: Callable[[bytes, bytes], Awaitable[None]], lists: list[Pairs]) -> tuple[int, int, str | None]:
    async def work(items: Pairs) -> None:
        for key, value in items:
            await put(key, value)

    results = await asyncio.gather(*(work(items) for items in lists), return_exceptions=True)
    errors = [repr(r) for r in results if isinstance(r, BaseException)]
    ops = sum(len(items) for items in lists)
    return ops, ops * (KEY_SIZE + len(lists[0][0][1])), errors[0] if errors else None


# ---------------------------------------------------------------- report


def _line(name: str, figures: dict[str, Any]) -> str:
    line = f"{name:<15} : {figures['micros_per_op']:11.3f} micros/op;"
    if figures["mb_per_sec"] > 0:
        line += f" {figures['mb_per_sec']:6.1f} MB/s"
    if not figures["ok"]:
        line += f" (PROBLEM: {figures['problem']})"
    return line


def _report(results: dict[str, dict[str, Any]], chosen: Sequence[str], num: int, value_size: int) -> list[str]:
    out = [f"Keys:       {KEY_SIZE} bytes each", f"Values:     {value_size} bytes each", f"Entries:    {num}",
           "-" * 48]
    for engine, res in results.items():
        if len(results) > 1:
            out.append(f"[{engine}]")
        out.extend(_line(name, res["workloads"][name]) for name in chosen if name in res["workloads"])
        if "write_amplification" in res:
            out.append(f"{'write amp':<15} : {res['write_amplification']:.2f} "
                       "(bytes the engine wrote per byte of keys and values, fillrandom)")
        if "disk_bytes" in res:
            out.append(f"{'disk':<15} : {res['disk_bytes'] / 2**20:.2f} MiB (after fillrandom and close)")
        if "reopen_ms" in res:
            out.append(f"{'reopen':<15} : {res['reopen_ms']:.3f} ms (open + first get)")
        out.append(f"{'peak RSS':<15} : {res['peak_rss_mib']:.1f} MiB (this process, so far)")
    if "kvstore" in results and len(results) > 1:
        ours = results["kvstore"]["workloads"]
        for other, res in results.items():
            if other == "kvstore":
                continue
            out.append("-" * 48)
            out.append(f"kvstore / {other} (ops/s ratio, > 1 = kvstore faster)")
            for name in chosen:
                a, b = ours.get(name), res["workloads"].get(name)
                if a and b and a["ops_per_sec"] and b["ops_per_sec"]:
                    out.append(f"{name:<15} : {a['ops_per_sec'] / b['ops_per_sec']:6.2f}x  "
                               f"({a['micros_per_op']:.3f} vs {b['micros_per_op']:.3f} micros/op)")
    return out


def _ratios(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    if "kvstore" not in results:
        return {}
    ours = results["kvstore"]["workloads"]
    out: dict[str, dict[str, float]] = {}
    for other, res in results.items():
        if other != "kvstore":
            out[other] = {name: round(ours[name]["ops_per_sec"] / f["ops_per_sec"], 4)
                          for name, f in res["workloads"].items()
                          if name in ours and ours[name]["ops_per_sec"] and f["ops_per_sec"]}
    return out


def main(argv: list[str] | None = None, prog: str = "python -m kvstore.bench") -> int:
    """Run the benchmark with command-line arguments ``argv`` (``sys.argv[1:]`` when None); returns the exit
    status: 0 when every workload did what it should, 1 when one found a problem.  ``prog`` names the
    command in help and usage messages (``kvstore bench`` when the ``kvstore`` command runs it)."""
    a, chosen, others = _arguments(argv, prog)
    results = _run_engines(["kvstore", *others], a.num, a.value_size, a.db, chosen)
    print("\n".join(_report(results, chosen, a.num, a.value_size)), flush=True)
    if a.json:
        doc = {"num": a.num, "value_size": a.value_size, "key_size": KEY_SIZE, "benchmarks": chosen,
               "results": results, "ratios": _ratios(results)}
        _write_json(a.json, doc)
    ok = all(f["ok"] for res in results.values() for f in res["workloads"].values())
    return 0 if ok and not any("reopen_problem" in r for r in results.values()) else 1


def _arguments(argv: list[str] | None, prog: str) -> tuple[argparse.Namespace, list[str], list[str]]:
    """The parsed arguments, the workloads chosen and the engines to compare with; a bad argument
    exits with status 2, as argparse does."""
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    ap.add_argument("--num", type=int, default=100_000, help="number of keys (default 100000)")
    ap.add_argument("--value-size", type=int, default=100, help="bytes per value (default 100)")
    ap.add_argument("--benchmarks", default=",".join(WORKLOADS),
                    help="comma list of workloads, from: " + ",".join(WORKLOADS))
    ap.add_argument("--compare", default="", help="comma list of engines to run beside kvstore: sqlite3")
    ap.add_argument("--db", help="directory for the databases (kept afterwards); default a temporary one")
    ap.add_argument("--json", help="also write every figure as JSON to this file ('-' for standard output)")
    a = ap.parse_args(argv)
    chosen = [w for w in a.benchmarks.split(",") if w]
    bad = [w for w in chosen if w not in WORKLOADS]
    if bad:
        ap.error("unknown benchmarks: " + ", ".join(bad))
    others = [e for e in a.compare.split(",") if e]
    if any(e not in ENGINES or e == "kvstore" for e in others):
        ap.error("--compare takes: sqlite3")
    if a.num < 1 or a.value_size < 0:
        ap.error("--num must be at least 1 and --value-size at least 0")
    return a, chosen, others


def _run_engines(engines: list[str], num: int, value_size: int, db: str | None,
                 chosen: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The ``chosen`` workloads of each engine, run in directories under ``db`` (a temporary
    directory, removed afterwards, when None)."""
    root = db if db is not None else tempfile.mkdtemp(prefix="kvstore-bench-")
    results: dict[str, dict[str, Any]] = {}
    try:
        for engine in engines:
            results[engine] = _Run(engine, num, value_size, root).run(chosen)
            if db is None:
                shutil.rmtree(os.path.join(root, engine), ignore_errors=True)
    finally:
        if db is None:
            shutil.rmtree(root, ignore_errors=True)
    return results


def _write_json(target: str, doc: dict[str, Any]) -> None:
    text = json.dumps(doc, indent=1)
    if target == "-":
        print(text)
    else:
        with open(target, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    sys.exit(main())
