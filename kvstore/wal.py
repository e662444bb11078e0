"""The write-ahead log: numbered log files of CRC32C-framed commit units, and their replay.

A log file is a 20-byte file header, then frames (DESIGN.md, "WAL file").  One
transaction is one COMMIT frame.  Each commit records ``durable_offset``, the
file length known fsynced when it was written, so that replay can tell a torn
tail (damage past every durable claim: truncated) from corruption (damage that
a later intact record says was durable: ``CorruptionError``).  The header of a
new log is fsynced, with its directory entry, before any frame is appended,
and a log is fsynced whole before the next one is created, so only the last
log can have a torn tail.

Invariants:
  - sequences strictly increase within and across logs;
  - ``durable <= size`` and every frame's ``durable_offset`` is at most its own offset.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Sequence

from kvstore import record
from kvstore.errors import CorruptionError
from kvstore.fs import File, FileSystem
from kvstore.metrics import Latency

__all__ = ["LogReplay", "WalWriter", "replay_log"]

_COMMIT = int(record.RecordType.COMMIT)

Writes = list[tuple[bytes, "bytes | None"]]


class WalWriter:
    """Appends commit units to one log file.  ``size`` is what was written, ``durable`` what was fsynced."""

    def __init__(self, fs: FileSystem, path: str, log_number: int, file: File, durable: int) -> None:
        self.fs = fs
        self.path = path
        self.log_number = log_number
        self._file = file
        self.size = file.size()
        self.durable = durable
        self.fsyncs: Latency | None = None  # where each fsync's time goes (the KV's ``Metrics.fsync``)

    @classmethod
    def create(cls, fs: FileSystem, dirpath: str, path: str, log_number: int) -> WalWriter:
        """A new log: header written and fsynced, directory entry synced."""
        file = fs.open(path, create=True)
        try:
            header = record.encode_file_header(record.WAL_MAGIC, log_number)
            file.append(header)
            file.fsync()
            fs.sync_dir(dirpath)
        except BaseException:
            file.close()
            raise
        return cls(fs, path, log_number, file, len(header))

    @classmethod
    def reopen(cls, fs: FileSystem, path: str, log_number: int, valid_end: int, header_ok: bool) -> WalWriter:
        """Continue an existing log after replay: cut a torn tail (or rewrite a torn header) and fsync.

        The fsync is unconditional: a killed process may have left frames the
        OS holds but the disk does not, and the next frame's durable offset
        must not claim them before they are synced.
        """
        file = fs.open(path, write=True)
        try:
            if not header_ok:
                file.truncate(0)
                file.append(record.encode_file_header(record.WAL_MAGIC, log_number))
            elif file.size() != valid_end:
                file.truncate(valid_end)
            file.fsync()
            if not header_ok:
                fs.sync_dir(os.path.dirname(path) or ".")  # its creation may not have reached the directory
        except BaseException:
            file.close()
            raise
        return cls(fs, path, log_number, file, file.size())

    def append(self, sequence: int, writes: Sequence[tuple[bytes, bytes | None]], sync: bool) -> None:
        """Write one commit unit; with ``sync`` it is durable (with all before it) when this returns."""
        frame = record.encode_frame(self.log_number, _COMMIT, record.encode_commit(sequence, self.durable, writes))
        self._file.append(frame)
        self.size += len(frame)
        if sync:
            self.sync()

    def append_many(self, commits: Sequence[tuple[int, Sequence[tuple[bytes, bytes | None]]]], sync: bool) -> None:
        """Write several commit units, (sequence, writes) in sequence order, with one append and, with
        ``sync``, one fsync: the group-commit path.  Each frame is the one ``append`` would write (all
        record the same durable offset); when this returns with ``sync`` every one of them is durable."""
        assert all(a[0] < b[0] for a, b in itertools.pairwise(commits)), "sequences out of order"
        durable, number, frame, commit = self.durable, self.log_number, record.encode_frame, record.encode_commit
        data = b"".join([frame(number, _COMMIT, commit(seq, durable, writes)) for seq, writes in commits])
        if data:
            self._file.append(data)
            self.size += len(data)
        if sync:
            self.sync()

    def sync(self) -> None:
        """fsync whatever is not durable yet."""
        if self.durable != self.size:
            start = time.perf_counter_ns()
            self._file.fsync()
            self.durable = self.size
            if self.fsyncs is not None:
                self.fsyncs.observe(time.perf_counter_ns() - start)

    def close(self) -> None:
        self._file.close()


class LogReplay:
    """What replaying one log found: its commits, where its valid prefix ends, and any damage."""

    __slots__ = ("commits", "valid_end", "size", "header_ok", "damage", "salvaged")

    def __init__(self) -> None:
        self.commits: list[tuple[int, Writes]] = []
        self.valid_end = 0
        self.size = 0
        self.header_ok = True
        #: None, or (offset, reason) of the first damaged frame
        self.damage: tuple[int, str] | None = None
        #: True when the damage is corruption that strict replay would have raised (not a torn tail)
        self.salvaged = False


def replay_log(fs: FileSystem, path: str, log_number: int, *, last: bool, strict: bool = True) -> LogReplay:
    """Read every commit of a log.

    A damaged frame in the ``last`` log, after which no intact frame claims a
    durable point beyond it, is a torn tail: replay stops there and
    ``damage`` says where.  Any other damage raises ``CorruptionError`` when
    ``strict``; otherwise replay keeps the valid prefix and reports it.
    An intact frame that breaks the format's rules (a commit that does not
    parse, keys not ascending, a sequence not above the one before it in this
    log) raises ``CorruptionError`` at that frame in either mode; the order
    across logs is recovery's to check (``recovery._replay``), since a log may
    begin with commits a table already holds.
    """
    file = fs.open(path)
    try:
        buf = file.pread(file.size(), 0)
    finally:
        file.close()
    out = LogReplay()
    out.size = len(buf)
    if not _replay_header(buf, path, log_number, last, strict, out):
        return out
    pos, bad = _replay_frames(buf, path, log_number, out)
    out.valid_end = pos
    if pos == out.size:
        return out
    later = _later_durable_claim(buf, pos, log_number)
    if (later > pos or not last) and strict:
        why = "a later record says it was durable" if later > pos else "a later log exists"
        raise CorruptionError(path, pos, f"{bad} before the durable point ({why})")
    out.damage = (pos, bad)
    out.salvaged = later > pos or not last
    return out


def _replay_header(buf: bytes, path: str, log_number: int, last: bool, strict: bool, out: LogReplay) -> bool:
    """Check the log's file header; False (with ``out`` saying why) when replay stops at it."""
    head = record.FILE_HEADER.size
    try:
        record.decode_file_header(buf[:head], path, record.WAL_MAGIC, log_number)
    except CorruptionError as exc:
        # A header is fsynced before anything follows it: a bad one is torn only on a file no longer than it.
        if last and len(buf) <= head:
            out.header_ok = False
            out.damage = (0, f"torn log header: {exc.reason}")
            return False
        if strict:
            raise
        out.header_ok = False
        out.damage = (0, exc.reason)
        out.salvaged = True
        return False
    return True


def _replay_frames(buf: bytes, path: str, log_number: int, out: LogReplay) -> tuple[int, str]:
    """Decode the intact frames after the header into ``out.commits``; returns where they end and why
    the frame there is not intact ("" at the end of the file)."""
    head = record.FILE_HEADER.size
    size = len(buf)
    pos = head
    prev_seq = 0
    frame = record.WAL_FRAME
    fsize = frame.size
    bad = ""
    while pos < size:
        bad = _bad_frame(buf, pos, log_number)
        if bad:
            break
        _, length, _ = frame.unpack_from(buf, pos)
        payload = buf[pos + fsize : pos + fsize + length]
        seq, durable, writes = record.decode_commit(payload, path, pos)
        if durable > pos or durable < head:
            raise CorruptionError(path, pos, f"commit claims durable offset {durable} outside [{head}, {pos}]")
        if seq <= prev_seq:
            raise CorruptionError(path, pos, f"sequence {seq} does not follow {prev_seq}")
        prev_seq = seq
        out.commits.append((seq, writes))
        pos += fsize + length
    return pos, bad


def _bad_frame(buf: bytes, pos: int, log_number: int) -> str:
    """Why the frame at ``pos`` is not intact, or "" when it is."""
    fsize = record.WAL_FRAME.size
    if len(buf) - pos < fsize:
        return "frame header cut short"
    stored, length, rtype = record.WAL_FRAME.unpack_from(buf, pos)
    if rtype != record.RecordType.COMMIT:
        return f"frame of invalid type {rtype}"
    if length > len(buf) - pos - fsize:
        return f"frame of {length} bytes runs past the end of the file"
    if record.frame_crc(log_number, length, rtype, memoryview(buf)[pos + fsize : pos + fsize + length]) != stored:
        return "frame checksum mismatch"
    return ""


def _later_durable_claim(buf: bytes, damaged: int, log_number: int) -> int:
    """The largest durable offset claimed by any intact frame after ``damaged`` (0 when none).

    Frames are found by trying every offset: the CRC covers the log number,
    so a stray match is a 2**-32 event per offset.
    """
    best = 0
    size = len(buf)
    fsize = record.WAL_FRAME.size
    unpack = record.WAL_FRAME.unpack_from
    for p in range(damaged + 1, size - fsize - record.COMMIT_HEADER.size + 1):
        _, length, rtype = unpack(buf, p)
        if rtype != 1 or length < record.COMMIT_HEADER.size or length > size - p - fsize:
            continue
        if _bad_frame(buf, p, log_number):
            continue
        _, durable, _ = record.COMMIT_HEADER.unpack_from(buf, p + fsize)
        best = max(best, durable)
    return best
