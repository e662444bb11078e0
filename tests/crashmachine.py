"""``CrashMachine``, the crash machine of tests/test_crash.py, whose docstring says what it does.

Its test entry points are in tests/test_crash.py.  Keep the class verbatim: with ``derandomize``, Hypothesis
seeds a stateful test from the machine class's whole source, so any edit to it changes the examples run.
"""

from __future__ import annotations

import errno
import os

import pytest
from checkfs import CheckingFS
from crashhelp import (
    DB,
    FAULT_OPS,
    FAULT_PATTERNS,
    FS,
    KEYS,
    OPS,
    TARGETS,
    Clock,
    Commit,
    Model,
    OpenTx,
    Status,
    Writes,
    apply,
    crashed,
    expected_scan,
    keys,
    meta_versions,
    modes,
    pads,
    read_all,
    recovery_crashes,
    seeds,
    sim,
    table_layout,
    ticks,
    ttls,
    wal_frames,
)
from hypothesis import event
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from kvstore import KV, ClosedError, Config, ConflictError, CorruptionError, FailedError
from kvstore.simfs import CrashMode, SimFS


class CrashMachine(RuleBasedStateMachine):
    """KV over SimFS against a model of commits and their durability; see the module docstring."""

    def __init__(self) -> None:
        super().__init__()
        self.fs = self.new_fs()
        self.kv: KV | None = None
        self.config = Config()
        self.base: Model = {}  # the state every commit below builds on (durable: recovered or opened)
        self.commits: list[Commit] = []
        self.model: Model = {}  # base with every commit applied: reads see it less what expired (live)
        self.tx: OpenTx | None = None
        self.counter = 0
        self.clock = Clock(1000.0)
        self.expiries: dict[bytes, float] = {}  # the expiry of each value written with a ttl (values are unique)

    # ------------------------------------------------------------------ helpers

    def value(self, pad: int) -> bytes:
        self.counter += 1
        return b"v%d." % self.counter + b"x" * pad

    @property
    def db(self) -> KV:
        assert self.kv is not None
        return self.kv

    def new_fs(self) -> FS:
        return SimFS()

    def open(self, fs: FS) -> KV:
        return KV.open(DB, self.config, fs=fs, clock=self.clock)

    def live(self, state: Model) -> Model:
        """``state`` as reads see it now: less each value that has expired."""
        expiries, now = self.expiries, self.clock.now
        return {k: v for k, v in state.items() if v not in expiries or now < expiries[v]}

    def ttl_of(self, value: bytes) -> float | None:
        """What ``ttl`` returns for a key holding ``value``, which reads see now."""
        expiry = self.expiries.get(value)
        return None if expiry is None else expiry - self.clock.now

    def expiring(self, value: bytes, ttl: float) -> None:
        """``value`` is about to be written with ``ttl``: it expires that long after the clock now."""
        self.expiries[value] = self.clock.now + ttl

    def read_all(self, kv: KV) -> Model:
        """``read_all``, and each key's ttl as its value was written with."""
        got = read_all(kv)
        for key, value in got.items():
            assert kv.ttl(key) == self.ttl_of(value), (key, value)
        return got

    def committed(self, writes: Writes, sync: bool) -> None:
        self.commits.append(Commit(writes, Status.ACKED))
        self.model = apply(self.model, writes)
        if sync:
            self.all_durable()
            if isinstance(self.fs, CheckingFS):
                wal = self.db._wal
                assert wal is not None
                self.fs.assert_durable(wal.path)

    def all_durable(self) -> None:
        for c in self.commits:
            if c.status is Status.ACKED:
                c.status = Status.DURABLE

    def drop_kv(self) -> None:
        """Forget the KV without closing it (the process or machine is gone): marked closed, so that a
        transaction or scan collected later lets go of its files without deleting any."""
        if self.kv is not None:
            self.kv._closed = True
        self.let_go_of_tx()
        self.kv = None

    def let_go_of_tx(self) -> None:
        """Abort the open transaction, if any (on a KV marked closed: as its collection would).  No example
        may end with one open: its finalizer, in a global registry, holds its KV; the KV holds the
        ``CorruptionError`` of a damaged meta slot it read, whose traceback holds the frames that opened
        it, so this machine and its transaction: none of them is ever collected, nor the Hypothesis run
        below those frames (every test case it keeps)."""
        if self.tx is not None:
            self.tx.tx.abort()
        self.tx = None

    def teardown(self) -> None:
        """Hypothesis calls this at the end of each example."""
        self.let_go_of_tx()

    def recovered(self, kv: KV, kill: bool, after_crash: bool) -> None:
        """Check the recovered state is a prefix holding every durable (kill: acknowledged) commit."""
        kv._check()
        got = self.read_all(kv)
        need = 0
        for i, c in enumerate(self.commits):
            if c.status is Status.DURABLE or (kill and c.status is Status.ACKED):
                need = i + 1
        state = dict(self.base)
        states = [state]
        for c in self.commits:
            state = apply(state, c.writes)
            states.append(state)
        matches = [k for k in range(need, len(states)) if self.live(states[k]) == got]
        event(f"recovered {'a prefix' if matches and matches[0] < len(states) - 1 else 'everything'}")
        assert matches, (f"recovered state is no prefix of the commits holding the first {need} of "
                         f"{len(self.commits)}: {sorted(got.items())} vs {[sorted(s.items()) for s in states]}")
        problems = kv.check()
        if after_crash:  # a meta slot torn by the crash is reported, and is no harm
            problems = [p for p in problems if "meta" not in p]
        assert problems == [], problems
        self.kv = kv
        self.base = got
        self.model = dict(got)
        self.commits = []
        self.tx = None

    def recover(self, image: FS, kill: bool, crashes: list[tuple[int, CrashMode, int]]) -> None:
        """Reopen on ``image``, crashing the recovery at each of ``crashes`` first."""
        for at, mode, seed in crashes:
            image.crash_at(at)
            try:
                kv = self.open(image)
            except BaseException:
                if not crashed(image):
                    raise
                event("crash during recovery")
                image = self.fs = image.crash_image(mode, seed)
                continue
            image.crash_at(None)
            self.recovered(kv, kill, after_crash=True)
            return
        self.recovered(self.open(image), kill, after_crash=True)

    def run_op(self, op: str, key: bytes, pad: int, ttl: float = 2.0) -> None:
        """One write operation, with the model updated when it returns; ``ttl`` for the ops that set one."""
        kv = self.db
        if op in ("set", "set_ttl"):
            value = self.value(pad)
            self.commits.append(Commit({key: value}, Status.INFLIGHT))
            if op == "set_ttl":
                self.expiring(value, ttl)
                kv.set(key, value, ttl=ttl)
            else:
                kv.set(key, value)
            self.commits.pop()
            self.committed({key: value}, self.config.sync)
        elif op == "delete":
            existed = key in self.live(self.model)  # deleting an expired key writes nothing
            if existed:
                self.commits.append(Commit({key: None}, Status.INFLIGHT))
            assert kv.delete(key) == existed
            if existed:
                self.commits.pop()
                self.committed({key: None}, self.config.sync)
        elif op == "delete_range":  # [key, the key 4 places on): as deletes of the model's keys in it
            end = KEYS[(KEYS.index(key) + 4) % len(KEYS)]
            gone: Writes = {k: None for k in KEYS if key <= k < end}
            if gone:
                self.commits.append(Commit(gone, Status.INFLIGHT))
            kv.delete_range(key, end)
            if gone:
                self.commits.pop()
                self.committed(gone, self.config.sync)
        elif op in ("tx_sync", "tx_nosync", "tx_range", "tx_ttl"):
            other = KEYS[(KEYS.index(key) + 5) % len(KEYS)]
            writes: Writes = {key: self.value(pad), other: None}
            tx = kv.new_tx()
            if op == "tx_ttl":  # a value with a ttl and one without, committed durably: the ttl counts from it
                value, lasting = self.value(pad), self.value(0)
                writes = {key: value, other: lasting}
                tx.set(key, value, ttl=ttl)
                tx.set(other, lasting)
                self.expiring(value, ttl)
            elif op == "tx_range":  # a range delete, then a write inside it: the write stays
                start, end = min(key, other), max(key, other)
                tx.delete_range(start, end)
                value = self.value(pad)
                writes = {**{k: None for k in KEYS if start <= k < end}, key: value}
                tx.set(key, value)
            else:
                for k, v in writes.items():
                    if v is None:
                        tx.delete(k)
                    else:
                        tx.set(k, v)
            self.commits.append(Commit(writes, Status.INFLIGHT))
            tx.commit(sync=op in ("tx_sync", "tx_ttl"))
            self.commits.pop()
            self.committed(writes, op in ("tx_sync", "tx_ttl"))
        elif op == "flush":
            kv.flush()
            self.all_durable()
        elif op in ("compact", "compact_full"):
            kv.compact(full=op == "compact_full")
            if op == "compact_full":
                self.all_durable()
        else:
            assert op == "close"
            kv.close()
            self.all_durable()

    # ------------------------------------------------------------------ set-up

    @initialize(sync=st.booleans(), memtable=st.sampled_from([256, 512, 1024]), block=st.sampled_from([64, 128]),
                bloom=st.sampled_from([0, 10]))
    def start(self, sync: bool, memtable: int, block: int, bloom: int) -> None:
        self.config = Config(memtable_size=memtable, block_size=block, bloom_bits_per_key=bloom, sync=sync,
                             background=False, cache_size=4096)
        self.kv = self.open(self.fs)

    @invariant()
    def invariants_hold(self) -> None:
        if self.kv is not None:
            self.kv._check()
        if isinstance(self.fs, CheckingFS):
            assert self.fs.violations == []

    # ------------------------------------------------------------------ writes and reads

    @rule(key=keys, pad=pads)
    def kv_set(self, key: bytes, pad: int) -> None:
        self.run_op("set", key, pad)

    @rule(key=keys, pad=pads, ttl=ttls)
    def kv_set_ttl(self, key: bytes, pad: int, ttl: float) -> None:
        self.run_op("set_ttl", key, pad, ttl)

    @rule(key=keys, pad=pads, ttl=ttls)
    def kv_tx_ttl(self, key: bytes, pad: int, ttl: float) -> None:
        self.run_op("tx_ttl", key, pad, ttl)

    @rule(by=ticks)
    def tick(self, by: float) -> None:
        """Move the clock forward; what expired reads as absent from now on."""
        self.clock.now += by

    @rule(key=keys)
    def kv_delete(self, key: bytes) -> None:
        self.run_op("delete", key, 0)

    @rule(key=keys)
    def kv_delete_range(self, key: bytes) -> None:
        self.run_op("delete_range", key, 0)

    @rule(key=keys, pad=pads)
    def kv_tx_range(self, key: bytes, pad: int) -> None:
        self.run_op("tx_range", key, pad)

    @rule(key=keys)
    def kv_get(self, key: bytes) -> None:
        value = self.live(self.model).get(key)
        assert self.db.get(key) == value
        assert self.db.ttl(key) == (None if value is None else self.ttl_of(value))

    @rule(start=st.none() | keys, end=st.none() | keys, reverse=st.booleans())
    def kv_scan(self, start: bytes | None, end: bytes | None, reverse: bool) -> None:
        got = list(self.db.scan(start, end, reverse=reverse))
        assert got == expected_scan(self.live(self.model), start, end, reverse)

    @rule()
    def flush(self) -> None:
        self.run_op("flush", b"", 0)

    @rule(full=st.booleans())
    def compact(self, full: bool) -> None:
        self.run_op("compact_full" if full else "compact", b"", 0)

    # ------------------------------------------------------------------ transactions

    @precondition(lambda self: self.tx is None)
    @rule()
    def tx_begin(self) -> None:
        self.tx = OpenTx(self.db.new_tx(), dict(self.model), len(self.commits))

    @precondition(lambda self: self.tx is not None)
    @rule(key=keys, pad=pads, ttl=st.none() | ttls)
    def tx_set(self, key: bytes, pad: int, ttl: float | None) -> None:
        assert self.tx is not None
        value = self.value(pad)
        self.tx.tx.set(key, value, ttl=ttl)
        self.tx.writes[key] = value
        if ttl is not None:  # its expiry is known at the commit
            self.tx.ttls[value] = ttl

    @precondition(lambda self: self.tx is not None)
    @rule(key=keys)
    def tx_delete(self, key: bytes) -> None:
        assert self.tx is not None
        assert self.tx.tx.delete(key) == (key in self.live(self.tx.view()))
        self.tx.read(key)
        self.tx.writes[key] = None

    @precondition(lambda self: self.tx is not None)
    @rule(key=keys)
    def tx_get(self, key: bytes) -> None:
        assert self.tx is not None
        assert self.tx.tx.get(key) == self.live(self.tx.view()).get(key)
        self.tx.read(key)

    @precondition(lambda self: self.tx is not None)
    @rule(start=st.none() | keys, end=st.none() | keys, reverse=st.booleans())
    def tx_scan(self, start: bytes | None, end: bytes | None, reverse: bool) -> None:
        assert self.tx is not None
        got = list(self.tx.tx.scan(start, end, reverse=reverse))
        assert got == expected_scan(self.live(self.tx.view()), start, end, reverse)
        self.tx.scanned.append((start, end))

    @precondition(lambda self: self.tx is not None)
    @rule(sync=st.booleans())
    def tx_commit(self, sync: bool) -> None:
        assert self.tx is not None
        tx, self.tx = self.tx, None
        if not tx.writes:  # nothing to write: not a commit, but a sync makes every commit before it durable
            tx.tx.commit(sync=sync)
            if sync:
                self.all_durable()
            return
        if any(tx.covers(k) for c in self.commits[tx.start:] for k in c.writes):
            with pytest.raises(ConflictError):  # a commit after its snapshot wrote what it read
                tx.tx.commit(sync=sync)
            event("conflict")
            return
        for value, ttl in tx.ttls.items():
            if value in tx.writes.values():  # not written over by the transaction's later writes
                self.expiring(value, ttl)
        self.commits.append(Commit(tx.writes, Status.INFLIGHT))
        tx.tx.commit(sync=sync)
        self.commits.pop()
        self.committed(tx.writes, sync)

    @precondition(lambda self: self.tx is not None)
    @rule()
    def tx_abort(self) -> None:
        assert self.tx is not None
        self.tx.tx.abort()
        self.tx = None

    # ------------------------------------------------------------------ close, crash

    @rule()
    def close_and_reopen(self) -> None:
        tx = self.tx
        self.run_op("close", b"", 0)
        if tx is not None and tx.writes:
            try:
                tx.tx.commit()
            except ClosedError:
                pass
            else:
                raise AssertionError("a transaction committed on a closed KV")
        self.let_go_of_tx()
        self.kv = self.open(self.fs)
        assert self.read_all(self.kv) == self.live(self.model)
        self.base = dict(self.model)
        self.commits = []

    @rule(mode=modes, seed=seeds, crashes=recovery_crashes)
    def crash(self, mode: CrashMode, seed: int, crashes: list[tuple[int, CrashMode, int]]) -> None:
        image = self.fs.crash_image(mode, seed)
        self.drop_kv()
        self.fs = image
        self.recover(image, mode is CrashMode.KILL, crashes)

    @rule(op=st.sampled_from(OPS), key=keys, pad=pads, ttl=ttls, at=st.integers(1, 30), mode=modes, seed=seeds,
          crashes=recovery_crashes)
    def crash_during(self, op: str, key: bytes, pad: int, ttl: float, at: int, mode: CrashMode, seed: int,
                     crashes: list[tuple[int, CrashMode, int]]) -> None:
        """Crash at the ``at``-th file operation of one write, flush, compaction or close."""
        self.fs.crash_at(at)
        try:
            self.run_op(op, key, pad, ttl)
        except BaseException:
            if not crashed(self.fs):
                raise
            image = self.fs.crash_image(mode, seed)
            self.drop_kv()
            self.fs = image
            self.recover(image, mode is CrashMode.KILL, crashes)
            return
        self.fs.crash_at(None)
        if op == "close":
            self.let_go_of_tx()
            self.kv = self.open(self.fs)
            assert self.read_all(self.kv) == self.live(self.model)
            self.base = dict(self.model)
            self.commits = []

    # ------------------------------------------------------------------ I/O errors

    @rule(data=st.data(), fault=st.sampled_from(FAULT_OPS), pattern=st.sampled_from(FAULT_PATTERNS),
          nth=st.integers(1, 3), enospc=st.booleans(), space=st.none() | st.integers(0, 3000),
          restart=st.sampled_from([CrashMode.KILL, CrashMode.KILL, CrashMode.DROP, CrashMode.TORN]), seed=seeds)
    def io_error(self, data: st.DataObject, fault: str, pattern: str, nth: int, enospc: bool, space: int | None,
                 restart: CrashMode, seed: int) -> None:
        """Arm an EIO/ENOSPC, run writes until it fires: that one and every later write raise FailedError."""
        if self.tx is not None:
            self.tx.tx.abort()
            self.tx = None
        fs = self.fs
        if space is not None:
            fs.space_limit = space
        else:
            fs.fail(fault, pattern, nth, errno.ENOSPC if enospc else errno.EIO)
        failed = False
        for _ in range(12):
            op = data.draw(st.sampled_from(OPS), label="op")
            key = data.draw(keys, label="key")
            try:
                self.run_op(op, key, data.draw(pads, label="pad"), data.draw(ttls, label="ttl"))
            except FailedError as exc:
                event(f"FailedError in {op}")
                assert isinstance(exc.__cause__, OSError), "FailedError must be raised from the OSError"
                failed = True
                break
            if op == "close":
                break
        fs.space_limit = None
        sim(fs)._faults.clear()
        if not failed:
            if self.db._closed:
                self.kv = self.open(fs)
                assert self.read_all(self.kv) == self.live(self.model)
                self.base = dict(self.model)
                self.commits = []
            return
        kv = self.db
        if not kv._closed:
            live = self.live(self.model)
            for op in ("set", "set_ttl", "delete", "tx_sync", "tx_nosync", "tx_ttl", "flush", "compact",
                       "compact_full"):
                if op == "delete" and not live:
                    continue
                key = next(iter(live)) if op == "delete" else b"k00"
                before = len(self.commits)
                try:
                    self.run_op(op, key, 0)
                except FailedError:
                    del self.commits[before:]  # refused: nothing was written
                else:
                    raise AssertionError(f"{op} was accepted after the KV failed")
            kv.close()
        image = fs.crash_image(restart, seed)
        self.drop_kv()
        self.fs = image
        self.recover(image, restart is CrashMode.KILL, [])

    # ------------------------------------------------------------------ damage

    @precondition(lambda self: self.kv is not None)
    @rule(part=st.sampled_from(TARGETS), data=st.data())
    def damage(self, part: str, data: st.DataObject) -> None:
        """Flip one byte of one structure in a killed copy of the disk, open it, check what docs/durability.md says."""
        image = self.fs.crash_image(CrashMode.KILL)
        names = image.listdir(DB)
        # a slot torn by an earlier crash stays invalid until the next meta write goes to it
        broken = {str(n) for n in ("meta0", "meta1") if n in names} - set(meta_versions(image))
        expect: Model | None = self.live(self.model)  # None: the damage must be reported
        if part.startswith("wal"):
            logs = sorted(n for n in names if n.endswith(".log"))
            if not logs:
                return
            name = logs[-1]
            frames = wal_frames(image.read_file(os.path.join(DB, name)))
            if part == "wal_middle":
                before_durable = [f for i, f in enumerate(frames) if any(g[2] > f[0] for g in frames[i + 1 :])]
                if not before_durable:
                    return
                at, size, _ = data.draw(st.sampled_from(before_durable), label="frame")
                expect = None
            else:
                if not frames or not self.commits:
                    return
                at, size, _ = frames[-1]
                state = dict(self.base)
                for c in self.commits[:-1]:
                    state = apply(state, c.writes)
                expect = self.live(state)
            damaged = {name}
        elif part.startswith("meta"):
            versions = meta_versions(image)
            if not versions:
                return
            newest = max(versions, key=lambda n: versions[n])
            if part == "meta_both":
                if len(versions) < 2:
                    return
                damaged = set(versions)
                expect = None
            elif part == "meta_newest":
                damaged = {newest}
            else:
                if len(versions) < 2:
                    return
                damaged = set(versions) - {newest}
            if len(versions) < 2:
                expect = None  # the only slot
            if isinstance(image, CheckingFS):
                # falling back past a damaged newest slot forgets file numbers only it recorded (of files
                # already deleted): media damage, not a crash, so the never-reused rule cannot hold here
                image.created.clear()
            for slot in sorted(damaged):
                size = len(image.read_file(os.path.join(DB, slot)))
                image.corrupt(os.path.join(DB, slot), data.draw(st.integers(0, size - 1), label="offset"),
                              data.draw(st.integers(1, 255), label="xor"))
            self.check_damage(image, damaged | broken, expect)
            return
        else:
            tables = [t.name for t in self.db.stats().tables]
            if not tables:
                return
            name = data.draw(st.sampled_from(tables), label="table")
            places = table_layout(image, name)[part]
            if not places:  # a table without blocks (range tombstones only), or without range tombstones
                return
            at, size = data.draw(st.sampled_from(places), label="part")
            damaged = {name}
            expect = None
        offset = at + data.draw(st.integers(0, size - 1), label="offset")
        image.corrupt(os.path.join(DB, name), offset, data.draw(st.integers(1, 255), label="xor"))
        self.check_damage(image, damaged, expect, at if part == "wal_middle" else None, broken)

    def check_damage(self, image: FS, damaged: set[str], expect: Model | None,
                     offset: int | None = None, broken: frozenset[str] | set[str] = frozenset()) -> None:
        """Open the damaged copy: ``CorruptionError`` naming a damaged file, or (``expect`` not None) silent
        and correct, with ``check()`` naming nothing but the damaged files (and ``broken`` ones: meta slots
        torn by an earlier crash)."""
        try:
            kv = self.open(image)
            got = self.read_all(kv)
            problems = kv.check()
            kv.close()
        except CorruptionError as exc:
            event("damage: CorruptionError")
            assert os.path.basename(exc.path) in damaged, (exc, damaged)
            assert exc.offset >= 0, exc
            if offset is not None:
                assert exc.offset == offset, (exc, offset)
            return
        assert all(any(n in p for n in damaged | broken) for p in problems), (problems, damaged, broken)
        event("damage: silent" if not problems else "damage: reported by check()")
        problems = [p for p in problems if any(n in p for n in damaged)]
        if expect is None:
            assert problems, f"damage to {damaged} went unnoticed"
        else:
            assert got == expect, (sorted(got.items()), sorted(expect.items()))
