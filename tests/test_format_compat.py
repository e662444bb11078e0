"""Old formats stay readable: tests/data/format_v1/, written by a kvstore of format version 1,
tests/data/format_v2/, written by one whose tables are of version 2, and tests/data/format_v3/, written by
one whose tables are of version 3 and logs of version 2 (range tombstones), open and answer every key,
merge their tables with new ones, and open read-only (DESIGN.md, "On-disk formats").

The checked-in files are never opened in place: each test copies them first.  How they were made, and what
every key must read, is ``tests/data/make_format_v1.py``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import pathlib
import shutil
import sys
from types import ModuleType

import pytest

from kvstore import KV, Config, bloom, record
from kvstore.filenames import TABLE, parse
from kvstore.fs import OSFileSystem
from kvstore.sorted_file import BlockCache, TableReader

DATA = pathlib.Path(__file__).parent / "data"
FORMAT_V1 = DATA / "format_v1"
FORMAT_V2 = DATA / "format_v2"  # tables of version 2, WAL and meta of version 1 (tests/data/make_format_v2.py)
FORMAT_V3 = DATA / "format_v3"  # tables of version 3, WAL of version 2, meta of 1 (tests/data/make_format_v3.py)
OLD = pytest.mark.parametrize("old", [FORMAT_V1, FORMAT_V2, FORMAT_V3], ids=["format_v1", "format_v2", "format_v3"])
CONFIG = Config(background=False, sync=True, memtable_size=2048, block_size=256)


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_format_v1", DATA / "make_format_v1.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("make_format_v1", module)
    spec.loader.exec_module(module)
    return module


GEN = _generator()


def _copy(tmp_path: pathlib.Path, old: pathlib.Path = FORMAT_V1) -> pathlib.Path:
    return pathlib.Path(shutil.copytree(old, tmp_path / "db"))


def _digest(path: pathlib.Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.iterdir())}


def _tables(path: pathlib.Path) -> list[pathlib.Path]:
    return sorted(p for p in path.iterdir() if (found := parse(p.name)) is not None and found[1] == TABLE)


def _reads_everything(kv: KV, model: dict[bytes, bytes], written: list[bytes]) -> None:
    for key in written:
        assert kv.get(key) == model.get(key), key
    for absent in (b"", b"key", b"key0000.", b"key9999", b"kez", b"\xff"):
        assert kv.get(absent) is None
    expected = sorted(model.items())
    assert list(kv.scan()) == expected
    assert list(kv.scan(reverse=True)) == expected[::-1]
    assert list(kv.scan(b"key0100", b"key0200")) == [(k, v) for k, v in expected if b"key0100" <= k < b"key0200"]
    assert list(kv.scan(prefix=b"key01", reverse=True)) == [(k, v) for k, v in expected[::-1]
                                                            if k.startswith(b"key01")]


def test_format_v1_fixture_is_what_the_generator_describes() -> None:
    """The checked-in files: every header is format version 1, and there are tables with and without a
    bloom filter, tables holding deletes and several versions of a key, and a log to replay."""
    names = sorted(p.name for p in FORMAT_V1.iterdir())
    assert any(n.endswith(".log") for n in names) and {"meta0", "meta1"} <= set(names)
    assert sum(p.stat().st_size for p in FORMAT_V1.iterdir()) < 100_000
    for p in FORMAT_V1.iterdir():
        assert int.from_bytes(p.read_bytes()[4:6], "little") == 1, p.name
    with KV.open(FORMAT_V1, Config(read_only=True)) as kv:
        stats = kv.stats()
        live = {t.file_number for t in stats.tables}
        assert len(live) >= 3 and stats.memtable_entries >= GEN.WAL_ONLY
        assert any(t.deletes for t in stats.tables)
        assert any(t.entries > len({k for k, _, _ in _entries(t.file_number)}) for t in stats.tables)
    filters = [_bloom_size(n) for n in sorted(live)]
    assert any(size > 4 for size in filters) and any(size == 4 for size in filters)  # 4: the CRC alone


def test_format_v2_fixture_is_what_the_generator_describes() -> None:
    """The checked-in files: tables of version 2, logs and meta slots of version 1; tables with and
    without a bloom filter, deletes, several versions of a key, and a log to replay."""
    for p in FORMAT_V2.iterdir():
        data = p.read_bytes()
        assert int.from_bytes(data[4:6], "little") == (2 if data[:4] == record.TABLE_MAGIC else 1), p.name
    with KV.open(FORMAT_V2, Config(read_only=True)) as kv:
        stats = kv.stats()
        assert len(stats.tables) >= 3 and stats.memtable_entries >= GEN.WAL_ONLY
        assert any(t.deletes for t in stats.tables)
        assert any(t.entries > len({k for k, _, _ in _entries(t.file_number, FORMAT_V2)}) for t in stats.tables)
        live = sorted(t.file_number for t in stats.tables)
    filters = [_bloom_size(n, FORMAT_V2) for n in live]
    assert any(size > 4 for size in filters) and any(size == 4 for size in filters)


def test_format_v3_fixture_is_what_the_generator_describes() -> None:
    """The checked-in files: tables of version 3, logs of version 2, meta slots of version 1; range
    tombstones in a table and in the log to replay, keys they cover in older tables, deletes, several
    versions of a key."""
    versions = {record.TABLE_MAGIC: 3, record.WAL_MAGIC: 2, record.META_MAGIC: 1}
    for p in FORMAT_V3.iterdir():
        data = p.read_bytes()
        assert int.from_bytes(data[4:6], "little") == versions[data[:4]], p.name
    with KV.open(FORMAT_V3, Config(read_only=True)) as kv:
        stats = kv.stats()
        assert len(stats.tables) >= 3 and stats.memtable_entries >= GEN.WAL_ONLY
        assert any(t.deletes for t in stats.tables)
        readers = [t.reader for t in kv._versions.tables]
        assert any(r.ranged for r in readers) and kv._view.mems[0].ranges
        covered = [k for n in (r.file_number for r in readers) for k, _, _ in _entries(n, FORMAT_V3)
                   if k.startswith(b"zz")]
        assert covered and list(kv.scan(prefix=b"zz")) == []
        assert kv.check() == []


def _entries(number: int, old: pathlib.Path = FORMAT_V1) -> list[tuple[bytes, int, bytes | None]]:
    reader = TableReader(OSFileSystem(), str(old / f"{number:06d}.sst"), number, BlockCache(0))
    try:
        return list(reader.entries())
    finally:
        reader.close()


def _bloom_size(number: int, old: pathlib.Path = FORMAT_V1) -> int:
    data = (old / f"{number:06d}.sst").read_bytes()
    _, (_, size), _ = record.decode_footer(data[-record.FOOTER.size :], "t", len(data) - record.FOOTER.size, number)
    return size


def test_format_v1_tables_answer_every_key_they_hold() -> None:
    """Each version-1 table on its own, through its version-1 bloom filter: every key it holds is found,
    at its newest version."""
    for path in _tables(FORMAT_V1):
        number = int(path.stem)
        entries = _entries(number)
        newest: dict[bytes, tuple[int, bytes | None]] = {}
        for key, seq, value in entries:
            newest.setdefault(key, (seq, value))
        reader = TableReader(OSFileSystem(), str(path), number, BlockCache(0))
        try:
            assert reader.version == 1
            for key, found in newest.items():
                assert reader.get(key, 1 << 62) == found
                assert reader.get(key, 1 << 62, bloom.probe(record.key_hash(key))) == found
                assert reader.may_contain(record.key_hash(key))
        finally:
            reader.close()


@OLD
def test_old_format_opens_and_reads_every_key_and_scan(tmp_path: pathlib.Path, old: pathlib.Path) -> None:
    path = _copy(tmp_path, old)
    model, written = GEN.expected(), GEN.written()
    with KV.open(path, CONFIG) as kv:
        _reads_everything(kv, model, written)
        assert kv.check() == []
        assert len(kv.stats().tables) >= 3


@OLD
def test_old_format_opens_read_only_and_changes_nothing(tmp_path: pathlib.Path, old: pathlib.Path) -> None:
    path = _copy(tmp_path, old)
    before = _digest(path)
    with KV.open(path, Config(read_only=True)) as kv:
        _reads_everything(kv, GEN.expected(), GEN.written())
        assert kv.check() == []
    assert _digest(path) == before


@OLD
def test_old_format_merges_with_new_tables_and_reopens(tmp_path: pathlib.Path, old: pathlib.Path) -> None:
    """New writes and deletes, a flush and a full compaction (old tables merged with new ones); after a
    reopen everything reads as the model says, and every table is of the version this kvstore writes."""
    path = _copy(tmp_path, old)
    model, written = GEN.expected(), GEN.written()
    with KV.open(path, CONFIG) as kv:
        for i in range(0, GEN.KEYS + 50, 4):
            key, value = b"key%04d" % i, b"new%d" % i * (i % 5)
            kv.set(key, value)
            model[key] = value
        for i in range(1, GEN.KEYS, 9):
            kv.delete(b"key%04d" % i)
            model.pop(b"key%04d" % i, None)
        written = sorted({*written, *(b"key%04d" % i for i in range(GEN.KEYS + 50))})
        kv.flush()
        _reads_everything(kv, model, written)
        kv.compact()
        _reads_everything(kv, model, written)
        kv.compact(full=True)
        _reads_everything(kv, model, written)
        assert kv.check() == []
    with KV.open(path, CONFIG) as kv:
        _reads_everything(kv, model, written)
        assert kv.check() == []
        live = [t.name for t in kv.stats().tables]
        assert len(live) == 1
    assert [p.name for p in _tables(path)] == live  # the old tables, those the older meta named too, are gone
    for file in path.iterdir():  # every file now of the version this kvstore writes for its kind
        data = file.read_bytes()
        if data:
            assert int.from_bytes(data[4:6], "little") == record.newest_version(data[:4]), file.name
    with KV.open(path, Config(read_only=True)) as kv:
        _reads_everything(kv, model, written)


@pytest.mark.parametrize("bloom_bits", [0, 10], ids=["no-filter", "filter"])
def test_format_v1_merges_by_policy_with_new_flushes(tmp_path: pathlib.Path, bloom_bits: int) -> None:
    """Merges by the growth-factor policy as new tables arrive: old and new tables side by side, merged
    in pairs, each read through its own filter."""
    path = _copy(tmp_path)
    model, written = GEN.expected(), GEN.written()
    config = Config(background=False, sync=False, memtable_size=1024, block_size=128, bloom_bits_per_key=bloom_bits)
    with KV.open(path, config) as kv:
        for i in range(0, GEN.KEYS, 2):
            key, value = b"key%04d" % i, b"r%d" % i
            kv.set(key, value)
            model[key] = value
            if i % 40 == 0:
                _reads_everything(kv, model, written)
        _reads_everything(kv, model, written)
        assert kv.check() == []
