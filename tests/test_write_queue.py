"""The write queue and background work (kvstore/store.py): stalls when flushing falls behind, flush()
waiting for its own memtable, write sets kept only while a transaction may conflict with them, and
errors in background work stopping the KV."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import pathlib
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import pytest

from kvstore import KV, ClosedError, Config, ConflictError, FailedError, KeyOrValueTooLargeError, record
from kvstore.simfs import CrashMode, SimFile, SimFS

# A deadline for waits that must end; passing it means the engine hung, never that it was slow.
HANG = 60.0


class GateFS(SimFS):
    """A SimFS on which creating a table waits until ``gate`` is set: the background flush stops."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.waiting = threading.Event()

    def open(self, path: str, *, write: bool = False, create: bool = False) -> SimFile:
        if create and path.endswith(".sst") and not self.gate.is_set():
            self.waiting.set()
            assert self.gate.wait(HANG), "the test never opened the gate"
        return super().open(path, write=write, create=create)


def _wait_for(what: str, condition: object) -> None:
    assert callable(condition)
    deadline = time.monotonic() + HANG
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.001)


def test_flush_falling_behind_stalls_writers_visibly_and_readers_go_on() -> None:
    fs = GateFS()
    kv = KV.open("/db", Config(memtable_size=2048, sync=False), fs=fs)
    kv.set(b"before", b"1")
    done = threading.Event()

    def writer() -> None:
        for i in range(400):  # about ten memtables' worth
            kv.set(b"k%04d" % i, b"v" * 40)
        done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        _wait_for("a commit stalled behind two frozen memtables", lambda: kv.stats().write_stalls >= 1)
        _wait_for("the flush reached its table", fs.waiting.is_set)
        stats = kv.stats()
        assert stats.immutable_memtables == 2 and not done.is_set()
        assert kv.get(b"before") == b"1"  # readers never wait for the stalled writer or the flush
        assert sum(1 for _ in kv.scan()) >= 1
    finally:
        fs.gate.set()
    thread.join(HANG)
    assert done.is_set()
    stats = kv.stats()
    assert stats.write_stalls >= 1 and stats.stall_seconds > 0 and stats.failed is None
    assert [kv.get(b"k%04d" % i) for i in range(400)] == [b"v" * 40] * 400
    kv.close()
    with KV.open("/db", fs=fs) as again:
        assert sum(1 for _ in again.scan()) == 401


def test_flush_returns_once_the_memtable_it_froze_is_a_table() -> None:
    with KV.open("/db", Config(sync=False), fs=SimFS()) as kv:
        for i in range(100):
            kv.set(b"k%03d" % i, b"v")
        kv.flush()
        stats = kv.stats()
        assert stats.immutable_memtables == 0 and stats.memtable_entries == 0
        assert sum(t.entries for t in stats.tables) == 100
        kv.flush()  # an empty memtable: nothing to do
        assert kv.stats().flushes == stats.flushes


@pytest.mark.parametrize("background", [True, False], ids=["background", "inline"])
def test_write_sets_are_kept_only_while_a_transaction_may_conflict(background: bool) -> None:
    with KV.open("/db", Config(sync=False, background=background), fs=SimFS()) as kv:
        kv.set(b"a", b"0")
        assert kv.stats().tracked_writes == 0  # no transaction: nothing to remember
        tx = kv.new_tx()
        assert tx.get(b"a") == b"0"
        for i in range(50):
            kv.set(b"k%02d" % i, b"v")
        kv.set(b"a", b"1")
        assert kv.stats().tracked_writes == 51
        tx.set(b"b", b"x")
        with pytest.raises(ConflictError):
            tx.commit()
        kv.set(b"c", b"2")  # the next commit drops what no live transaction needs
        assert kv.stats().tracked_writes == 0
        old = kv.new_tx()
        kv.set(b"d", b"3")
        young = kv.new_tx()
        kv.set(b"e", b"4")
        old.abort()
        kv.set(b"f", b"5")  # only what came after the younger transaction's snapshot stays
        assert kv.stats().tracked_writes == 2
        young.abort()


def test_an_error_in_the_background_flush_stops_the_kv_and_is_reported(caplog: pytest.LogCaptureFixture) -> None:
    fs = SimFS()
    kv = KV.open("/db", Config(memtable_size=1024, sync=False), fs=fs)
    fs.fail("create", "*.sst")
    # the stall ends in FailedError once the flusher has stopped
    with caplog.at_level(logging.ERROR, logger="kvstore"), pytest.raises(FailedError):
        for i in range(10_000):
            kv.set(b"k%05d" % i, b"v" * 40)
    failed = kv.stats().failed
    assert failed is not None and ".sst" in failed
    assert any("flushing" in r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)
    with pytest.raises(FailedError):
        kv.set(b"x", b"y")
    with pytest.raises(FailedError):
        kv.flush()
    kv.close()


# ---------------------------------------------------------------- found by review: each a regression test


class GatedSyncFS(SimFS):
    """A SimFS whose log fsyncs wait at ``gate`` while it is closed (and then succeed), and fail while
    ``fail_next`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.gate.set()
        self.waiting = threading.Event()
        self.fail_next = False

    def open(self, path: str, *, write: bool = False, create: bool = False) -> SimFile:
        file = super().open(path, write=write, create=create)
        if path.endswith(".log"):
            fs = self
            inner_fsync = file.fsync

            def fsync() -> None:
                if not fs.gate.is_set():  # held at the gate, then done
                    fs.waiting.set()
                    assert fs.gate.wait(HANG), "the test never opened the gate"
                elif fs.fail_next:
                    raise OSError(errno.EIO, "simulated EIO on fsync", path)
                inner_fsync()

            file.fsync = fsync  # type: ignore[method-assign]
        return file


def _thread(fn: Callable[[], object]) -> tuple[threading.Thread, list[object]]:
    out: list[object] = []

    def run() -> None:
        try:
            out.append(fn())
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            out.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def test_an_error_applying_a_logged_commit_stops_the_kv_instead_of_reusing_its_sequence() -> None:
    fs = SimFS()
    kv = KV.open("/db", Config(sync=False, background=False), fs=fs)
    kv.set(b"a", b"1")

    def boom(commits: object) -> int:
        raise RuntimeError("simulated failure after the WAL write")

    kv._mem.apply_many = boom  # type: ignore[method-assign]
    with pytest.raises(FailedError) as raised:  # its frame is in the log: the outcome is unknown until reopen
        kv.set(b"b", b"2")
    assert isinstance(raised.value.__cause__, RuntimeError)
    assert kv.stats().failed is not None
    with pytest.raises(FailedError):
        kv.set(b"c", b"3")
    with contextlib.suppress(FailedError):
        kv.close()
    with KV.open("/db", fs=fs.crash_image(CrashMode.KILL)) as again:  # opens: no sequence was used twice
        assert again.get(b"a") == b"1" and again.get(b"b") == b"2" and again.get(b"c") is None


def test_every_member_of_a_failed_group_gets_failed_error_raised_from_the_os_error() -> None:
    fs = GatedSyncFS()
    kv = KV.open("/db", Config(sync=True, background=False), fs=fs)
    fs.gate.clear()
    first, first_out = _thread(lambda: kv.set(b"lead", b"1"))
    assert fs.waiting.wait(HANG)
    members = [_thread(lambda i=i: kv.set(b"m%d" % i, b"1")) for i in range(3)]  # type: ignore[misc]
    _wait_for("three commits queued behind the leader", lambda: len(kv._pipeline.writers) == 4)
    fs.fail_next = True  # the leader's fsync succeeds; the next group's, all three queued, fails
    fs.gate.set()
    for thread, _ in [(first, first_out), *members]:
        thread.join(HANG)
    assert first_out == [None]
    errors = [out[0] for _, out in members]
    assert all(isinstance(e, FailedError) for e in errors), errors
    assert all(isinstance(e.__cause__, OSError) for e in errors if isinstance(e, BaseException))
    kv.close()


def test_a_synced_commit_that_writes_nothing_still_makes_earlier_commits_durable() -> None:
    fs = SimFS()
    kv = KV.open("/db", Config(sync=False), fs=fs)
    kv.set(b"a", b"1")
    with kv.new_tx() as tx:
        assert tx.get(b"a") == b"1"
        tx.commit(sync=True)  # read-only
    with KV.open("/db", fs=fs.crash_image(CrashMode.DROP)) as after:
        assert after.get(b"a") == b"1"
    kv.close()
    fs = SimFS()
    kv = KV.open("/db", Config(sync=True), fs=fs)
    with kv.new_tx() as tx:
        tx.set(b"b", b"2")
        tx.commit(sync=False)
    assert kv.delete(b"absent") is False  # writes nothing, but Config.sync asks for a sync
    with KV.open("/db", fs=fs.crash_image(CrashMode.DROP)) as after:
        assert after.get(b"b") == b"2"
    kv.close()


def test_an_oversized_transaction_is_refused_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(record, "MAX_RECORD_PAYLOAD", 10_000)
    with KV.open("/db", Config(sync=False), fs=SimFS()) as kv:
        tx = kv.new_tx()
        for i in range(100):
            tx.set(b"k%03d" % i, b"v" * 200)
        with pytest.raises(KeyOrValueTooLargeError):
            tx.commit()
        kv.set(b"small", b"1")
        assert kv.get(b"small") == b"1" and kv.get(b"k000") is None


def test_flush_waits_for_a_frozen_memtable_even_when_the_memtable_is_empty() -> None:
    fs = GateFS()
    kv = KV.open("/db", Config(memtable_size=2048, sync=False), fs=fs)
    try:
        i = 0
        while kv.stats().immutable_memtables == 0:  # the commit that fills the memtable freezes it
            kv.set(b"k%04d" % i, b"v" * 40)
            i += 1
        assert kv.stats().memtable_entries >= 0
        flusher, out = _thread(kv.flush)
        flusher.join(0.2)
        assert flusher.is_alive()  # held: its memtable is not a table yet
    finally:
        fs.gate.set()
    flusher.join(HANG)
    assert out == [None]
    stats = kv.stats()
    assert stats.immutable_memtables == 0 and stats.tables
    kv.compact(full=True)
    assert len(kv.stats().tables) == 1
    kv.close()


def test_check_and_a_second_close_wait_for_a_close_in_progress() -> None:
    fs = GatedSyncFS()
    kv = KV.open("/db", Config(sync=False, background=False), fs=fs)
    kv.set(b"a", b"1")
    fs.gate.clear()
    closer, closed = _thread(kv.close)  # its final flush syncs the log: held at the gate
    try:
        assert fs.waiting.wait(HANG)
        with pytest.raises(ClosedError):
            kv.check()
        second, second_out = _thread(kv.close)
        second.join(0.2)
        assert second.is_alive()  # returns only once the first is done
    finally:
        fs.gate.set()
    closer.join(HANG)
    second.join(HANG)
    assert closed == [None] and second_out == [None] and kv._closed
    with KV.open("/db", fs=fs) as again:
        assert again.get(b"a") == b"1"


INTERRUPTED_IN_QUEUE = """
import _thread, gc, sys, threading
gc.disable()  # a KeyboardInterrupt that lands in a finalizer the collector runs is printed and lost
from kvstore import KV, Config
from kvstore.simfs import SimFS
sys.path.insert(0, sys.argv[1])
from test_write_queue import GatedSyncFS
fs = GatedSyncFS()
kv = KV.open("/db", Config(sync=True, background=False), fs=fs)
fs.gate.clear()
leader = threading.Thread(target=lambda: kv.set(b"lead", b"1"))
leader.start()
fs.waiting.wait(60)
def interrupt():
    while len(kv._pipeline.writers) < 2:
        pass
    _thread.interrupt_main()
    fs.gate.set()
threading.Thread(target=interrupt).start()
try:
    kv.set(b"main", b"1")
    print("not interrupted")
except KeyboardInterrupt:
    print("interrupted")
leader.join()
later = threading.Thread(target=lambda: kv.set(b"later", b"1"), daemon=True)
later.start()
later.join(60)
print("later done" if not later.is_alive() else "later hung", len(kv._pipeline.writers))
"""


def test_a_writer_interrupted_while_queued_leaves_the_queue(tmp_path: pathlib.Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(pathlib.Path(__file__).resolve().parent.parent)}
    proc = subprocess.run([sys.executable, "-c", INTERRUPTED_IN_QUEUE, str(pathlib.Path(__file__).parent)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["interrupted", "later", "done", "0"], proc.stdout
