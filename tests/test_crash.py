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

import gc
import logging
import os
import weakref
from typing import ClassVar

import pytest
from checkfs import CheckingFS
from conftest import HYPOTHESIS_CACHE_SIZE
from crashhelp import DB, FS, meta_versions, table_layout
from crashmachine import CrashMachine
from hypothesis import Phase, given, settings
from hypothesis import strategies as st
from hypothesis.internal.conjecture.data import ConjectureResult
from hypothesis.stateful import run_state_machine_as_test

from kvstore import KV, Config, CorruptionError, record
from kvstore.simfs import SimFS


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
