"""Crash-point sweep (docs/durability.md): every file operation of tiny canonical workloads, crashed in every mode.

Each workload (creating a database, sync and unsynced commits, an aborted
transaction, flushes, a merge, meta slot switches, deletes, range deletes,
values that expire, a reopen) runs on ``CheckingFS(SimFS())`` with a tiny
memtable and ``background=False``, and reads the oracle's clock, which only
the workload moves, so it is deterministic and takes well under a hundred
file operations.  A recording run counts them; then, for every operation i:

- the workload runs again with ``crash_at(i)``; for each ``CrashMode`` the
  crash image is reopened and checked against the "prefix, no holes" oracle:
  the recovered state is exactly the state after some prefix of the commits
  issued, a prefix holding every commit acknowledged durable (a
  ``commit(sync=True)``, ``flush``, ``compact(full=True)`` or ``close`` that
  returned; after ``KILL`` every commit that returned), read at the clock
  the crash stopped (less what expired by then; each key has the ttl left
  its value was written with); each transaction is whole (values are
  unique) and no aborted one appears; ``kv._check()`` holds and
  ``kv.check()`` is empty.  Then the recovery of that image is crashed at a
  seeded point, imaged again in a seeded mode, reopened, and must find the
  same state the uninterrupted recovery found;
- the workload runs again with EIO injected into operation i (its kind and
  file from the recording run's ``fs.log``): the failing call raises
  ``FailedError`` (``OSError`` from ``KV.open``), acknowledges nothing, later
  writes raise ``FailedError``, and the ``KILL`` and ``DROP`` images reopen by
  the oracle.  ENOSPC runs do the same at seeded byte budgets.

Every random choice is seeded; the protocol checks of ``CheckingFS`` hold in
every run and every recovery.  ``test_crash_sweep_summary`` prints the counts.
"""

from __future__ import annotations

import contextlib
import functools
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from checkfs import CheckingFS

from kvstore import KV, Config, FailedError
from kvstore.simfs import CrashMode, SimulatedCrash

DB = "/db"
CONFIG = Config(memtable_size=160, block_size=64, bloom_bits_per_key=10, background=False, sync=False)
Model = dict[bytes, bytes]
Writes = dict[bytes, "bytes | None"]
MODES = list(CrashMode)
#: crash images per crash point and mode: one where the mode makes no random choice
SEEDS = {mode: 1 if mode in (CrashMode.DROP, CrashMode.KILL) else 4 for mode in MODES}
#: seeded crashes inside the recovery of each image
RECOVERY_CRASHES = 3


@dataclass
class Oracle:
    """Commits issued in order; ``commits[:durable]`` survive power loss, ``commits[:acked]`` a kill.
    ``now`` is the time every KV of the run reads (``clock``); ``expiries`` the expiry of each value
    written with a ttl (values are unique)."""

    commits: list[Writes] = field(default_factory=list)
    durable: int = 0
    acked: int = 0
    now: float = 1000.0
    expiries: dict[bytes, float] = field(default_factory=dict)

    def clock(self) -> float:
        """The clock every KV of the run reads, recoveries too: it never goes back."""
        return self.now

    def states(self) -> list[Model]:
        """The state after each prefix as reads see it now: ``states()[p]`` holds the first p commits, less
        the values expired by ``now``."""
        state: Model = {}
        out = [self.live(state)]
        for writes in self.commits:
            for key, value in writes.items():
                if value is None:
                    state.pop(key, None)
                else:
                    state[key] = value
            out.append(self.live(state))
        return out

    def live(self, state: Model) -> Model:
        """``state`` less the values expired by ``now``."""
        expiries, now = self.expiries, self.now
        return {k: v for k, v in state.items() if v not in expiries or now < expiries[v]}

    def ttl(self, value: bytes) -> float | None:
        """What ``ttl`` returns now for a key holding ``value``."""
        expiry = self.expiries.get(value)
        return None if expiry is None else expiry - self.now

    def match(self, state: Model, kill: bool) -> int | None:
        """The prefix length whose state is ``state`` and which holds what must survive; None if none."""
        lo = self.acked if kill else self.durable
        for p, expected in enumerate(self.states()):
            if p >= lo and expected == state:
                return p
        return None


class Run:
    """One run of a workload: the KV, its file system and what the oracle knows."""

    def __init__(self, fs: CheckingFS) -> None:
        self.fs = fs
        self.kv: KV | None = None
        self.oracle = Oracle()
        self._n = 0

    def _kv(self) -> KV:
        assert self.kv is not None
        return self.kv

    def value(self, tag: str) -> bytes:
        self._n += 1
        return f"{tag}-{self._n}".encode()

    def _acked(self, durable: bool) -> None:
        self.oracle.acked = len(self.oracle.commits)
        if durable:
            self.oracle.durable = len(self.oracle.commits)

    def open(self) -> None:
        self.kv = KV.open(DB, CONFIG, fs=self.fs, clock=self.oracle.clock)

    def close(self) -> None:
        self._kv().close()
        self._acked(True)

    def tx(self, writes: dict[bytes, bytes | None], sync: bool, ttls: dict[bytes, float] | None = None) -> None:
        """One transaction of ``writes`` (None deletes), committed with ``sync``; a key of ``ttls`` is set
        with that ttl, which counts from the commit."""
        kv = self._kv()
        tx = kv.new_tx()
        ttls = ttls or {}
        for key, value in writes.items():
            if value is None:
                tx.delete(key)
            else:
                tx.set(key, value, ttl=ttls.get(key))
        for key, ttl in ttls.items():
            self._expires(writes[key], ttl)
        self.oracle.commits.append(dict(writes))
        tx.commit(sync=sync)
        self._acked(sync)
        if sync:
            assert kv._wal is not None
            self.fs.assert_durable(kv._wal.path)  # its WAL bytes and directory entry are synced

    def set(self, key: bytes, tag: str, ttl: float | None = None) -> None:
        """A one-operation write (``Config.sync`` is False: not durable), with ``ttl`` when not None."""
        value = self.value(tag)
        if ttl is not None:
            self._expires(value, ttl)
        self.oracle.commits.append({key: value})
        self._kv().set(key, value, ttl=ttl)
        self._acked(False)

    def _expires(self, value: bytes | None, ttl: float) -> None:
        assert value is not None
        self.oracle.expiries[value] = self.oracle.now + ttl

    def tick(self, seconds: float) -> None:
        """Move the clock: what expires by then reads as absent."""
        self.oracle.now += seconds

    def delete(self, key: bytes) -> None:
        existed = self.oracle.states()[-1].get(key) is not None
        if existed:
            self.oracle.commits.append({key: None})
        assert self._kv().delete(key) is existed
        if existed:
            self._acked(False)

    def delete_range(self, start: bytes, end: bytes, sync: bool) -> None:
        """A range delete in a transaction committed with ``sync``, and a write inside the range after it;
        the oracle sees the keys it held in the range deleted, then the write."""
        kv = self._kv()
        tx = kv.new_tx()
        tx.delete_range(start, end)
        value = self.value("inside")
        tx.set(start, value)
        state = self.oracle.states()[-1]
        self.oracle.commits.append({**{k: None for k in state if start <= k < end}, start: value})
        tx.commit(sync=sync)
        self._acked(sync)

    def delete_range_one(self, start: bytes, end: bytes) -> None:
        """``kv.delete_range`` (``Config.sync`` is False: not durable)."""
        state = self.oracle.states()[-1]
        self.oracle.commits.append({k: None for k in state if start <= k < end})
        self._kv().delete_range(start, end)
        self._acked(False)

    def abort(self, key: bytes) -> None:
        tx = self._kv().new_tx()
        tx.set(key, self.value("aborted"))
        tx.set(b"aborted", b"never")
        tx.abort()

    def flush(self) -> None:
        self._kv().flush()
        self._acked(True)

    def compact(self, full: bool = False) -> None:
        self._kv().compact(full=full)
        if full:
            self._acked(True)


def wl_create(r: Run) -> None:
    """Create a database, sync and unsynced commits, an abort, a delete, close."""
    r.open()
    r.set(b"a", "a")
    r.tx({b"b": r.value("b"), b"c": r.value("c")}, sync=True)
    r.abort(b"b")
    r.delete(b"a")
    r.set(b"d", "d")
    r.tx({b"a": r.value("a"), b"c": None}, sync=True)
    r.set(b"e", "e")
    r.close()


def wl_flush(r: Run) -> None:
    """Commits until the memtable fills and a commit flushes it; more after; an explicit flush."""
    r.open()
    for i in range(5):
        r.tx({b"k%d" % i: r.value("v" * 12), b"x": r.value("x")}, sync=i % 2 == 1)
    r.set(b"k1", "late")
    r.delete(b"k0")
    r.tx({b"y": r.value("y")}, sync=False)
    r.flush()
    r.set(b"z", "z")


def wl_merge(r: Run) -> None:
    """Two flushed tables merged by the policy and by a full compaction; meta slots switch both ways."""
    r.open()
    r.tx({b"a": r.value("a"), b"b": r.value("b")}, sync=True)
    r.flush()
    r.tx({b"a": r.value("a2"), b"c": r.value("c")}, sync=False)
    r.flush()
    r.delete(b"b")
    r.tx({b"d": r.value("d")}, sync=True)
    r.compact(full=True)
    r.set(b"e", "e")
    r.compact()


def wl_reopen(r: Run) -> None:
    """Commits, close, reopen, unsynced and sync commits, a delete, a flush, an unsynced tail."""
    r.open()
    r.tx({b"p": r.value("p"), b"q": r.value("q")}, sync=False)
    r.set(b"r", "r")
    r.close()
    r.open()
    r.set(b"s", "s")
    r.tx({b"p": None, b"t": r.value("t")}, sync=True)
    r.abort(b"q")
    r.flush()
    r.delete(b"q")
    r.set(b"u", "u")


def wl_deletes(r: Run) -> None:
    """Keys written, flushed, deleted (tombstones in a newer table), merged away; sync commits between."""
    r.open()
    r.tx({b"k1": r.value("k1"), b"k2": r.value("k2"), b"k3": r.value("k3")}, sync=True)
    r.flush()
    r.delete(b"k1")
    r.tx({b"k2": None, b"k4": r.value("k4")}, sync=True)
    r.flush()
    r.compact(full=True)
    r.delete(b"k3")
    r.tx({b"k5": r.value("k5")}, sync=False)


def wl_range_deletes(r: Run) -> None:
    """Keys in a table, a range delete over some (a tombstone in a newer table), merged away; range deletes
    in the log, synced and not."""
    r.open()
    r.tx({b"r%d" % i: r.value("r") for i in range(6)}, sync=True)
    r.flush()
    r.delete_range(b"r1", b"r4", sync=True)
    r.flush()
    r.compact(full=True)
    r.delete_range_one(b"r4", b"r9")
    r.delete_range(b"r0", b"r2", sync=False)


def wl_expiries(r: Run) -> None:
    """Values set with ttls over older ones in a table, by one-operation writes and a transaction (its ttls
    count from its commit); the clock passes their expiries one by one: a delete, a range delete, the flush
    and the merge of a full compaction meet expired values, and the log ends with one."""
    r.open()
    r.tx({b"e%d" % i: r.value("e") for i in range(5)}, sync=True)
    r.flush()
    r.set(b"e0", "short", ttl=1)  # hides e0 of the table until it expires, and after
    r.set(b"e1", "long", ttl=100)
    r.tx({b"e2": r.value("short"), b"e3": r.value("long")}, sync=True, ttls={b"e2": 2, b"e3": 100})
    r.tick(1)  # e0 expires
    r.delete(b"e0")  # absent: writes nothing
    r.delete_range(b"e0", b"e2", sync=False)  # over an expired value and a live one
    r.tick(1)  # e2 expires
    r.compact(full=True)
    r.set(b"e4", "short", ttl=1)
    r.tick(1)
    r.delete_range_one(b"e3", b"e9")


def wl_close_merge(r: Run) -> None:
    """Reopen a closed database into a flush and a policy merge inside a commit, close with files waiting."""
    r.open()
    r.tx({b"m%d" % i: r.value("m" * 10) for i in range(3)}, sync=True)
    r.close()
    r.open()
    for i in range(3):
        r.tx({b"n%d" % i: r.value("n" * 10), b"m%d" % i: None}, sync=i == 1)
    r.abort(b"n0")
    r.compact()
    r.set(b"o", "o")
    r.close()


WORKLOADS: dict[str, Callable[[Run], None]] = {
    "create": wl_create, "flush": wl_flush, "merge": wl_merge, "reopen": wl_reopen, "deletes": wl_deletes,
    "range_deletes": wl_range_deletes, "expiries": wl_expiries, "close_merge": wl_close_merge,
}


@dataclass
class Result:
    ops: int = 0
    crash_points: int = 0
    recoveries: int = 0
    recovery_crashes: int = 0
    eio: int = 0
    enospc: int = 0
    failures: list[str] = field(default_factory=list)


def _record(workload: Callable[[Run], None]) -> tuple[int, list[tuple[str, str]], int]:
    """A clean run: its operation count, its operation log and the bytes it wrote."""
    run = Run(CheckingFS())
    run.fs.space_limit = 1 << 40
    workload(run)
    assert run.fs.violations == []
    used = (1 << 40) - (run.fs.space_limit or 0)
    return run.fs.ops, list(run.fs.log), used


def _recover(image: CheckingFS, oracle: Oracle, kill: bool, where: str) -> tuple[Model, int]:
    """Reopen ``image``, check it, and match its state to the oracle; returns the state and the open's ops."""
    kv = KV.open(DB, CONFIG, fs=image, clock=oracle.clock)
    ops = image.ops
    kv._check()
    problems = kv.check()  # a slot a crash tore was written anew by the open
    assert problems == [], f"{where}: check() found {problems}"
    state = dict(kv.scan())
    if oracle.expiries:
        ttls = {key: kv.ttl(key) for key in state}
        assert ttls == {k: oracle.ttl(v) for k, v in state.items()}, f"{where}: ttls {ttls}"
    kv.close()
    assert image.violations == [], f"{where}: {image.violations}"
    p = oracle.match(state, kill)
    assert p is not None, (f"{where}: recovered {state} is no prefix holding the first "
                           f"{oracle.acked if kill else oracle.durable} of {oracle.commits}")
    return state, ops


def _crash_point(name: str, workload: Callable[[Run], None], i: int, res: Result) -> None:
    run = Run(CheckingFS())
    run.fs.crash_at(i)
    with pytest.raises(SimulatedCrash):
        workload(run)
    assert run.fs.violations == [], f"{name} crash at {i}: {run.fs.violations}"
    res.crash_points += 1
    for m, mode in enumerate(MODES):
        for s in range(SEEDS[mode]):
            seed = (i << 8) | (m << 4) | s
            last = run.fs.log[-1] if run.fs.log else "start"
            where = f"{name} crash at op {i} (after {last}), {mode.name} seed {seed}"
            try:
                _image_and_recover(run, mode, seed, where, res)
            except Exception as exc:  # noqa: BLE001 - collected, every one is reported by the test
                res.failures.append(f"{where}: {type(exc).__name__}: {exc}")


def _image_and_recover(run: Run, mode: CrashMode, seed: int, where: str, res: Result) -> None:
    kill = mode is CrashMode.KILL
    state, ops = _recover(run.fs.crash_image(mode, seed), run.oracle, kill, where)
    res.recoveries += 1
    # crash the same recovery part-way, image it again, recover: the same state comes back
    rnd = random.Random(seed)
    for _ in range(RECOVERY_CRASHES):
        j = rnd.randint(1, max(1, ops))
        mode2 = rnd.choice(MODES)
        image = run.fs.crash_image(mode, seed)
        image.crash_at(j)
        with contextlib.suppress(SimulatedCrash):
            KV.open(DB, CONFIG, fs=image, clock=run.oracle.clock).close()
        where2 = f"{where}; recovery crashed at op {j} of {ops}, {mode2.name}"
        assert image.violations == [], f"{where2}: {image.violations}"
        again, _ = _recover(image.crash_image(mode2, seed), run.oracle, kill, where2)
        assert again == state, f"{where2}: {again} after the first recovery found {state}"
        res.recovery_crashes += 1


def _faulted(name: str, workload: Callable[[Run], None], arm: Callable[[CheckingFS], None], what: str,
             res: Result, *, must_fire: bool) -> None:
    """Run with a fault armed: it must surface as FailedError (OSError from open), fail-stop, recover."""
    run = Run(CheckingFS())
    arm(run.fs)
    try:
        workload(run)
        raised: BaseException | None = None
    except (FailedError, OSError) as exc:
        raised = exc
    try:
        assert run.fs.violations == [], f"{what}: {run.fs.violations}"
        if raised is None:
            reached = not run.fs.inner._faults and (run.fs.space_limit or 0) <= 0
            assert not reached, f"{what}: the injected error was swallowed: nothing raised"
            assert not must_fire, f"{what}: the workload never reached the armed operation"
            return
        if run.kv is not None and not run.kv._closed:
            assert isinstance(raised, FailedError), f"{what}: {type(raised).__name__} {raised}, not FailedError"
            with pytest.raises(FailedError):
                run._kv().set(b"later", b"x")
            with pytest.raises(FailedError):
                run._kv().flush()
        for mode in (CrashMode.KILL, CrashMode.DROP):
            _recover(run.fs.crash_image(mode, 1), run.oracle, mode is CrashMode.KILL, f"{what}, {mode.name} image")
        if run.kv is not None:
            run.kv.close()  # a failed KV closes without writing
            assert run.fs.violations == [], f"{what}: close: {run.fs.violations}"
    except Exception as exc:  # noqa: BLE001 - collected, every one is reported by the test
        res.failures.append(f"{what}: {type(exc).__name__}: {exc}")


@functools.cache
def sweep(name: str) -> Result:
    workload = WORKLOADS[name]
    ops, oplog, used = _record(workload)
    res = Result(ops=ops)
    for i in range(1, ops + 1):
        _crash_point(name, workload, i, res)
    for i, (op, path) in enumerate(oplog):
        base = path.rsplit("/", 1)[-1]
        nth = sum(1 for o, p in oplog[:i] if o == op and p.rsplit("/", 1)[-1] == base) + 1

        def arm(fs: CheckingFS, op: str = op, base: str = base, nth: int = nth) -> None:
            fs.fail(op, base, nth)

        _faulted(name, workload, arm, f"{name} EIO on {op} {path} (call {nth}, op {i + 1})", res, must_fire=True)
        res.eio += 1
    rnd = random.Random(name)
    for budget in sorted({0, used - 1, *rnd.sample(range(used), min(used, 24))}):

        def limit(fs: CheckingFS, budget: int = budget) -> None:
            fs.space_limit = budget

        _faulted(name, workload, limit, f"{name} ENOSPC after {budget} of {used} bytes", res, must_fire=True)
        res.enospc += 1
    return res


@pytest.mark.parametrize("name", list(WORKLOADS), ids=list(WORKLOADS))
def test_crash_sweep_recovers_a_prefix_at_every_operation(name: str) -> None:
    res = sweep(name)
    assert res.ops <= 110, f"{name} has grown to {res.ops} operations"
    assert not res.failures, f"{len(res.failures)} failures:\n" + "\n".join(res.failures[:15])


def test_crash_sweep_summary(capsys: pytest.CaptureFixture[str]) -> None:
    results = {name: sweep(name) for name in WORKLOADS}
    total = Result()
    for name, res in results.items():
        total.ops += res.ops
        total.crash_points += res.crash_points
        total.recoveries += res.recoveries
        total.recovery_crashes += res.recovery_crashes
        total.eio += res.eio
        total.enospc += res.enospc
        with capsys.disabled():
            print(f"\n{name}: {res.ops} ops, {res.crash_points} crash points, {res.recoveries} recoveries, "
                  f"{res.recovery_crashes} crashed recoveries, {res.eio} EIO, {res.enospc} ENOSPC")
    with capsys.disabled():
        print(f"\ncrash sweep: {total.crash_points} crash points, {total.recoveries} "
              f"recoveries, {total.recovery_crashes} crashed recoveries, {total.eio} EIO and {total.enospc} "
              f"ENOSPC injections")
    assert total.crash_points == total.ops >= 300
    assert total.recoveries == total.crash_points * sum(SEEDS.values())
    assert total.recovery_crashes == total.recoveries * RECOVERY_CRASHES
    assert total.eio == total.ops and total.enospc >= 20 * len(WORKLOADS)


def test_open_after_a_crash_left_a_meta_temp_and_an_orphan_number() -> None:
    """Regression (sweep: a crash while creating ``meta1.tmp``): the open's ``next_file`` meta write renames a
    fresh ``meta1.tmp`` into place, then open deleted the ``meta1.tmp`` it had listed before: FileNotFoundError."""
    fs = CheckingFS()
    KV.open(DB, CONFIG, fs=fs).close()
    for name in ("meta1.tmp", "000009.sst"):
        f = fs.open(f"{DB}/{name}", create=True)
        f.append(b"partial")
        f.fsync()
        f.close()
    fs.sync_dir(DB)
    with KV.open(DB, CONFIG, fs=fs) as kv:
        assert kv.check() == []
        assert fs.listdir(DB) == ["000001.log", "LOCK", "meta0", "meta1"]
    assert fs.violations == []


def test_a_number_lost_with_its_file_in_a_crash_is_not_handed_out_again() -> None:
    """Regression (sweep: DROP image of a crash between creating a flush's new log and syncing its
    directory): no durable meta covered the lost log's number, so the next open handed it out again."""

    def work(fs: CheckingFS) -> None:
        kv = KV.open(DB, CONFIG, fs=fs)
        kv.set(b"a", b"1")
        kv.flush()

    recording = CheckingFS()
    work(recording)
    i = recording.log.index(("create", f"{DB}/000002.log"))
    fs = CheckingFS()
    fs.crash_at(i + 2)  # log 2 is created; its directory entry is not synced
    with pytest.raises(SimulatedCrash):
        work(fs)
    image = fs.crash_image(CrashMode.DROP)
    assert not image.exists(f"{DB}/000002.log")
    with KV.open(DB, CONFIG, fs=image) as kv:
        assert kv.get(b"a") == b"1"
        kv.set(b"b", b"2")
        kv.flush()
    assert image.violations == []
