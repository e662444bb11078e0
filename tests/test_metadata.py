"""The double-buffered meta slots (kvstore/metadata.py): alternation, newest valid wins, fallback, failure."""

from __future__ import annotations

import os
import pathlib
from typing import Any

import pytest

from kvstore import record
from kvstore.errors import CorruptionError, UnsupportedFormatError
from kvstore.fs import OSFileSystem
from kvstore.metadata import META_NAMES, Meta, MetaStore

FS = OSFileSystem()


def _meta(version: int, tables: tuple[int, ...] = (), log_number: int = 1) -> Meta:
    return Meta(version=version, next_file=100 + version, log_number=log_number, last_sequence=10 * version,
                tables=tables)


def _store(tmp_path: pathlib.Path) -> MetaStore:
    return MetaStore(FS, str(tmp_path))


def _slot(tmp_path: pathlib.Path, i: int) -> pathlib.Path:
    return tmp_path / META_NAMES[i]


def _flip(path: pathlib.Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x10
    path.write_bytes(bytes(data))


def test_meta_slot_names_are_meta0_and_meta1() -> None:
    assert META_NAMES == ("meta0", "meta1")


def test_meta_empty_directory_loads_as_absent(tmp_path: pathlib.Path) -> None:
    store = _store(tmp_path)
    assert store.load() is None
    assert store.newest is None
    assert [s.present for s in store.slots] == [False, False]
    assert store.named_tables() == set() and store.min_log_number() == 0


def test_meta_writes_alternate_between_the_slots(tmp_path: pathlib.Path) -> None:
    store = _store(tmp_path)
    store.load()
    written = []
    for version in range(1, 6):
        store.write(_meta(version))
        newest = store.newest
        assert newest is not None
        written.append(newest)
        slots = [record.decode_meta(_slot(tmp_path, i).read_bytes(), "", i)[0] if _slot(tmp_path, i).exists()
                 else None for i in (0, 1)]
        # the slot just written holds v and the other v - 1 (or nothing yet)
        assert slots[newest] == version
        assert slots[1 - newest] == (version - 1 if version > 1 else None)
    assert written == [0, 1, 0, 1, 0]
    assert not any(name.endswith(".tmp") for name in os.listdir(tmp_path))


def test_meta_newest_valid_slot_wins_on_load(tmp_path: pathlib.Path) -> None:
    store = _store(tmp_path)
    store.load()
    for version in range(1, 5):
        store.write(_meta(version, tables=(version,)))
    again = _store(tmp_path)
    assert again.load() == _meta(4, tables=(4,))
    assert again.newest == 1
    assert again.named_tables() == {3, 4}


def test_meta_newest_wins_by_version_not_by_slot(tmp_path: pathlib.Path) -> None:
    _slot(tmp_path, 0).write_bytes(record.encode_meta(0, 9, 50, 4, 90, [7]))
    _slot(tmp_path, 1).write_bytes(record.encode_meta(1, 8, 40, 3, 80, [6]))
    store = _store(tmp_path)
    assert store.load() == Meta(9, 50, 4, 90, (7,))
    assert store.newest == 0
    assert store.min_log_number() == 3
    assert store.named_tables() == {6, 7}


def test_meta_after_load_the_next_write_spares_the_newest_slot(tmp_path: pathlib.Path) -> None:
    store = _store(tmp_path)
    store.load()
    store.write(_meta(1))
    store.write(_meta(2))
    store.write(_meta(3))  # slot 0
    again = _store(tmp_path)
    assert again.load() == _meta(3)
    again.write(_meta(4))
    assert record.decode_meta(_slot(tmp_path, 0).read_bytes(), "", 0)[0] == 3
    assert record.decode_meta(_slot(tmp_path, 1).read_bytes(), "", 1)[0] == 4


@pytest.mark.parametrize("damage", ["flip-body", "flip-crc", "truncate", "empty", "zeros"], ids=str)
def test_meta_torn_newest_slot_falls_back_to_the_other(tmp_path: pathlib.Path, damage: str) -> None:
    store = _store(tmp_path)
    store.load()
    store.write(_meta(1, tables=(5,)))
    store.write(_meta(2, tables=(6,)))  # the newest, in slot 1
    newest = _slot(tmp_path, 1)
    size = newest.stat().st_size
    if damage == "flip-body":
        _flip(newest, 30)
    elif damage == "flip-crc":
        _flip(newest, size - 1)
    elif damage == "truncate":
        newest.write_bytes(newest.read_bytes()[: size // 2])
    elif damage == "empty":
        newest.write_bytes(b"")
    else:
        newest.write_bytes(b"\0" * size)
    again = _store(tmp_path)
    assert again.load() == _meta(1, tables=(5,))
    assert again.newest == 0
    assert again.slots[1].present and again.slots[1].meta is None
    assert isinstance(again.slots[1].error, CorruptionError)
    assert again.slots[1].error.path == str(newest)
    # a file only the torn slot named is not protected by it; the valid slot's files are
    assert again.named_tables() == {5}
    # the next write replaces the torn slot, never the only valid one
    again.write(_meta(3, tables=(7,)))
    assert record.decode_meta(_slot(tmp_path, 0).read_bytes(), "", 0)[0] == 1
    assert _store(tmp_path).load() == _meta(3, tables=(7,))


def test_meta_torn_older_slot_is_ignored(tmp_path: pathlib.Path) -> None:
    store = _store(tmp_path)
    store.load()
    store.write(_meta(1))
    store.write(_meta(2))
    _flip(_slot(tmp_path, 0), 25)
    assert _store(tmp_path).load() == _meta(2)


@pytest.mark.parametrize("damage", ["flip", "zeros", "truncate"], ids=str)
def test_meta_both_slots_corrupt_fails_open(tmp_path: pathlib.Path, damage: str) -> None:
    store = _store(tmp_path)
    store.load()
    store.write(_meta(1))
    store.write(_meta(2))
    for i in (0, 1):
        path = _slot(tmp_path, i)
        if damage == "flip":
            _flip(path, 24)
        elif damage == "zeros":
            path.write_bytes(b"\0" * path.stat().st_size)
        else:
            path.write_bytes(path.read_bytes()[:10])
    with pytest.raises(CorruptionError) as info:
        _store(tmp_path).load()
    assert info.value.path in (str(_slot(tmp_path, 0)), str(_slot(tmp_path, 1)))
    assert info.value.offset >= 0


def test_meta_one_slot_corrupt_and_the_other_absent_fails_open(tmp_path: pathlib.Path) -> None:
    store = _store(tmp_path)
    store.load()
    store.write(_meta(1))
    _flip(_slot(tmp_path, 0), 22)
    with pytest.raises(CorruptionError) as info:
        _store(tmp_path).load()
    assert info.value.path == str(_slot(tmp_path, 0))


def test_meta_absent_and_invalid_slots_are_kept_apart(tmp_path: pathlib.Path) -> None:
    store = _store(tmp_path)
    store.load()
    store.write(_meta(1))
    absent = store.read_slot(1)
    assert not absent.present and absent.meta is None and absent.error is None
    _flip(_slot(tmp_path, 0), 22)
    invalid = store.read_slot(0)
    assert invalid.present and invalid.meta is None and isinstance(invalid.error, CorruptionError)
    _slot(tmp_path, 1).write_bytes(b"")
    empty = store.read_slot(1)
    assert empty.present and empty.meta is None and empty.error is not None


def test_meta_newer_format_version_is_unsupported(tmp_path: pathlib.Path) -> None:
    header = record.encode_file_header(record.META_MAGIC, 0, version=record.META_FORMAT_VERSION + 1)
    body = header + record.META_BODY.pack(1, 2, 1, 0, 0)
    _slot(tmp_path, 0).write_bytes(body + record.CHUNK_CRC.pack(record.crc(body)))
    with pytest.raises(UnsupportedFormatError):
        _store(tmp_path).load()


def test_meta_slot_holding_the_other_slots_bytes_is_invalid(tmp_path: pathlib.Path) -> None:
    # each slot's header names its own number: a copy of meta1 into meta0 does not check out
    _slot(tmp_path, 0).write_bytes(record.encode_meta(1, 5, 10, 2, 0, []))
    with pytest.raises(CorruptionError, match="file number"):
        _store(tmp_path).load()


def test_meta_min_log_number_covers_both_valid_slots(tmp_path: pathlib.Path) -> None:
    store = _store(tmp_path)
    store.load()
    store.write(_meta(1, log_number=4))
    store.write(_meta(2, log_number=9))
    assert store.min_log_number() == 4
    again = _store(tmp_path)
    again.load()
    assert again.min_log_number() == 4


def test_meta_write_of_a_missing_slot_clears_a_stale_temp_file(tmp_path: pathlib.Path) -> None:
    (tmp_path / "meta0.tmp").write_bytes(b"half-written")
    store = _store(tmp_path)
    store.load()
    store.write(_meta(1))
    assert sorted(os.listdir(tmp_path)) == ["meta0"]
    assert _store(tmp_path).load() == _meta(1)


def test_meta_shorter_rewrite_leaves_no_stale_bytes(tmp_path: pathlib.Path) -> None:
    store = _store(tmp_path)
    store.load()
    store.write(_meta(1, tables=tuple(range(50))))
    store.write(_meta(2, tables=tuple(range(50))))
    store.write(_meta(3, tables=(1,)))  # slot 0 again, much shorter
    assert _slot(tmp_path, 0).stat().st_size == len(record.encode_meta(0, 3, 103, 1, 30, [1]))
    assert _store(tmp_path).load() == _meta(3, tables=(1,))


class _Recording(OSFileSystem):
    """The real file system, recording each open for writing and each rename."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def open(self, path: str, *, write: bool = False, create: bool = False) -> Any:
        if write or create:
            self.calls.append(("open", os.path.basename(path)))
        return super().open(path, write=write, create=create)

    def rename(self, src: str, dst: str) -> None:
        self.calls.append(("rename", f"{os.path.basename(src)}->{os.path.basename(dst)}"))
        super().rename(src, dst)


def test_meta_slot_is_never_overwritten_in_place(tmp_path: pathlib.Path) -> None:
    """A slot is replaced whole by a rename, so no crash or kill can leave an older slot half overwritten
    (open would skip it, but ``check()`` could not tell it from damage)."""
    fs = _Recording()
    store = MetaStore(fs, str(tmp_path))
    store.load()
    for version in range(1, 6):
        store.write(_meta(version, tables=tuple(range(12 - 2 * version))))
    assert fs.calls == [call for v in range(1, 6) for call in (
        ("open", f"meta{(v - 1) % 2}.tmp"), ("rename", f"meta{(v - 1) % 2}.tmp->meta{(v - 1) % 2}"))]
    assert sorted(os.listdir(tmp_path)) == ["meta0", "meta1"]
    assert _store(tmp_path).load() == _meta(5, tables=(0, 1))
