"""The write-ahead log (kvstore/wal.py): append and replay, torn tails versus corruption, salvage."""

from __future__ import annotations

import os
import pathlib

import pytest

from kvstore import record
from kvstore.errors import CorruptionError, UnsupportedFormatError
from kvstore.filenames import log_path
from kvstore.fs import OSFile, OSFileSystem
from kvstore.wal import WalWriter, replay_log

FS = OSFileSystem()
Writes = list[tuple[bytes, "bytes | None"]]

COMMITS: list[Writes] = [
    [(b"a", b"1")],
    [(b"b", b"2"), (b"c", None)],
    [(b"", b"")],
    [(b"d" * 100, b"v" * 3000)],
    [(b"e", b"5"), (b"f", b"6"), (b"g", b"7")],
]


def _log(tmp_path: pathlib.Path, commits: list[Writes], sync: bool = True, number: int = 3,
         first_seq: int = 1) -> tuple[str, list[int]]:
    """A log of ``commits``; returns its path and the offset at which each frame starts."""
    path = log_path(str(tmp_path), number)
    wal = WalWriter.create(FS, str(tmp_path), path, number)
    starts = []
    try:
        for i, writes in enumerate(commits):
            starts.append(wal.size)
            wal.append(first_seq + i, writes, sync)
    finally:
        wal.close()
    return path, starts


def _expected(commits: list[Writes], first_seq: int = 1) -> list[tuple[int, Writes]]:
    return [(first_seq + i, w) for i, w in enumerate(commits)]


def _damage(path: str, offset: int, data: bytes | None = None) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        old = f.read(1)
        f.seek(offset)
        f.write(data if data is not None else bytes([old[0] ^ 0x40]))


def test_wal_log_path_is_six_digit_number_dot_log(tmp_path: pathlib.Path) -> None:
    assert log_path("/db", 7) == os.path.join("/db", "000007.log")


@pytest.mark.parametrize("sync", [True, False], ids=["sync", "nosync"])
def test_wal_append_then_replay_round_trips(tmp_path: pathlib.Path, sync: bool) -> None:
    path, _ = _log(tmp_path, COMMITS, sync=sync)
    result = replay_log(FS, path, 3, last=True)
    assert result.commits == _expected(COMMITS)
    assert result.damage is None and result.header_ok
    assert result.valid_end == result.size == os.path.getsize(path)


class _AppendCountingFile:
    """An OSFile that counts appends and fsyncs."""

    def __init__(self, file: OSFile) -> None:
        self.file = file
        self.path = file.path
        self.appends = 0
        self.fsyncs = 0

    def pread(self, size: int, offset: int) -> bytes:
        return self.file.pread(size, offset)

    def append(self, data: bytes) -> None:
        self.appends += 1
        self.file.append(data)

    def write_at(self, offset: int, data: bytes) -> None:
        self.file.write_at(offset, data)

    def truncate(self, size: int) -> None:
        self.file.truncate(size)

    def fsync(self) -> None:
        self.fsyncs += 1
        self.file.fsync()

    def size(self) -> int:
        return self.file.size()

    def close(self) -> None:
        self.file.close()


def _counting_wal(tmp_path: pathlib.Path, number: int) -> tuple[WalWriter, _AppendCountingFile]:
    path = log_path(str(tmp_path), number)
    WalWriter.create(FS, str(tmp_path), path, number).close()
    file = _AppendCountingFile(FS.open(path, write=True))
    return WalWriter(FS, path, number, file, file.size()), file


@pytest.mark.parametrize("sync", [True, False], ids=["sync", "nosync"])
def test_wal_append_many_writes_every_commit_with_one_append_and_at_most_one_fsync(tmp_path: pathlib.Path,
                                                                                 sync: bool) -> None:
    wal, file = _counting_wal(tmp_path, 4)
    try:
        wal.append_many(list(enumerate(COMMITS, start=1)), sync)
        assert (file.appends, file.fsyncs) == (1, 1 if sync else 0)
        assert wal.size == os.path.getsize(wal.path)
        assert wal.durable == (wal.size if sync else record.FILE_HEADER.size)
    finally:
        wal.close()
    result = replay_log(FS, wal.path, 4, last=True)
    assert result.commits == _expected(COMMITS) and result.damage is None


def test_wal_append_many_writes_the_frames_append_writes(tmp_path: pathlib.Path) -> None:
    one = tmp_path / "one"
    many = tmp_path / "many"
    one.mkdir()
    many.mkdir()
    path, _ = _log(one, COMMITS, sync=False, number=5)
    wal = WalWriter.create(FS, str(many), log_path(str(many), 5), 5)
    try:
        wal.append_many(list(enumerate(COMMITS[:2], start=1)), sync=False)
        wal.append_many(list(enumerate(COMMITS[2:], start=3)), sync=False)
    finally:
        wal.close()
    assert pathlib.Path(path).read_bytes() == pathlib.Path(wal.path).read_bytes()


def test_wal_append_many_of_nothing_writes_nothing_but_still_syncs(tmp_path: pathlib.Path) -> None:
    wal, file = _counting_wal(tmp_path, 6)
    try:
        wal.append(1, [(b"k", b"v")], sync=False)
        wal.append_many([], sync=True)
        assert (file.appends, file.fsyncs) == (1, 1)
        assert wal.durable == wal.size
        wal.append_many([], sync=True)
        assert file.fsyncs == 1  # nothing new to make durable
    finally:
        wal.close()


def test_wal_new_log_holds_only_its_header(tmp_path: pathlib.Path) -> None:
    path, _ = _log(tmp_path, [])
    assert os.path.getsize(path) == record.FILE_HEADER.size
    result = replay_log(FS, path, 3, last=True)
    assert result.commits == [] and result.damage is None and result.valid_end == record.FILE_HEADER.size


def test_wal_writer_tracks_written_and_durable_bytes(tmp_path: pathlib.Path) -> None:
    path = log_path(str(tmp_path), 1)
    wal = WalWriter.create(FS, str(tmp_path), path, 1)
    try:
        assert wal.size == wal.durable == record.FILE_HEADER.size
        wal.append(1, [(b"k", b"v")], sync=False)
        assert wal.size > wal.durable == record.FILE_HEADER.size
        wal.sync()
        assert wal.durable == wal.size == os.path.getsize(path)
        wal.append(2, [(b"k", b"w")], sync=True)
        assert wal.durable == wal.size == os.path.getsize(path)
    finally:
        wal.close()


def test_wal_each_commit_records_the_durable_offset_before_it(tmp_path: pathlib.Path) -> None:
    path, starts = _log(tmp_path, COMMITS, sync=True)
    data = pathlib.Path(path).read_bytes()
    for i, start in enumerate(starts):
        payload = data[start + record.WAL_FRAME.size :]
        _, durable, _ = record.COMMIT_HEADER.unpack_from(payload, 0)
        assert durable == start  # every earlier commit was fsynced
        assert durable <= start and (i == 0 or durable > starts[i - 1])


def test_wal_creating_an_existing_log_fails(tmp_path: pathlib.Path) -> None:
    path, _ = _log(tmp_path, COMMITS[:1])
    with pytest.raises(FileExistsError):
        WalWriter.create(FS, str(tmp_path), path, 3)


# ---------------------------------------------------------------- torn tails


def test_wal_truncated_tail_is_ignored_at_every_byte_of_the_last_frame(tmp_path: pathlib.Path) -> None:
    path, starts = _log(tmp_path, COMMITS, sync=True)
    full = pathlib.Path(path).read_bytes()
    last = starts[-1]
    for cut in range(last, len(full)):
        pathlib.Path(path).write_bytes(full[:cut])
        result = replay_log(FS, path, 3, last=True)
        assert result.commits == _expected(COMMITS[:-1]), cut
        assert result.valid_end == last
        assert (result.damage is None) == (cut == last), cut
        if result.damage is not None:
            assert result.damage[0] == last


@pytest.mark.parametrize("tail", [b"\0" * 100, b"\0", b"garbage" * 5, b"\xff" * 9,
                                  record.WAL_FRAME.pack(0, 3, 1) + b"abc"],
                         ids=["zeros", "one-zero", "garbage", "ff", "frame-with-bad-crc"])
def test_wal_junk_after_the_last_frame_is_a_torn_tail(tmp_path: pathlib.Path, tail: bytes) -> None:
    path, _ = _log(tmp_path, COMMITS, sync=True)
    end = os.path.getsize(path)
    with open(path, "ab") as f:
        f.write(tail)
    result = replay_log(FS, path, 3, last=True)
    assert result.commits == _expected(COMMITS)
    assert result.valid_end == end and result.damage is not None and result.damage[0] == end


def test_wal_damaged_last_frame_is_a_torn_tail(tmp_path: pathlib.Path) -> None:
    path, starts = _log(tmp_path, COMMITS, sync=True)
    _damage(path, starts[-1] + 15)
    result = replay_log(FS, path, 3, last=True)
    assert result.commits == _expected(COMMITS[:-1])
    assert result.damage is not None and result.damage[0] == starts[-1]


def test_wal_damage_with_no_durable_claim_after_it_is_a_torn_tail(tmp_path: pathlib.Path) -> None:
    # unsynced commits claim nothing durable past the header: damage anywhere in them may be a torn write
    path, starts = _log(tmp_path, COMMITS, sync=False)
    _damage(path, starts[1] + 12)
    result = replay_log(FS, path, 3, last=True)
    assert result.commits == _expected(COMMITS[:1])
    assert result.damage is not None and result.damage[0] == starts[1]


def test_wal_reserved_type_zero_frame_is_never_valid(tmp_path: pathlib.Path) -> None:
    path, starts = _log(tmp_path, COMMITS[:2], sync=True)
    payload = record.encode_commit(3, starts[-1], [(b"x", b"y")])
    with open(path, "ab") as f:
        f.write(record.encode_frame(3, record.RecordType.RESERVED, payload))
    result = replay_log(FS, path, 3, last=True)
    assert result.commits == _expected(COMMITS[:2])
    assert result.damage is not None and "type" in result.damage[1]


# ---------------------------------------------------------------- corruption before the durable point


@pytest.mark.parametrize("frame", [0, 1, 2, 3], ids=lambda i: f"frame{i}")
@pytest.mark.parametrize("where", [0, 4, 8, 12, 25], ids=lambda w: f"byte{w}")
def test_wal_damage_before_a_later_durable_claim_is_corruption(tmp_path: pathlib.Path, frame: int,
                                                              where: int) -> None:
    path, starts = _log(tmp_path, COMMITS, sync=True)
    _damage(path, starts[frame] + where)
    with pytest.raises(CorruptionError) as info:
        replay_log(FS, path, 3, last=True)
    assert info.value.path == path
    assert info.value.offset == starts[frame]


def test_wal_truncation_is_never_mistaken_for_damage_before_a_durable_point(tmp_path: pathlib.Path) -> None:
    # cutting a synced log short loses only its tail: there is no intact later frame to claim otherwise
    path, starts = _log(tmp_path, COMMITS, sync=True)
    full = pathlib.Path(path).read_bytes()
    for i, start in enumerate(starts):
        pathlib.Path(path).write_bytes(full[: start + 3])
        assert replay_log(FS, path, 3, last=True).commits == _expected(COMMITS[:i])


def test_wal_damage_in_a_log_that_is_not_the_last_is_corruption(tmp_path: pathlib.Path) -> None:
    path, starts = _log(tmp_path, COMMITS, sync=False)
    _damage(path, starts[-1] + 10)
    assert replay_log(FS, path, 3, last=True).commits == _expected(COMMITS[:-1])
    with pytest.raises(CorruptionError) as info:
        replay_log(FS, path, 3, last=False)
    assert (info.value.path, info.value.offset) == (path, starts[-1])


def test_wal_truncated_log_that_is_not_the_last_is_corruption(tmp_path: pathlib.Path) -> None:
    path, starts = _log(tmp_path, COMMITS, sync=True)
    with open(path, "r+b") as f:
        f.truncate(starts[-1] + 5)
    with pytest.raises(CorruptionError) as info:
        replay_log(FS, path, 3, last=False)
    assert info.value.offset == starts[-1]


def test_wal_frame_from_another_log_number_fails_its_checksum(tmp_path: pathlib.Path) -> None:
    # the CRC covers the log number: a log renamed, or a frame copied across logs, does not check out
    path, _ = _log(tmp_path, COMMITS[:2], sync=False, number=3)
    other = log_path(str(tmp_path), 4)
    data = bytearray(pathlib.Path(path).read_bytes())
    data[: record.FILE_HEADER.size] = record.encode_file_header(record.WAL_MAGIC, 4)
    pathlib.Path(other).write_bytes(bytes(data))
    result = replay_log(FS, other, 4, last=True)
    assert result.commits == []
    assert result.damage is not None and "checksum" in result.damage[1]


def test_wal_sequences_that_do_not_increase_are_corruption(tmp_path: pathlib.Path) -> None:
    path = log_path(str(tmp_path), 3)
    wal = WalWriter.create(FS, str(tmp_path), path, 3)
    try:
        wal.append(5, [(b"a", b"1")], sync=True)
        wal.append(5, [(b"b", b"2")], sync=True)
    finally:
        wal.close()
    with pytest.raises(CorruptionError, match="sequence"):
        replay_log(FS, path, 3, last=True)


@pytest.mark.parametrize("strict", [True, False], ids=["strict", "salvage"])
def test_wal_commit_holding_a_key_twice_is_corruption_at_its_frame(tmp_path: pathlib.Path, strict: bool) -> None:
    # a frame with a good checksum whose commit names one key twice is what was written, not a torn
    # tail: refused in both modes, naming the frame
    path, _ = _log(tmp_path, COMMITS[:2], sync=True)
    end = os.path.getsize(path)
    twice = record.encode_commit(3, end, [(b"", b"1"), (b"", b"2")])
    with open(path, "ab") as f:
        f.write(record.encode_frame(3, record.RecordType.COMMIT, twice))
    with pytest.raises(CorruptionError, match="twice") as info:
        replay_log(FS, path, 3, last=True, strict=strict)
    assert (info.value.path, info.value.offset) == (path, end)


def test_wal_commit_claiming_a_durable_offset_past_itself_is_corruption(tmp_path: pathlib.Path) -> None:
    path, _ = _log(tmp_path, COMMITS[:1], sync=True)
    end = os.path.getsize(path)
    with open(path, "ab") as f:
        f.write(record.encode_frame(3, record.RecordType.COMMIT, record.encode_commit(2, end + 100, [(b"k", b"v")])))
    with pytest.raises(CorruptionError, match="durable") as info:
        replay_log(FS, path, 3, last=True)
    assert info.value.offset == end


# ---------------------------------------------------------------- headers


@pytest.mark.parametrize("size", [0, 1, 10, record.FILE_HEADER.size - 1], ids=lambda n: f"{n}B")
def test_wal_torn_header_on_a_short_last_log_is_a_torn_tail(tmp_path: pathlib.Path, size: int) -> None:
    path, _ = _log(tmp_path, [])
    with open(path, "r+b") as f:
        f.truncate(size)
    result = replay_log(FS, path, 3, last=True)
    assert result.commits == [] and not result.header_ok
    assert result.damage is not None and result.damage[0] == 0


def test_wal_header_of_a_short_log_that_is_not_the_last_is_corruption(tmp_path: pathlib.Path) -> None:
    path, _ = _log(tmp_path, [])
    with open(path, "r+b") as f:
        f.truncate(7)
    with pytest.raises(CorruptionError) as info:
        replay_log(FS, path, 3, last=False)
    assert (info.value.path, info.value.offset) == (path, 0)


def test_wal_damaged_header_before_frames_is_corruption(tmp_path: pathlib.Path) -> None:
    # a header is fsynced before any frame is appended: with frames after it, it cannot be torn
    path, _ = _log(tmp_path, COMMITS, sync=False)
    _damage(path, 9)
    with pytest.raises(CorruptionError) as info:
        replay_log(FS, path, 3, last=True)
    assert (info.value.path, info.value.offset) == (path, 0)


def test_wal_newer_format_version_is_unsupported(tmp_path: pathlib.Path) -> None:
    path, _ = _log(tmp_path, COMMITS[:1])
    _damage(path, 0, record.encode_file_header(record.WAL_MAGIC, 3, version=record.WAL_FORMAT_VERSION + 1))
    with pytest.raises(UnsupportedFormatError):
        replay_log(FS, path, 3, last=True)


# ---------------------------------------------------------------- salvage


def test_wal_salvage_keeps_the_prefix_before_damage_at_a_durable_point(tmp_path: pathlib.Path) -> None:
    path, starts = _log(tmp_path, COMMITS, sync=True)
    _damage(path, starts[2] + 14)
    result = replay_log(FS, path, 3, last=True, strict=False)
    assert result.commits == _expected(COMMITS[:2])
    assert result.damage is not None and result.damage[0] == starts[2]
    assert result.valid_end == starts[2]
    assert result.salvaged  # corruption strict replay refuses, not a torn tail


@pytest.mark.parametrize("strict", [True, False], ids=["strict", "salvage"])
def test_wal_torn_tail_is_not_reported_as_salvaged(tmp_path: pathlib.Path, strict: bool) -> None:
    path, starts = _log(tmp_path, COMMITS, sync=True)
    _damage(path, starts[-1] + 14)
    result = replay_log(FS, path, 3, last=True, strict=strict)
    assert result.damage is not None and not result.salvaged


def test_wal_salvage_keeps_the_prefix_of_a_log_that_is_not_the_last(tmp_path: pathlib.Path) -> None:
    path, starts = _log(tmp_path, COMMITS, sync=False)
    _damage(path, starts[3] + 14)
    result = replay_log(FS, path, 3, last=False, strict=False)
    assert result.commits == _expected(COMMITS[:3])
    assert result.damage is not None and result.damage[0] == starts[3]
    assert result.salvaged


def test_wal_salvage_of_a_damaged_header_keeps_nothing(tmp_path: pathlib.Path) -> None:
    path, _ = _log(tmp_path, COMMITS, sync=True)
    _damage(path, 2)
    result = replay_log(FS, path, 3, last=True, strict=False)
    assert result.commits == [] and not result.header_ok and result.damage is not None and result.salvaged


# ---------------------------------------------------------------- reopen after replay


def test_wal_reopen_cuts_the_torn_tail_and_appends_after_the_valid_prefix(tmp_path: pathlib.Path) -> None:
    path, starts = _log(tmp_path, COMMITS, sync=True)
    with open(path, "r+b") as f:
        f.truncate(starts[-1] + 11)
    result = replay_log(FS, path, 3, last=True)
    wal = WalWriter.reopen(FS, path, 3, result.valid_end, result.header_ok)
    try:
        assert os.path.getsize(path) == starts[-1] == wal.size == wal.durable
        wal.append(len(COMMITS), [(b"new", b"commit")], sync=True)
    finally:
        wal.close()
    again = replay_log(FS, path, 3, last=True)
    assert again.commits == [*_expected(COMMITS[:-1]), (len(COMMITS), [(b"new", b"commit")])]
    assert again.damage is None


def test_wal_reopen_rewrites_a_torn_header(tmp_path: pathlib.Path) -> None:
    path, _ = _log(tmp_path, [])
    with open(path, "r+b") as f:
        f.truncate(5)
    result = replay_log(FS, path, 3, last=True)
    wal = WalWriter.reopen(FS, path, 3, result.valid_end, result.header_ok)
    try:
        wal.append(1, [(b"k", b"v")], sync=True)
    finally:
        wal.close()
    again = replay_log(FS, path, 3, last=True)
    assert again.commits == [(1, [(b"k", b"v")])] and again.header_ok and again.damage is None


class _CountingFS(OSFileSystem):
    """The OS file system, counting fsyncs of files and directories."""

    def __init__(self) -> None:
        self.fsyncs: list[str] = []

    def open(self, path: str, *, write: bool = False, create: bool = False) -> _CountingFile:  # type: ignore[override]
        file = super().open(path, write=write, create=create)
        return _CountingFile(self, file)

    def sync_dir(self, path: str) -> None:
        self.fsyncs.append(path)
        super().sync_dir(path)


class _CountingFile:
    def __init__(self, fs: _CountingFS, file: OSFile) -> None:
        self._fs = fs
        self._file = file
        self.path = file.path

    def pread(self, size: int, offset: int) -> bytes:
        return self._file.pread(size, offset)

    def append(self, data: bytes) -> None:
        self._file.append(data)

    def write_at(self, offset: int, data: bytes) -> None:
        self._file.write_at(offset, data)

    def truncate(self, size: int) -> None:
        self._file.truncate(size)

    def fsync(self) -> None:
        self._fs.fsyncs.append(self.path)
        self._file.fsync()

    def size(self) -> int:
        return self._file.size()

    def close(self) -> None:
        self._file.close()


def test_wal_reopen_fsyncs_frames_a_killed_process_left_unsynced(tmp_path: pathlib.Path) -> None:
    # A process killed after unsynced commits leaves frames in the OS, not on disk: reopening must sync them
    # before any later frame records a durable offset past them.
    path = log_path(str(tmp_path), 1)
    writer = WalWriter.create(OSFileSystem(), str(tmp_path), path, 1)
    writer.append(1, [(b"a", b"1")], sync=False)
    writer.close()
    fs = _CountingFS()
    size = os.path.getsize(path)
    reopened = WalWriter.reopen(fs, path, 1, size, header_ok=True)
    assert fs.fsyncs == [path]
    assert reopened.durable == reopened.size == size
    reopened.close()
