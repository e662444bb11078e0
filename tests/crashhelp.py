"""Helpers of the crash machine of tests/test_crash.py: its model, its strategies, and where structures lie on disk.

The model of commits and their durability (``Status``, ``Commit``,
``OpenTx``, ``apply``), the machine's ``Clock``, the strategies and
constants its rules draw from, reads checked against each other
(``read_all``, ``expected_scan``), the ``SimFS`` under a file system and
whether it crashed, and what locates the structures the ``damage`` rule
flips a byte of: the frames of a WAL, the parts of a table (header, blocks,
index, bloom, range tombstones, props, footer), the version in each meta slot.
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass, field

from checkfs import CheckingFS
from hypothesis import strategies as st

from kvstore import KV, KVTX, CorruptionError, record
from kvstore.simfs import CrashMode, SimFS
from kvstore.sorted_file import BlockCache, TableReader

Model = dict[bytes, bytes]
FS = SimFS | CheckingFS
Writes = dict[bytes, "bytes | None"]

DB = "/db"
KEYS = [b"", *(b"k%02d" % i for i in range(11))]
keys = st.sampled_from(KEYS)
pads = st.integers(0, 48)
seeds = st.integers(0, 2**32 - 1)
modes = st.sampled_from(list(CrashMode))
#: crash points inside a recovery (an open makes about 5..20 mutating operations)
recovery_crashes = st.lists(st.tuples(st.integers(1, 24), modes, seeds), max_size=2)
#: seconds a value set with a ttl lasts, and steps of the clock: multiples of 1/4, so sums are exact
ttls = st.sampled_from([0.5, 1.0, 2.0, 5.0, 20.0])
ticks = st.sampled_from([0.0, 0.5, 1.0, 2.0, 5.0])
OPS = ["set", "set_ttl", "delete", "delete_range", "tx_sync", "tx_nosync", "tx_ttl", "tx_range", "flush", "compact",
       "compact_full", "close"]
FAULT_OPS = ["create", "write", "truncate", "fsync", "sync_dir", "rename", "unlink"]
FAULT_PATTERNS = ["*", "*.log", "*.sst", "meta?", "meta?.tmp"]
TARGETS = ["wal_middle", "wal_tail", "block", "index", "bloom", "ranges", "props", "footer", "header",
           "meta_newest", "meta_older", "meta_both"]


class Status(enum.Enum):
    DURABLE = "durable"  # survives power loss
    ACKED = "acked"  # returned without sync: survives a process kill
    INFLIGHT = "inflight"  # raised FailedError or crashed mid-call: may or may not be there


@dataclass
class Commit:
    writes: Writes
    status: Status


class Clock:
    """The time every KV of the machine reads, in seconds; a rule moves ``now`` forward."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class OpenTx:
    tx: KVTX
    snapshot: Model
    start: int  # commits before this index of the machine's list are in its snapshot
    writes: Writes = field(default_factory=dict)
    ttls: dict[bytes, float] = field(default_factory=dict)  # the ttl of each value it set with one, by value
    reads: set[bytes] = field(default_factory=set)  # keys read from the database (docs/transactions.md)
    scanned: list[tuple[bytes | None, bytes | None]] = field(default_factory=list)  # exhausted scans

    def view(self) -> Model:
        return apply(self.snapshot, self.writes)

    def read(self, key: bytes) -> None:
        if key not in self.writes:
            self.reads.add(key)

    def covers(self, key: bytes) -> bool:
        return key in self.reads or any((lo is None or key >= lo) and (hi is None or key < hi)
                                        for lo, hi in self.scanned)


def apply(state: Model, writes: Writes) -> Model:
    out = dict(state)
    for key, value in writes.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def expected_scan(view: Model, start: bytes | None, end: bytes | None, reverse: bool) -> list[tuple[bytes, bytes]]:
    out = [(k, v) for k, v in sorted(view.items()) if (start is None or k >= start) and (end is None or k < end)]
    return out[::-1] if reverse else out


def read_all(kv: KV) -> Model:
    """Every pair by a full scan, checked against a get of every key the machine uses."""
    state = dict(kv.scan())
    for key in KEYS:
        assert kv.get(key) == state.get(key), key
    assert list(kv.scan(reverse=True)) == sorted(state.items(), reverse=True)
    return state


def crashed(fs: FS) -> bool:
    """Whether the armed crash point was reached: the machine is down.  Code that runs on after the
    ``SimulatedCrash`` (``finally`` blocks) may then raise something else from the dead file system,
    as if the process had gone on a moment longer; a real crash ends it there."""
    return sim(fs)._down


def sim(fs: FS) -> SimFS:
    """The SimFS under ``fs``."""
    return fs.inner if isinstance(fs, CheckingFS) else fs


def wal_frames(buf: bytes) -> list[tuple[int, int, int]]:
    """(offset, length, durable_offset) of each whole frame of a log's bytes."""
    frames = []
    pos = record.FILE_HEADER.size
    fsize = record.WAL_FRAME.size
    while pos + fsize <= len(buf):
        _, length, _ = record.WAL_FRAME.unpack_from(buf, pos)
        if pos + fsize + length > len(buf):
            break
        _, durable, _ = record.COMMIT_HEADER.unpack_from(buf, pos + fsize)
        frames.append((pos, fsize + length, durable))
        pos += fsize + length
    return frames


def table_layout(fs: FS, name: str) -> dict[str, list[tuple[int, int]]]:
    """(offset, size) of each structure of one table: header, data blocks, index, bloom, range tombstones
    (none, or one section), props, footer."""
    path = os.path.join(DB, name)
    number = int(name.split(".")[0])
    reader = TableReader(fs, path, number, BlockCache(0))
    try:
        blocks = list(zip(reader._offsets, reader._sizes))
    finally:
        reader.close()
    data = fs.read_file(path)
    foot_at = len(data) - record.FOOTER.size
    index, bloom, props = record.decode_footer(data[foot_at:], path, foot_at, number)
    version = int.from_bytes(data[4:6], "little")
    payload = record.open_chunk(data[props[0] : props[0] + props[1]], path, number, props[0])
    ranges = record.decode_props(payload, path, props[0], version)[6]
    return {"header": [(0, record.FILE_HEADER.size)], "block": blocks, "index": [index], "bloom": [bloom],
            "ranges": [ranges] if ranges != (0, 0) else [], "props": [props],
            "footer": [(foot_at, record.FOOTER.size)]}


def meta_versions(fs: FS) -> dict[str, int]:
    """The version held by each valid meta slot, by slot name."""
    out = {}
    for slot, name in enumerate(("meta0", "meta1")):
        path = os.path.join(DB, name)
        if fs.exists(path):
            try:
                out[name] = record.decode_meta(fs.read_file(path), path, slot)[0]
            except CorruptionError:
                continue
    return out
