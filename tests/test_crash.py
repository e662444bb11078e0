"""A Hypothesis crash machine over SimFS: crashes, crashes during recovery, I/O errors, damage.

It checks the promises of docs/transactions.md and docs/durability.md.

The machine drives a KV with a tiny memtable and tiny blocks (so flushes and
merges happen every few steps) through transactions, one-operation writes
(some with a ttl, under a clock a rule moves forward), flushes and
compactions, and at any step may crash the simulated machine in each
``CrashMode`` (also part-way through an operation, and again part-way through
the recovery that follows), close and reopen, inject an I/O error (EIO on one
operation kind and file pattern, or ENOSPC), or flip one byte of one
structure on disk (WAL frame before a durable point, WAL tail, table block,
index, bloom, properties, footer, header, each meta slot, both).

The oracle keeps every commit issued since the last recovery, each classed
as durable (a sync commit returned, a later durable commit returned, or a
flush/compact/close returned), acknowledged (returned without sync) or
in-flight (raised ``FailedError`` or crashed mid-call); aborted transactions
and empty commits are not commits.  After a crash the recovered database
must equal the state after some prefix of the commits that holds every
durable one (after a process kill: every acknowledged one).  Every value
written is unique, so a partial or aborted transaction cannot pass for a
prefix.  Every KV reads the machine's one clock, which never goes back, not
across crashes and reopens either: a value written with a ttl has one expiry
(the clock at its call or commit, plus the ttl), every state is compared as
reads see it now (less what expired), and a recovered key has the ttl left
that its value was written with.  After damage, the outcome is the one
docs/durability.md names: a ``CorruptionError`` naming the damaged file (at an
offset >= 0), or a silent and correct recovery where the damage is a torn tail
or one meta slot; never a wrong value, never an empty database.

There is no conflict detection in this version, so the model applies
commits last-writer-wins.
"""

from __future__ import annotations

import enum
import errno
import gc
import logging
import os
import weakref
from dataclasses import dataclass, field
from typing import ClassVar

import pytest
from checkfs import CheckingFS
from conftest import HYPOTHESIS_CACHE_SIZE
from hypothesis import Phase, event, given, settings
from hypothesis import strategies as st
from hypothesis.internal.conjecture.data import ConjectureResult
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from kvstore import KV, KVTX, ClosedError, Config, ConflictError, CorruptionError, FailedError, record
from kvstore.simfs import CrashMode, SimFS
from kvstore.sorted_file import BlockCache, TableReader

Model = dict[bytes, bytes]
FS = SimFS | CheckingFS
Writes = dict[bytes, "bytes | None"]

DB = "/db"
KEYS = [b"", *(b"k%02d" % i for i in range(11))]
keys = st.sampled_from(KEYS)
pads = st.integers(0, 48)
seeds = st.integers(0, 2**32 - 1)
modes = st.sampled_from(list(CrashMode))
#: crash points inside a recovery (an open makes about 5..20 mutating operations)
recovery_crashes = st.lists(st.tuples(st.integers(1, 24), modes, seeds), max_size=2)
#: seconds a value set with a ttl lasts, and steps of the clock: multiples of 1/4, so sums are exact
ttls = st.sampled_from([0.5, 1.0, 2.0, 5.0, 20.0])
ticks = st.sampled_from([0.0, 0.5, 1.0, 2.0, 5.0])
OPS = ["set", "set_ttl", "delete", "delete_range", "tx_sync", "tx_nosync", "tx_ttl", "tx_range", "flush", "compact",
       "compact_full", "close"]
FAULT_OPS = ["create", "write", "truncate", "fsync", "sync_dir", "rename", "unlink"]
FAULT_PATTERNS = ["*", "*.log", "*.sst", "meta?", "meta?.tmp"]
TARGETS = ["wal_middle", "wal_tail", "block", "index", "bloom", "ranges", "props", "footer", "header",
           "meta_newest", "meta_older", "meta_both"]


class Status(enum.Enum):
    DURABLE = "durable"  # survives power loss
    ACKED = "acked"  # returned without sync: survives a process kill
    INFLIGHT = "inflight"  # raised FailedError or crashed mid-call: may or may not be there


@dataclass
class Commit:
    writes: Writes
    status: Status


class Clock:
    """The time every KV of the machine reads, in seconds; a rule moves ``now`` forward."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class OpenTx:
    tx: KVTX
    snapshot: Model
    start: int  # commits before this index of the machine's list are in its snapshot
    writes: Writes = field(default_factory=dict)
    ttls: dict[bytes, float] = field(default_factory=dict)  # the ttl of each value it set with one, by value
    reads: set[bytes] = field(default_factory=set)  # keys read from the database (docs/transactions.md)
    scanned: list[tuple[bytes | None, bytes | None]] = field(default_factory=list)  # exhausted scans

    def view(self) -> Model:
        return apply(self.snapshot, self.writes)

    def read(self, key: bytes) -> None:
        if key not in self.writes:
            self.reads.add(key)

    def covers(self, key: bytes) -> bool:
        return key in self.reads or any((lo is None or key >= lo) and (hi is None or key < hi)
                                        for lo, hi in self.scanned)


def apply(state: Model, writes: Writes) -> Model:
    out = dict(state)
    for key, value in writes.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def expected_scan(view: Model, start: bytes | None, end: bytes | None, reverse: bool) -> list[tuple[bytes, bytes]]:
    out = [(k, v) for k, v in sorted(view.items()) if (start is None or k >= start) and (end is None or k < end)]
    return out[::-1] if reverse else out


def read_all(kv: KV) -> Model:
    """Every pair by a full scan, checked against a get of every key the machine uses."""
    state = dict(kv.scan())
    for key in KEYS:
        assert kv.get(key) == state.get(key), key
    assert list(kv.scan(reverse=True)) == sorted(state.items(), reverse=True)
    return state


def crashed(fs: FS) -> bool:
    """Whether the armed crash point was reached: the machine is down.  Code that runs on after the
    ``SimulatedCrash`` (``finally`` blocks) may then raise something else from the dead file system,
    as if the process had gone on a moment longer; a real crash ends it there."""
    return sim(fs)._down


def sim(fs: FS) -> SimFS:
    """The SimFS under ``fs``."""
    return fs.inner if isinstance(fs, CheckingFS) else fs


def wal_frames(buf: bytes) -> list[tuple[int, int, int]]:
    """(offset, length, durable_offset) of each whole frame of a log's bytes."""
    frames = []
    pos = record.FILE_HEADER.size
    fsize = record.WAL_FRAME.size
    while pos + fsize <= len(buf):
        _, length, _ = record.WAL_FRAME.unpack_from(buf, pos)
        if pos + fsize + length > len(buf):
            break
        _, durable, _ = record.COMMIT_HEADER.unpack_from(buf, pos + fsize)
        frames.append((pos, fsize + length, durable))
        pos += fsize + length
    return frames


def table_layout(fs: FS, name: str) -> dict[str, list[tuple[int, int]]]:
    """(offset, size) of each structure of one table: header, data blocks, index, bloom, range tombstones
    (none, or one section), props, footer."""
    path = os.path.join(DB, name)
    number = int(name.split(".")[0])
    reader = TableReader(fs, path, number, BlockCache(0))
    try:
        blocks = list(zip(reader._offsets, reader._sizes))
    finally:
        reader.close()
    data = fs.read_file(path)
    foot_at = len(data) - record.FOOTER.size
    index, bloom, props = record.decode_footer(data[foot_at:], path, foot_at, number)
    version = int.from_bytes(data[4:6], "little")
    payload = record.open_chunk(data[props[0] : props[0] + props[1]], path, number, props[0])
    ranges = record.decode_props(payload, path, props[0], version)[6]
    return {"header": [(0, record.FILE_HEADER.size)], "block": blocks, "index": [index], "bloom": [bloom],
            "ranges": [ranges] if ranges != (0, 0) else [], "props": [props],
            "footer": [(foot_at, record.FOOTER.size)]}


def meta_versions(fs: FS) -> dict[str, int]:
    """The version held by each valid meta slot, by slot name."""
    out = {}
    for slot, name in enumerate(("meta0", "meta1")):
        path = os.path.join(DB, name)
        if fs.exists(path):
            try:
                out[name] = record.decode_meta(fs.read_file(path), path, slot)[0]
            except CorruptionError:
                continue
    return out


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


class CheckedCrashMachine(CrashMachine):
    """The same machine on ``CheckingFS``, which asserts the durability protocol on every file operation."""

    def new_fs(self) -> FS:
        return CheckingFS(SimFS())


_profile = settings()
CrashMachine.TestCase.settings = settings(
    _profile,
    max_examples=max(1, _profile.max_examples * 5),
    stateful_step_count=_profile.stateful_step_count,
)
TestCrashMachine = CrashMachine.TestCase
CheckedCrashMachine.TestCase.settings = settings(
    _profile,
    max_examples=max(1, _profile.max_examples * 3),
    stateful_step_count=_profile.stateful_step_count,
)
TestCheckedCrashMachine = CheckedCrashMachine.TestCase


# ---------------------------------------------------------------- what a run keeps alive (tests/conftest.py)


class _CountedCrashMachine(CrashMachine):
    """The machine, remembering each finished example by a weak reference."""

    finished: ClassVar[list[weakref.ref[CrashMachine]]] = []

    def teardown(self) -> None:
        super().teardown()
        self.finished.append(weakref.ref(self))


def test_crash_machine_examples_are_not_kept_alive_by_log_records(caplog: pytest.LogCaptureFixture) -> None:
    """A stopped KV logs the ``OSError`` that stopped it; a captured record holding that error held its
    traceback, so the example's machine, KVs and SimFS images, until the test ended."""
    _CountedCrashMachine.finished.clear()
    run_state_machine_as_test(_CountedCrashMachine, settings=settings(
        max_examples=20, stateful_step_count=50, derandomize=True, database=None, phases=[Phase.generate]))
    gc.collect()
    assert len(_CountedCrashMachine.finished) >= 20
    assert any(r.name == "kvstore" and r.levelno == logging.ERROR for r in caplog.records), "no KV stopped"
    assert sum(ref() is not None for ref in _CountedCrashMachine.finished) == 0


def test_crash_machine_example_ended_in_a_transaction_is_not_kept_alive() -> None:
    """A KV keeps the ``CorruptionError`` of a damaged meta slot it read, whose traceback holds the frames
    of the example that opened it; a transaction left open held that KV from its finalizer, and so the
    example, its frames and everything below them, for as long as the process ran."""
    machine = CrashMachine()
    machine.start(sync=True, memtable=256, block=64, bloom=0)
    machine.kv_set(b"k00", 0)
    machine.flush()
    machine.run_op("close", b"", 0)
    versions = meta_versions(machine.fs)
    assert len(versions) == 2, versions
    machine.fs.corrupt(os.path.join(DB, min(versions, key=lambda n: versions[n])), 0)
    machine.kv = machine.open(machine.fs)  # falls back to the other slot, and keeps the error
    machine.tx_begin()
    machine.teardown()
    ref = weakref.ref(machine)
    del machine
    gc.collect()
    assert ref() is None


def test_hypothesis_keeps_a_bounded_number_of_test_cases() -> None:
    """Hypothesis caches every test case of a run (up to 10,000), each holding every choice drawn."""
    examples = HYPOTHESIS_CACHE_SIZE + 200
    calls: list[None] = []
    live: list[int] = []  # test cases alive at the first example, and at the last

    def count() -> int:
        gc.collect()
        return sum(type(o) is ConjectureResult for o in gc.get_objects())

    @settings(max_examples=examples, derandomize=True, database=None, phases=[Phase.generate])
    @given(st.binary(min_size=16, max_size=16))
    def run(_: bytes) -> None:
        calls.append(None)
        if len(calls) in (1, examples):
            live.append(count())

    run()
    assert len(live) == 2, "the run ended early"
    assert live[1] - live[0] <= HYPOTHESIS_CACHE_SIZE + 10, live


# ---------------------------------------------------------------- regressions found by the machine


def test_damaged_checksum_of_an_empty_bloom_chunk_fails_open() -> None:
    """With ``bloom_bits_per_key=0`` the bloom chunk is only a checksum; open skipped it, so a flipped byte
    there went unnoticed by open, reads and ``check()``."""
    fs = SimFS()
    config = Config(memtable_size=256, block_size=64, bloom_bits_per_key=0, background=False)
    with KV.open(DB, config, fs=fs) as kv:
        kv.set(b"", b"v")
    (name,) = [n for n in fs.listdir(DB) if n.endswith(".sst")]
    ((at, size),) = table_layout(fs, name)["bloom"]
    assert size == record.CHUNK_CRC.size
    fs.corrupt(os.path.join(DB, name), at, 1)
    try:
        KV.open(DB, config, fs=fs).close()
    except CorruptionError as exc:
        assert os.path.basename(exc.path) == name and exc.offset == at
    else:
        raise AssertionError("a damaged bloom checksum went unnoticed")
