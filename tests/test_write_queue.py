"""The write queue and background work (kvstore/store.py): stalls when flushing falls behind, flush()
waiting for its own memtable, write sets kept only while a transaction may conflict with them, and
errors in background work stopping the KV."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from kvstore import KV, Config, ConflictError, FailedError
from kvstore.simfs import SimFile, SimFS

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
