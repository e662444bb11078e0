"""A database of meta format 1 (keys starting with FF stored as they are) is upgraded to meta format 2 by
its first writable open, atomically; opened read-only it reads as before (tests/data/format_v4/)."""

from __future__ import annotations

import importlib.util
import pathlib
import shutil
import sys
from types import ModuleType

import pytest

from kvstore import KV, Config, ReadOnlyError, record
from kvstore.fs import OSFileSystem
from kvstore.metadata import MetaStore
from kvstore.versions import VersionSet

DATA = pathlib.Path(__file__).parent / "data"
FORMAT_V4 = DATA / "format_v4"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_format_v4", DATA / "make_format_v4.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("make_format_v4", module)
    spec.loader.exec_module(module)
    return module


GEN = _generator()


def _copy(tmp_path: pathlib.Path) -> pathlib.Path:
    return pathlib.Path(shutil.copytree(FORMAT_V4, tmp_path / "db"))


def _clock() -> float:
    return float(GEN.CLOCK_START + 1)


def _meta_format(path: pathlib.Path) -> int:
    store = MetaStore(OSFileSystem(), str(path))
    meta = store.load()
    assert meta is not None
    return meta.format


def _reads_as_expected(kv: KV) -> None:
    assert list(kv.scan()) == sorted(GEN.EXPECTED.items())
    assert list(kv.scan(reverse=True)) == sorted(GEN.EXPECTED.items(), reverse=True)
    for key, value in GEN.EXPECTED.items():
        assert kv.get(key) == value, key
    for key in GEN.GONE:
        assert kv.get(key) is None
    left = kv.ttl(b"\xffttl")
    assert left is not None and GEN.TTL - 2 < left <= GEN.TTL
    with kv.seek(b"\xff") as c:
        assert [k for k, _ in c] == sorted(k for k in GEN.EXPECTED if k >= b"\xff")


def test_a_writable_open_upgrades_and_every_key_reads_the_same(tmp_path: pathlib.Path) -> None:
    path = _copy(tmp_path)
    assert _meta_format(path) == 1
    with KV.open(path, Config(sync=True), clock=_clock) as kv:
        _reads_as_expected(kv)
        assert kv.collections() == []  # FF 05 'users' ... was the KV's own key, and still is
        kv.collection("users").set(b"k", b"a collection's")
        assert list(kv.collection("users").scan()) == [(b"k", b"a collection's")]
        assert kv.get(b"\xff\x05usersk") == GEN.EXPECTED[b"\xff\x05usersk"]
        assert kv.check() == []
    assert _meta_format(path) == 2
    with KV.open(path, Config(sync=True), clock=_clock) as kv:
        _reads_as_expected(kv)
        assert kv.collections() == ["users"]
        kv.compact(full=True)
        _reads_as_expected(kv)
        assert kv.check() == []


def test_a_read_only_open_reads_the_old_format_and_changes_nothing(tmp_path: pathlib.Path) -> None:
    path = _copy(tmp_path)
    before = {p.name: p.read_bytes() for p in path.iterdir()}
    with KV.open(path, Config(read_only=True), clock=_clock) as kv:
        _reads_as_expected(kv)
        assert kv.collections() == []
        with pytest.raises(ReadOnlyError, match="meta format 2"):
            kv.collection("users")
        backup = tmp_path / "backup"
        kv.backup(backup)
    assert {p.name: p.read_bytes() for p in path.iterdir()} == before
    assert _meta_format(backup) == 1  # a copy keeps the format its keys are stored in
    with KV.open(backup, Config(sync=True), clock=_clock) as kv:
        _reads_as_expected(kv)
    assert _meta_format(backup) == 2


def test_an_upgrade_cut_short_leaves_the_old_format_and_runs_again(tmp_path: pathlib.Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    path = _copy(tmp_path)
    real_swap = VersionSet.swap

    def crash(*args: object, **kwargs: object) -> None:
        raise OSError(5, "simulated crash before the meta write")

    monkeypatch.setattr(VersionSet, "swap", crash)
    with pytest.raises(OSError):
        KV.open(path, Config(sync=True), clock=_clock)
    assert _meta_format(path) == 1  # the upgrade's table is named by no meta
    monkeypatch.setattr(VersionSet, "swap", real_swap)
    with KV.open(path, Config(sync=True), clock=_clock) as kv:
        _reads_as_expected(kv)
    assert _meta_format(path) == 2


def test_a_new_database_is_written_in_the_newest_meta_format(tmp_path: pathlib.Path) -> None:
    with KV.open(tmp_path, Config(sync=False)) as kv:
        kv.set(b"\xff", b"v")
    assert _meta_format(tmp_path) == record.META_FORMAT_VERSION == 2
    with KV.open(tmp_path) as kv:
        assert list(kv.scan()) == [(b"\xff", b"v")]


def test_a_database_with_no_key_starting_with_ff_is_upgraded_by_its_meta_alone(tmp_path: pathlib.Path) -> None:
    old = tmp_path / "old"
    with KV.open(old, Config(sync=False)) as kv:
        kv.set(b"k", b"v")
    meta = MetaStore(OSFileSystem(), str(old))
    current = meta.load()
    assert current is not None
    import attrs
    meta.write(attrs.evolve(current, version=current.version + 1, format=1))  # as a format-1 kvstore wrote it
    tables = sorted(p.name for p in old.iterdir() if p.suffix == ".sst")
    with KV.open(old) as kv:
        assert list(kv.scan()) == [(b"k", b"v")]
    assert _meta_format(old) == 2
    assert sorted(p.name for p in old.iterdir() if p.suffix == ".sst") == tables
