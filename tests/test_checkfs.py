"""CheckingFS fires on each deliberate protocol violation and stays quiet on a normal workload."""

from __future__ import annotations

import errno

import pytest
from checkfs import CheckingFS

from kvstore import KV, Config, record
from kvstore.metadata import Meta, MetaStore
from kvstore.simfs import CrashMode

DB = "/db"


def _fs() -> CheckingFS:
    fs = CheckingFS()
    fs.mkdir(DB)
    return fs


def _file(fs: CheckingFS, name: str, data: bytes = b"x" * 32, *, fsync: bool = True, dirsync: bool = True) -> None:
    f = fs.open(f"{DB}/{name}", create=True)
    f.append(data)
    if fsync:
        f.fsync()
    f.close()
    if dirsync:
        fs.sync_dir(DB)


def _log_header(number: int) -> bytes:
    return record.encode_file_header(record.WAL_MAGIC, number)


def test_checkfs_meta_naming_an_unsynced_table_fires() -> None:
    fs = _fs()
    _file(fs, "000005.sst", fsync=False)
    with pytest.raises(AssertionError, match=r"000005\.sst, which is not durable"):
        MetaStore(fs, DB).write(Meta(1, 6, 1, 0, (5,)))
    assert len(fs.violations) == 1


def test_checkfs_meta_naming_a_table_whose_entry_is_unsynced_fires() -> None:
    fs = _fs()
    _file(fs, "000005.sst", dirsync=False)
    with pytest.raises(AssertionError, match="not durable"):
        MetaStore(fs, DB).write(Meta(1, 6, 1, 0, (5,)))


def test_checkfs_meta_needing_a_log_with_unsynced_entry_fires() -> None:
    fs = _fs()
    _file(fs, "000003.log", _log_header(3), dirsync=False)
    with pytest.raises(AssertionError, match="directory entry is not synced"):
        MetaStore(fs, DB).write(Meta(1, 4, 3, 0, ()))


def test_checkfs_meta_needing_an_older_log_not_synced_whole_fires() -> None:
    fs = _fs()
    _file(fs, "000003.log", _log_header(3))
    f = fs.open(f"{DB}/000003.log", write=True)
    f.append(b"unsynced frame")
    f.close()
    _file(fs, "000004.log", _log_header(4))
    with pytest.raises(AssertionError, match="older log not fsynced whole"):
        MetaStore(fs, DB).write(Meta(1, 5, 3, 0, ()))


def test_checkfs_overwriting_the_newest_slot_fires() -> None:
    fs = _fs()
    MetaStore(fs, DB).write(Meta(1, 2, 1, 0, ()))  # meta0 v1, through meta0.tmp
    f = fs.open(f"{DB}/meta0", write=True)
    with pytest.raises(AssertionError, match="holds the newest valid meta"):
        f.write_at(0, record.encode_meta(0, 2, 2, 1, 0, []))


def test_checkfs_meta_version_not_above_the_valid_ones_fires() -> None:
    fs = _fs()
    store = MetaStore(fs, DB)
    store.write(Meta(1, 2, 1, 0, ()))
    with pytest.raises(AssertionError, match="not above valid version 1"):
        store.write(Meta(1, 2, 1, 0, ()))  # meta1, through meta1.tmp


def test_checkfs_unlinking_a_named_table_fires() -> None:
    fs = _fs()
    _file(fs, "000005.sst")
    MetaStore(fs, DB).write(Meta(1, 6, 1, 0, (5,)))
    with pytest.raises(AssertionError, match="unlinked while valid meta v1 names it"):
        fs.unlink(f"{DB}/000005.sst")
    assert fs.exists(f"{DB}/000005.sst")  # the check runs before the operation


def test_checkfs_unlinking_a_table_the_older_slot_names_fires() -> None:
    fs = _fs()
    _file(fs, "000005.sst")
    store = MetaStore(fs, DB)
    store.write(Meta(1, 6, 1, 0, (5,)))
    store.write(Meta(2, 6, 1, 0, ()))
    with pytest.raises(AssertionError, match="valid meta v1 names it"):
        fs.unlink(f"{DB}/000005.sst")
    store.write(Meta(3, 6, 1, 0, ()))  # overwrites v1: now neither slot names table 5
    fs.unlink(f"{DB}/000005.sst")
    assert len(fs.violations) == 1


def test_checkfs_unlinking_a_live_log_fires() -> None:
    fs = _fs()
    _file(fs, "000003.log", _log_header(3))
    MetaStore(fs, DB).write(Meta(1, 4, 3, 0, ()))
    with pytest.raises(AssertionError, match="log_number 3"):
        fs.unlink(f"{DB}/000003.log")


def test_checkfs_salvage_may_unlink_a_live_log() -> None:
    fs = CheckingFS(salvage=True)
    fs.mkdir(DB)
    _file(fs, "000003.log", _log_header(3))
    MetaStore(fs, DB).write(Meta(1, 4, 3, 0, ()))
    fs.unlink(f"{DB}/000003.log")
    assert fs.violations == []


def test_checkfs_a_file_number_created_twice_fires() -> None:
    fs = _fs()
    _file(fs, "000007.log")
    fs.unlink(f"{DB}/000007.log")
    with pytest.raises(AssertionError, match="number log:7 created a second time"):
        fs.open(f"{DB}/000007.log", create=True)


def test_checkfs_a_file_number_reused_in_a_crash_image_fires() -> None:
    fs = _fs()
    _file(fs, "000009.sst", fsync=False, dirsync=False)
    image = fs.crash_image(CrashMode.DROP)
    assert not image.exists(f"{DB}/000009.sst")  # the file never reached the disk
    with pytest.raises(AssertionError, match="number sst:9 created a second time"):
        image.open(f"{DB}/000009.sst", create=True)
    assert fs.violations == []  # each image checks on its own


def test_checkfs_media_damage_turns_the_number_rule_off() -> None:
    fs = _fs()
    _file(fs, "000009.sst")
    fs.corrupt(f"{DB}/000009.sst", 0)  # e.g. the newest meta slot: open falls back to an older one
    fs.unlink(f"{DB}/000009.sst")
    image = fs.crash_image(CrashMode.KILL)
    image.open(f"{DB}/000009.sst", create=True).close()
    assert fs.violations == [] and image.violations == []


def test_checkfs_a_table_and_a_log_may_share_nothing_but_their_kind() -> None:
    fs = _fs()
    _file(fs, "000007.log")
    _file(fs, "000008.sst")
    assert fs.violations == []


@pytest.mark.parametrize("op", ["write", "fsync", "truncate"])
def test_checkfs_a_write_after_an_io_error_on_the_file_fires(op: str) -> None:
    fs = _fs()
    _file(fs, "000004.log")
    f = fs.open(f"{DB}/000004.log", write=True)
    fs.fail(op, "000004.log")
    with pytest.raises(OSError, match="simulated"):
        if op == "write":
            f.append(b"frame")
        elif op == "fsync":
            f.fsync()
        else:
            f.truncate(3)
    with pytest.raises(AssertionError, match="written after an I/O error"):
        f.fsync()  # an fsync retried as if a second success meant anything
    with pytest.raises(AssertionError, match="written after an I/O error"):
        fs.open(f"{DB}/000004.log", write=True).append(b"more")


def test_checkfs_a_short_write_counts_as_an_io_error() -> None:
    fs = _fs()
    f = fs.open(f"{DB}/000004.log", create=True)
    fs.space_limit = 3
    with pytest.raises(OSError) as info:
        f.append(b"frame")
    assert info.value.errno == errno.ENOSPC
    with pytest.raises(AssertionError, match="written after an I/O error"):
        f.append(b"again")


def test_checkfs_assert_durable_fires_on_unsynced_bytes_and_unsynced_entries() -> None:
    fs = _fs()
    _file(fs, "000002.log", fsync=False)
    with pytest.raises(AssertionError, match="not durable after a sync commit"):
        fs.assert_durable(f"{DB}/000002.log")
    _file(fs, "000003.log", dirsync=False)
    with pytest.raises(AssertionError, match="not durable after a sync commit"):
        fs.assert_durable(f"{DB}/000003.log")
    fs.sync_dir(DB)
    fs.assert_durable(f"{DB}/000003.log")
    assert len(fs.violations) == 2


def test_checkfs_is_quiet_on_a_normal_workload() -> None:
    fs = CheckingFS()
    config = Config(memtable_size=200, block_size=64, background=False)
    kv = KV.open(DB, config, fs=fs)
    for i in range(60):
        kv.set(b"k%02d" % (i % 7), b"v%d" % i)
        if i % 3 == 0:
            kv.delete(b"k%02d" % ((i + 1) % 7))
        with kv.new_tx() as tx:
            tx.set(b"a", b"%d" % i)
        tx = kv.new_tx()
        tx.set(b"b", b"%d" % i)
        tx.commit(sync=i % 2 == 0)
        if i % 2 == 0:
            assert kv._wal is not None
            fs.assert_durable(kv._wal.path)
        if i % 17 == 0:
            kv.compact()
    kv.compact(full=True)
    assert kv.check() == []
    kv.close()
    kv = KV.open(DB, Config(memtable_size=200, sync=False), fs=fs)
    kv.set(b"q", b"1")
    kv.compact()  # a merge meta while the newest log holds an unsynced commit
    image = fs.crash_image(CrashMode.TORN, seed=3)
    kv.close()
    again = KV.open(DB, config, fs=image)
    for i in range(30):
        again.set(b"z%d" % i, b"1" * 30)
    again.close()
    assert fs.violations == [] and image.violations == []
