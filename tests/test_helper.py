"""Merges in a helper process (kvstore/helper.py): the same table as a merge in this process, its protocol,
and the fallback to a merge here whenever the helper fails."""

from __future__ import annotations

import io
import logging
import os
import pathlib
import signal
import struct
import sys
import time

import pytest

from kvstore import KV, Config, helper, jobs, record, runs
from kvstore.builder import build_table
from kvstore.filenames import table_path
from kvstore.fs import OSFileSystem
from kvstore.merge import EntryChunk, compact_chunks
from kvstore.sorted_file import BlockCache, TableReader
from kvstore.table_writer import TableInfo


def _tables(path: pathlib.Path, config: Config, count: int) -> tuple[list[tuple[str, int]], dict[bytes, bytes | None]]:
    """``count`` overlapping tables written by ``build_table`` (table 1 oldest), newest first, and the model
    of the newest value (None: deleted) of each key."""
    path.mkdir()
    model: dict[bytes, bytes | None] = {}
    tables: list[tuple[str, int]] = []
    seq = 0
    for number in range(1, count + 1):
        rows: dict[bytes, tuple[int, bytes | None]] = {}
        for i in range(300):
            seq += 1
            key = b"k%05d" % ((i * 7 + number * 131) % 1000)
            value = None if i % 11 == 0 else b"v%d-%d" % (number, i)
            rows[key] = (seq, value)
            model[key] = value
        keys = sorted(rows)
        chunk = (keys, [rows[k][0] for k in keys], [rows[k][1] for k in keys])
        file = table_path(str(path), number)
        assert build_table(OSFileSystem(), file, number, config, [chunk]) is not None
        tables.insert(0, (file, number))
    return tables, model


def _entries(path: str, number: int) -> list[tuple[bytes, int, bytes | None]]:
    reader = TableReader(OSFileSystem(), path, number, BlockCache(0))
    try:
        return list(reader.entries())
    finally:
        reader.close()


@pytest.fixture
def manual() -> Config:
    return Config(sync=False, background=False, growth_factor=1000.0, merge_process=False)


@pytest.mark.parametrize("bottom", [False, True])
def test_helper_writes_the_table_a_merge_here_writes(tmp_path: pathlib.Path, manual: Config, bottom: bool) -> None:
    tables, model = _tables(tmp_path / "db", manual, 4)
    assert len(tables) == 4
    here = helper.MergeRequest(tuple(tables), str(tmp_path / "here.sst"), 90, manual, (), bottom)
    there = helper.MergeRequest(tuple(tables), str(tmp_path / "there.sst"), 90, manual, (), bottom)
    info_here, expired_here = helper.merge_here(here)
    info_there, expired_there = helper.merge_files(there)
    assert info_here is not None and info_there is not None and expired_here == expired_there == 0
    assert [getattr(info_here, f) for f in TableInfo.__slots__] == [getattr(info_there, f) for f in TableInfo.__slots__]
    assert pathlib.Path(here.path).read_bytes() == pathlib.Path(there.path).read_bytes()
    rows = _entries(here.path, 90)
    newest = {k: v for k, _, v in rows}
    expected = {k: v for k, v in model.items() if v is not None or not bottom}
    assert newest == expected


@pytest.mark.parametrize("bottom", [False, True])
def test_a_flush_in_the_helper_writes_the_table_a_flush_here_writes(tmp_path: pathlib.Path, manual: Config,
                                                                    bottom: bool) -> None:
    rows: tuple[EntryChunk, ...] = (([b"a", b"b", b"b", b"c"], [9, 8, 3, 7], [b"1", None, b"2", None]),
                                     ([b"d"], [5], [b"4"]))
    request = helper.MergeRequest((), str(tmp_path / "flush.sst"), 7, manual, (4,), bottom, rows)
    info, expired = helper.merge_files(request)
    assert info is not None and info.file_number == 7 and expired == 0
    fs = OSFileSystem()
    here = str(tmp_path / "here.sst")
    assert build_table(fs, here, 7, manual, compact_chunks([iter(rows)], [4], bottom)) is not None
    assert pathlib.Path(here).read_bytes() == pathlib.Path(request.path).read_bytes()
    kept = _entries(request.path, 7)
    assert (b"b", 3, b"2") in kept  # the snapshot at 4 reads it
    assert ((b"c", 7, None) in kept) is not bottom


def test_helper_keeps_versions_a_snapshot_sees(tmp_path: pathlib.Path, manual: Config) -> None:
    tables, _ = _tables(tmp_path / "db", manual, 3)
    seqs = sorted({s for path, number in tables for _, s, _ in _entries(path, number)})
    request = helper.MergeRequest(tuple(tables), str(tmp_path / "out.sst"), 90, manual, (seqs[0],), False)
    assert helper.merge_files(request)[0] is not None
    kept = _entries(request.path, 90)
    assert any(s == seqs[0] for _, s, _ in kept)
    assert len(kept) > len({k for k, _, _ in kept})  # older versions kept for the snapshot


def test_serve_answers_each_frame_and_reports_errors(tmp_path: pathlib.Path, manual: Config) -> None:
    tables, _ = _tables(tmp_path / "db", manual, 2)
    good = helper.MergeRequest(tuple(tables), str(tmp_path / "out.sst"), 90, manual, (), True)
    missing = helper.MergeRequest((("/nonexistent/000001.sst", 1),), str(tmp_path / "x.sst"), 91, manual, (), True)
    source = io.BytesIO()
    for request in (good, missing, "not a request"):
        helper._write_frame(source, request)
    source.seek(0)
    sink = io.BytesIO()
    helper.serve(source, sink)
    sink.seek(0)
    answers = [helper._read_frame(sink) for _ in range(3)]
    assert answers[0][0] == "ok" and answers[0][1][0][0] == 90 and answers[0][1][1] == 0
    assert answers[1][0] == "error" and "FileNotFoundError" in answers[1][1]
    assert answers[2] == ("error", "TypeError: not a merge request: str")
    with pytest.raises(EOFError):
        helper._read_frame(sink)


def test_the_helper_drops_expired_entries_by_the_clock_it_is_given(tmp_path: pathlib.Path, manual: Config) -> None:
    """A request's ``now`` is the KV's clock when the merge began: values expired by it become deletes (and
    go, at the bottom), the rest keep their expiry; the helper says how many it dropped, as a merge here
    does."""
    rows: tuple[EntryChunk, ...] = (([b"a", b"b", b"c", b"d"], [9, 8, 7, 6],
                                      [record.Expiring.of(b"1", 100.0), record.Expiring.of(b"2", 200.0), b"3",
                                       record.Expiring.of(b"4", 99.5)]),)
    for bottom in (False, True):
        request = helper.MergeRequest((), str(tmp_path / f"{bottom}.sst"), 7, manual, (), bottom, rows, (), 100.0)
        here = helper.MergeRequest((), str(tmp_path / f"here{bottom}.sst"), 7, manual, (), bottom, rows, (), 100.0)
        info, expired = helper.merge_files(request)
        assert helper.merge_here(here)[1] == expired == 2
        assert info is not None and info.expiring == 1
        assert pathlib.Path(here.path).read_bytes() == pathlib.Path(request.path).read_bytes()
        kept = _entries(request.path, 7)
        live = [(b"b", 8, record.Expiring.of(b"2", 200.0)), (b"c", 7, b"3")]
        assert kept == (live if bottom else [(b"a", 9, None), *live, (b"d", 6, None)])
        assert [type(v) for k, _, v in kept if k == b"b"] == [record.Expiring]


def test_a_frame_cut_short_is_eof() -> None:
    with pytest.raises(EOFError):
        helper._read_frame(io.BytesIO(struct.pack("<I", 10) + b"abc"))
    with pytest.raises(EOFError):
        helper._read_frame(io.BytesIO(b"\x01"))


def test_failed_helper_raises_helper_error_and_leaves_no_file(tmp_path: pathlib.Path, manual: Config,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    tables, _ = _tables(tmp_path / "db", manual, 2)
    monkeypatch.setattr(helper, "_BOOT", "import sys; sys.stdin.buffer.read(3)")
    monkeypatch.setattr(helper, "_idle", [])
    request = helper.MergeRequest(tuple(tables), str(tmp_path / "out.sst"), 90, manual, (), True)
    pathlib.Path(request.path).write_bytes(b"half")
    with pytest.raises(helper.HelperError):
        helper.merge_files(request)
    assert not os.path.exists(request.path)
    assert helper._idle == []


def test_a_frozen_application_merges_here(tmp_path: pathlib.Path, manual: Config,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    request = helper.MergeRequest((), str(tmp_path / "out.sst"), 90, manual, (), True)
    with pytest.raises(helper.HelperError, match="frozen"):
        helper.merge_files(request)


def test_the_helper_survives_ctrl_c_and_serves_again(tmp_path: pathlib.Path, manual: Config,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    tables, _ = _tables(tmp_path / "db", manual, 2)
    monkeypatch.setattr(helper, "_idle", [])
    first = helper.MergeRequest(tuple(tables), str(tmp_path / "a.sst"), 90, manual, (), True)
    assert helper.merge_files(first) is not None
    (kept,) = helper._idle
    kept._proc.send_signal(signal.SIGINT)
    second = helper.MergeRequest(tuple(tables), str(tmp_path / "b.sst"), 91, manual, (), True)
    assert helper.merge_files(second) is not None
    assert helper._idle == [kept] and kept._proc.poll() is None
    assert _entries(first.path, 90) == _entries(second.path, 91)
    helper._close_idle()
    assert kept._proc.returncode == 0


def _load(kv: KV, rounds: int) -> dict[bytes, bytes]:
    model = {}
    for b in range(rounds):
        with kv.new_tx() as tx:
            for i in range(200):
                key = b"%06d" % ((i * 37 + b * 1009) % 5000)
                tx.set(key, b"%d" % b)
                model[key] = b"%d" % b
        kv.flush()
    return model


def test_kv_flushes_and_merges_in_the_helper_by_default(tmp_path: pathlib.Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[helper.MergeRequest] = []
    real = helper.merge_files

    def spy(request: helper.MergeRequest) -> tuple[TableInfo | None, int]:
        calls.append(request)
        return real(request)

    monkeypatch.setattr(helper, "merge_files", spy)
    assert Config().merge_process is True
    kv = KV.open(str(tmp_path / "db"), Config(sync=False, background=False))
    try:
        model = _load(kv, 8)
        stats = kv.stats()
        assert stats.merges >= 1 and len(calls) == stats.merges + stats.flushes
        flushes = [r for r in calls if r.rows]
        assert len(flushes) == stats.flushes and all(not r.inputs for r in flushes)
        assert all(r.path == table_path(str(tmp_path / "db"), r.number) for r in calls)
        assert {k: kv.get(k) for k in model} == model
    finally:
        kv.close()


def test_kv_flushes_and_merges_here_when_the_helper_fails(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch,
                                              caplog: pytest.LogCaptureFixture) -> None:
    def broken(request: helper.MergeRequest) -> tuple[TableInfo | None, int]:
        raise helper.HelperError("no helper today")

    monkeypatch.setattr(helper, "merge_files", broken)
    kv = KV.open(str(tmp_path / "db"), Config(sync=False, background=False))
    try:
        with caplog.at_level(logging.WARNING, logger="kvstore"):
            model = _load(kv, 8)
        assert kv.stats().merges >= 1
        assert "merge helper failed (no helper today)" in caplog.text
        assert {k: kv.get(k) for k in model} == model
    finally:
        kv.close()
    kv = KV.open(str(tmp_path / "db"))
    try:
        assert {k: kv.get(k) for k in model} == model
    finally:
        kv.close()


def test_merge_process_off_never_asks_the_helper(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(request: helper.MergeRequest) -> tuple[TableInfo | None, int]:
        raise AssertionError("helper asked")

    monkeypatch.setattr(helper, "merge_files", refuse)
    kv = KV.open(str(tmp_path / "db"), Config(sync=False, background=False, merge_process=False))
    try:
        model = _load(kv, 8)
        assert kv.stats().merges >= 1
        assert {k: kv.get(k) for k in model} == model
    finally:
        kv.close()


def _runs(kv: KV) -> int:
    return len(runs.group([(t.reader.smallest, t.reader.largest) for t in kv._versions.tables]))


def test_an_idle_kv_merges_its_tables_into_one(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jobs, "IDLE_SECONDS", 0.05)
    monkeypatch.setattr(jobs.Jobs, "_compact_by_policy", lambda self: None)  # tables stay as flushed
    kv = KV.open(str(tmp_path / "db"), Config(sync=False))
    try:
        model = _load(kv, 12)
        deadline = time.monotonic() + 30
        while _runs(kv) > 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _runs(kv) == 1 and kv._jobs.idle_merges >= 1
        assert {k: kv.get(k) for k in model} == model
        assert dict(kv.scan()) == model
    finally:
        kv.close()


def test_an_idle_kv_merges_a_lone_table_once_entries_of_it_expired(tmp_path: pathlib.Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jobs, "IDLE_SECONDS", 0.05)
    now = [1000.0]
    kv = KV.open(str(tmp_path / "db"), Config(sync=False), clock=lambda: now[0])
    try:
        for i in range(50):
            kv.set(b"k%02d" % i, b"v", ttl=10 if i % 2 else None)
        kv.compact(full=True)
        (table,) = kv.stats().tables
        assert table.expiring == 25
        time.sleep(0.3)  # idle, but nothing expired yet: nothing merged
        assert kv.stats().tables == (table,) and kv._jobs.idle_merges == 0
        now[0] += 10
        deadline = time.monotonic() + 30
        while kv.stats().expired < 25 and time.monotonic() < deadline:
            time.sleep(0.02)
        stats = kv.stats()
        assert stats.expired == 25 and kv._jobs.idle_merges == 1
        assert [(t.entries, t.expiring) for t in stats.tables] == [(25, 0)]
        assert [k for k, _ in kv.scan()] == [b"k%02d" % i for i in range(0, 50, 2)]
    finally:
        kv.close()


def test_a_kv_taking_commits_is_not_idle(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jobs, "IDLE_SECONDS", 1.0)
    monkeypatch.setattr(jobs.Jobs, "_compact_by_policy", lambda self: None)
    kv = KV.open(str(tmp_path / "db"), Config(sync=False))
    try:
        _load(kv, 6)
        until = time.monotonic() + 2.5
        while time.monotonic() < until:  # a commit every 20 ms: never a second without one
            kv.set(b"busy", b"%f" % time.monotonic())
            time.sleep(0.02)
        assert kv._jobs.idle_merges == 0 and _runs(kv) > 1
        deadline = time.monotonic() + 30
        while _runs(kv) > 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert kv._jobs.idle_merges >= 1 and _runs(kv) == 1
    finally:
        kv.close()


def test_idle_merge_rewrites_the_oldest_run_only_for_enough_newer_bytes(tmp_path: pathlib.Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jobs.Jobs, "_compact_by_policy", lambda self: None)  # tables stay as flushed
    kv = KV.open(str(tmp_path / "db"), Config(sync=False, background=False))
    try:
        with kv.new_tx() as tx:
            for i in range(20_000):
                tx.set(b"%06d" % i, b"x" * 50)
        kv.flush()
        assert kv._jobs._idle_merge() == []  # one run
        kv.set(b"000001", b"new")
        kv.set(b"019998", b"new")
        kv.flush()
        assert kv._jobs._idle_merge() == []  # two runs, the newer one small: nothing worth rewriting
        kv.set(b"000000", b"new")
        kv.set(b"019999", b"new")
        kv.flush()
        assert _runs(kv) == 3
        assert kv._jobs._idle_merge() == list(kv._versions.tables)[:2]  # the newer runs, not the oldest
        for b in range(8):
            with kv.new_tx() as tx:
                for i in range(b, 20_000, 7):
                    tx.set(b"%06d" % i, b"y" * 50)
            kv.flush()
        assert kv._jobs._idle_merge() == list(kv._versions.tables)  # enough newer bytes: every table
    finally:
        kv.close()
    off = KV.open(str(tmp_path / "db"), Config(sync=False, background=False, merge_process=False))
    try:
        assert off._jobs._idle_merge() == []
    finally:
        off.close()
