"""KV and KVTX: opening, recovery, reads, transactions, flushes and merges of one database directory.

A database directory holds ``meta0``/``meta1`` (which tables and logs are
live), numbered tables ``NNNNNN.sst``, numbered logs ``NNNNNN.log`` and a
``LOCK`` file (DESIGN.md, "Directory layout").  A commit is appended to the
current log, then applied to the memtable under one sequence number; a full
memtable is flushed to a new table, which enters the meta only once it is
fsynced with its directory; tables merge by the growth-factor rule.  Every
read works on a *view* (memtable, immutable memtables, tables, newest first)
and a snapshot sequence; a view keeps its tables' files alive until the last
reader lets go of it.

Invariants (``KV._check``):
  - ``_view.tables`` are the meta's tables, newest first, with descending sequence ranges;
  - the memtable holds only sequences above the meta's ``last_sequence``;
  - a file is unlinked only when neither valid meta slot names it and no view holds it;
  - file numbers only grow: every number handed out is ``>= meta.next_file`` at the time.
"""

from __future__ import annotations

import builtins
import collections
import contextlib
import errno
import itertools
import logging
import os
import re
import threading
import time
import weakref
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import TypeVar

import attrs

from kvstore import record
from kvstore.config import Config
from kvstore.errors import (
    ClosedError,
    ConflictError,
    CorruptionError,
    FailedError,
    InvalidCursorError,
    KeyOrValueTooLargeError,
    ReadOnlyError,
    TxClosedError,
    UnsupportedFormatError,
)
from kvstore.fs import FileLock, FileSystem, OSFileSystem
from kvstore.merge import compact_entries, merge_items
from kvstore.metadata import META_NAMES, Meta, MetaStore
from kvstore.sorted_array import Memtable
from kvstore.sorted_file import BlockCache, TableReader, TableWriter
from kvstore.wal import WalWriter, replay_log

__all__ = ["KV", "KVTX", "Cursor", "Stats", "TableStats"]

log = logging.getLogger("kvstore")

T = TypeVar("T")
Item = tuple[bytes, "bytes | None"]
#: What callers may pass as a key or value; it is copied to ``bytes``.
Bytes = bytes | bytearray | memoryview

_FILE_NAME = re.compile(r"^(\d{6,})\.(sst|log)$")
LOCK_NAME = "LOCK"


def _own_file(name: str) -> re.Match[str] | None:
    """The match of a table or log name kvstore could have written; a number past ``record.MAX_COUNTER``
    is not one (counting on from it would overflow the u64 in the meta), so such a file is left alone."""
    m = _FILE_NAME.match(name)
    return m if m is not None and int(m.group(1)) <= record.MAX_COUNTER else None


def table_name(number: int) -> str:
    """The file name of table ``number``."""
    return f"{number:06d}.sst"


def log_name(number: int) -> str:
    """The file name of log ``number``."""
    return f"{number:06d}.log"


def _as_bytes(data: object, what: str) -> bytes:
    if type(data) is bytes:
        return data
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    raise TypeError(f"{what} must be bytes, bytearray or memoryview, not {type(data).__name__}")


def _successor(prefix: bytes) -> bytes | None:
    """The smallest key greater than every key starting with ``prefix``; None when there is none."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes([stripped[-1] + 1])


def _bounds(start: object, end: object, prefix: object) -> tuple[bytes | None, bytes | None]:
    """[lo, hi) of a scan: ``[start, end)`` intersected with the keys starting with ``prefix``."""
    lo = None if start is None else _as_bytes(start, "start")
    hi = None if end is None else _as_bytes(end, "end")
    if prefix is not None:
        p = _as_bytes(prefix, "prefix")
        if lo is None or lo < p:
            lo = p
        succ = _successor(p)
        if succ is not None and (hi is None or hi > succ):
            hi = succ
    return lo, hi


@attrs.frozen
class TableStats:
    """One live table: ``name`` is its file name in the database directory."""

    name: str
    file_number: int
    entries: int
    deletes: int
    bytes: int
    smallest: builtins.bytes
    largest: builtins.bytes
    min_sequence: int
    max_sequence: int


@attrs.frozen
class Stats:
    """A picture of a KV at one moment (``KV.stats()``)."""

    sequence: int
    tables: tuple[TableStats, ...]
    memtable_bytes: int
    memtable_entries: int
    immutable_memtables: int
    wal_bytes: int
    live_snapshots: int
    oldest_snapshot: int | None
    oldest_snapshot_age: float | None
    flushes: int
    merges: int
    bytes_written: int
    user_bytes: int
    disk_bytes: int
    cache_hits: int
    cache_misses: int
    recovery: tuple[str, ...]
    failed: str | None
    #: Commits that waited because flushing fell behind (immutable memtables at their bound).
    write_stalls: int = 0
    #: Seconds commits spent waiting so.
    stall_seconds: float = 0.0
    #: Keys of committed write sets kept because a live transaction may conflict with them.
    tracked_writes: int = 0

    @property
    def write_amplification(self) -> float:
        """Bytes the engine wrote (WAL, tables, meta) per byte of keys and values committed."""
        return self.bytes_written / self.user_bytes if self.user_bytes else 0.0


class _Table:
    """A live table's reader and how many views hold it."""

    __slots__ = ("reader", "refs", "removed_in")

    def __init__(self, reader: TableReader) -> None:
        self.reader = reader
        self.refs = 0
        self.removed_in: int | None = None  # meta version that dropped it


class _View:
    """What one reader sees besides its snapshot: memtables and tables, newest first."""

    __slots__ = ("mems", "tables", "readers", "refs")

    def __init__(self, mems: tuple[Memtable, ...], tables: tuple[_Table, ...]) -> None:
        self.mems = mems
        self.tables = tables
        self.readers = tuple(t.reader for t in tables)
        self.refs = 1  # the KV's own, while this is the current view
        for t in tables:
            t.refs += 1


class _Pending:
    """A transaction's buffered writes, readable as the newest level (a value of None is a delete)."""

    __slots__ = ("writes", "_sorted")

    def __init__(self) -> None:
        self.writes: dict[bytes, bytes | None] = {}
        self._sorted: list[bytes] | None = []

    def put(self, key: bytes, value: bytes | None) -> None:
        if key not in self.writes:
            self._sorted = None
        self.writes[key] = value

    def _keys(self) -> list[bytes]:
        if self._sorted is None:
            self._sorted = sorted(self.writes)
        return self._sorted

    def get(self, key: bytes, snapshot: int) -> tuple[int, bytes | None] | None:
        if key in self.writes:
            return 0, self.writes[key]
        return None

    def items(self, start: bytes | None, snapshot: int, reverse: bool = False,
              inclusive: bool = True) -> Iterator[Item]:
        """Live: writes made while iterating are seen when the iterator reaches them."""
        last = start
        while True:
            keys = self._keys()
            if not reverse:
                if last is None:
                    i = 0
                else:
                    i = bisect_left(keys, last) if inclusive else bisect_right(keys, last)
                if i >= len(keys):
                    return
            else:
                if last is None:
                    i = len(keys) - 1
                else:
                    i = (bisect_right(keys, last) if inclusive else bisect_left(keys, last)) - 1
                if i < 0:
                    return
            key = keys[i]
            yield key, self.writes[key]
            last = key
            inclusive = False

    def entries(self) -> Iterator[tuple[bytes, int, bytes | None]]:
        for key in self._keys():
            yield key, 0, self.writes[key]


class _Range:
    """A key range a transaction's scan or cursor covered: ``[lo, hi]`` or ``[lo, hi)``; None is unbounded.

    It grows while the scan or cursor moves; until it covers a key it covers nothing (``active`` False).
    """

    __slots__ = ("lo", "hi", "hi_inclusive", "active")

    def __init__(self) -> None:
        self.lo: bytes | None = None
        self.hi: bytes | None = None
        self.hi_inclusive = True
        self.active = False

    def place(self, key: bytes) -> None:
        """Cover ``[key, key]`` (a cursor placed by a seek from ``key``)."""
        self.lo = self.hi = key
        self.hi_inclusive = True
        self.active = True

    def reach(self, key: bytes | None, forward: bool) -> None:
        """Widen to ``key``, reached moving ``forward`` or backward; None means past that end."""
        if forward:
            if key is None:
                self.hi = None
            elif self.hi is not None and (key > self.hi or (key == self.hi and not self.hi_inclusive)):
                self.hi = key
                self.hi_inclusive = True
        elif key is None:
            self.lo = None
        elif self.lo is not None and key < self.lo:
            self.lo = key

    def first_in(self, keys: list[bytes]) -> bytes | None:
        """The first of the sorted ``keys`` inside this range, or None."""
        if not self.active:
            return None
        lo, hi = self.lo, self.hi
        i = 0 if lo is None else bisect_left(keys, lo)
        if i < len(keys):
            key = keys[i]
            if hi is None or key < hi or (self.hi_inclusive and key == hi):
                return key
        return None


class _TxState:
    """Whether a transaction has ended, and what it read; shared by the KVTX and its reader.

    ``reads`` holds the keys read from the database by ``get`` and
    ``delete`` (not those served from the transaction's own writes);
    ``ranges`` what its scans and cursors covered (SPEC.md §6).
    """

    __slots__ = ("closed", "reads", "ranges")

    def __init__(self) -> None:
        self.closed = False
        self.reads: set[bytes] = set()
        self.ranges: list[_Range] = []


class _Reader:
    """A snapshot and a view held for a scan, a cursor or a transaction; ``release()`` lets them go."""

    __slots__ = ("kv", "view", "snapshot", "pending", "released", "tx", "__weakref__")

    def __init__(self, kv: KV, pending: _Pending | None, tx: _TxState | None = None) -> None:
        self.kv = kv
        self.pending = pending
        self.tx = tx  # the owning transaction's state (not the KVTX: its finalizer holds this reader)
        self.released = False
        with kv._lock:
            self.view = kv._view
            self.view.refs += 1
            self.snapshot = snap = kv._seq
            kv._snapshots[snap] = kv._snapshots.get(snap, 0) + 1
            kv._snapshot_times.setdefault(snap, time.monotonic())
            kv._oldest_snapshot = min(kv._snapshots)
            if tx is not None:
                kv._tx_snapshots[snap] = kv._tx_snapshots.get(snap, 0) + 1

    def check(self) -> None:
        """Raise ``ClosedError`` or ``TxClosedError`` when this reader may no longer be used."""
        if self.kv._closed:
            raise ClosedError("the KV is closed")
        if self.tx is not None and self.tx.closed:
            raise TxClosedError("the transaction is closed")
        if self.released:
            raise ClosedError("the cursor or scan is closed")

    def get(self, key: bytes) -> bytes | None:
        if self.pending is not None and key in self.pending.writes:
            return self.pending.writes[key]
        if self.tx is not None:
            self.tx.reads.add(key)
        return self.kv._get_in(self.view, key, self.snapshot)

    def items(self, start: bytes | None, reverse: bool, inclusive: bool) -> Iterator[tuple[bytes, bytes]]:
        snap = self.snapshot
        levels: list[Iterator[Item]] = []
        if self.pending is not None:  # live: the transaction's later writes are seen when reached
            levels.append(self.pending.items(start, snap, reverse, inclusive))
        for mem in self.view.mems:
            if len(mem):  # keys written into it from now on are past the snapshot
                levels.append(mem.items(start, snap, reverse, inclusive))
        for reader in self.view.readers:
            levels.append(reader.items(start, snap, reverse, inclusive))
        return merge_items(levels, reverse)

    def release(self) -> None:
        if self.released:
            return
        self.released = True
        kv = self.kv
        snap = self.snapshot
        with kv._lock:
            count = kv._snapshots[snap] - 1
            if count:
                kv._snapshots[snap] = count
            else:
                del kv._snapshots[snap]
                kv._snapshot_times.pop(snap, None)
            kv._oldest_snapshot = min(kv._snapshots) if kv._snapshots else None
            if self.tx is not None:
                count = kv._tx_snapshots[snap] - 1
                if count:
                    kv._tx_snapshots[snap] = count
                else:
                    del kv._tx_snapshots[snap]
            collect = kv._unref_view(self.view)
        if collect:
            kv._collect_soon()


class _Scan(Iterator[tuple[bytes, bytes]]):
    """The iterator ``scan()`` returns: pairs from one snapshot; closing it (or exhausting it) lets go."""

    __slots__ = ("_reader", "_owns", "_gen", "_tx", "_range", "_lo", "_hi", "_reverse", "_stop", "_done")

    def __init__(self, reader: _Reader, owns: bool, lo: bytes | None, hi: bytes | None, reverse: bool) -> None:
        self._reader = reader
        self._owns = owns
        self._tx: KVTX | None = None
        self._lo, self._hi, self._reverse = lo, hi, reverse
        self._range: _Range | None = None
        if reader.tx is not None:  # a transaction's scan: what it walks joins the read set
            self._range = _Range()
            reader.tx.ranges.append(self._range)
        self._stop = lo if reverse else hi  # the bound in the direction of travel
        self._done = False  # exhausted: StopIteration from now on, as iterators do
        if lo is not None and hi is not None and lo >= hi:
            self._gen: Iterator[tuple[bytes, bytes]] = iter(())
        else:
            self._gen = reader.items(hi if reverse else lo, reverse, not reverse)

    def __iter__(self) -> _Scan:
        return self

    def __next__(self) -> tuple[bytes, bytes]:
        reader = self._reader
        if reader.released or reader.kv._closed or (reader.tx is not None and reader.tx.closed):
            if self._done and not reader.kv._closed and (reader.tx is None or not reader.tx.closed):
                raise StopIteration
            reader.check()
        item = next(self._gen, None)
        stop = self._stop
        if item is not None and stop is not None and (item[0] < stop if self._reverse else item[0] >= stop):
            item = None
            self._gen = iter(())
        if item is None:
            done = self._range
            if done is not None:  # exhausted: the whole bound is covered
                done.lo, done.hi, done.hi_inclusive, done.active = self._lo, self._hi, self._hi is None, True
            self._done = True
            self.close()
            raise StopIteration
        r = self._range
        if r is not None:
            if not self._reverse:  # walked [lo, key]
                r.lo, r.hi, r.hi_inclusive = self._lo, item[0], True
            else:  # walked [key, hi)
                r.lo, r.hi, r.hi_inclusive = item[0], self._hi, self._hi is None
            r.active = True
        return item

    def close(self) -> None:
        """Release the scan's snapshot and files; idempotent."""
        if self._owns:
            self._reader.release()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # a finalizer must not raise; the KV may be gone
            self.close()


class Cursor:
    """A position in the key order of one snapshot, movable both ways.

    ``kv.seek(key)`` places it on the first key ``>= key``,
    ``kv.seek_for_prev(key)`` on the last key ``<= key``.  A cursor belongs
    to one thread at a time.  ``next()`` and ``prev()`` cost about the same;
    turning around costs one re-seek.  Use after ``close()`` (or after its
    KV or transaction closed) raises ``ClosedError`` or ``TxClosedError``.
    """

    __slots__ = ("_reader", "_owns", "_it", "_forward", "_key", "_value", "valid", "_tx", "_range")

    def __init__(self, reader: _Reader, owns: bool, key: bytes, for_prev: bool) -> None:
        self._reader = reader
        self._owns = owns
        self._tx: KVTX | None = None  # the KVTX it reads, kept alive while it is used
        self._key: bytes | None = None
        self._value: bytes | None = None
        self.valid = False
        self._range: _Range | None = None
        if reader.tx is not None:  # a transaction's cursor: what it reaches joins the read set
            self._range = _Range()
            self._range.place(key)
            reader.tx.ranges.append(self._range)
        self._start(key, reverse=for_prev, inclusive=True)

    def _start(self, key: bytes, reverse: bool, inclusive: bool) -> None:
        self._it = self._reader.items(key, reverse, inclusive)
        self._forward = not reverse
        self._step()

    def _step(self) -> None:
        nxt = next(self._it, None)
        if nxt is None:
            self.valid = False
            self._key = self._value = None
        else:
            self._key, self._value = nxt
            self.valid = True
        if self._range is not None:
            self._range.reach(self._key, self._forward)

    @property
    def key(self) -> bytes:
        """The key under the cursor; ``InvalidCursorError`` when it is not on one."""
        self._reader.check()
        if self._key is None:
            raise InvalidCursorError("the cursor is not on a key")
        return self._key

    @property
    def value(self) -> bytes:
        """The value under the cursor; ``InvalidCursorError`` when it is not on one."""
        self._reader.check()
        if self._value is None:
            raise InvalidCursorError("the cursor is not on a key")
        return self._value

    def next(self) -> None:
        """Move to the next key; past the last one the cursor becomes invalid."""
        self._reader.check()
        if self._key is None:
            raise InvalidCursorError("cannot move a cursor that is not on a key")
        if self._forward:
            self._step()
        else:
            self._start(self._key, reverse=False, inclusive=False)

    def prev(self) -> None:
        """Move to the previous key; before the first one the cursor becomes invalid."""
        self._reader.check()
        if self._key is None:
            raise InvalidCursorError("cannot move a cursor that is not on a key")
        if not self._forward:
            self._step()
        else:
            self._start(self._key, reverse=True, inclusive=False)

    def __iter__(self) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) from the current position forward, moving the cursor."""
        while True:
            self._reader.check()
            if self._key is None or self._value is None:
                return
            yield self._key, self._value
            self.next()

    def close(self) -> None:
        """Release the cursor's snapshot and files; idempotent."""
        if self._owns:
            self._reader.release()
        self._reader_closed()

    def _reader_closed(self) -> None:
        self.valid = False
        self._key = self._value = None
        self._it = iter(())

    def __enter__(self) -> Cursor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            if self._owns:
                self._reader.release()
        except Exception:  # noqa: BLE001 - a finalizer must not raise; the KV may be gone
            pass


class _Writer:
    """One request in the write queue: a commit, a one-operation delete, a memtable swap, or close.

    The writer at the head of the queue is the *leader*: it takes the
    commits queued behind it as one group, checks each for conflicts
    against everything committed after its snapshot and against the members
    ahead of it, gives each a sequence number, writes the group to the WAL
    with one append and at most one fsync, applies it to the memtable and
    publishes it; then it wakes the members with their outcome and hands
    the lead to the next writer (LevelDB's write group).
    """

    __slots__ = ("kind", "writes", "sync", "tx", "snapshot", "cond", "done", "error", "existed", "frozen", "reader",
                 "taken")

    def __init__(self, kind: int, writes: list[tuple[bytes, bytes | None]], sync: bool,
                 tx: _TxState | None, snapshot: int) -> None:
        self.kind = kind
        self.writes = writes
        self.sync = sync
        self.tx = tx
        self.snapshot = snapshot
        self.cond: threading.Condition | None = None  # made when the writer has to wait
        self.done = False
        self.error: BaseException | None = None
        self.existed = True
        self.frozen: Memtable | None = None  # the memtable a _ROTATE request froze
        self.reader: _Reader | None = None  # a committing transaction's reader, let go once published
        self.taken = False  # a leader took it into its group: the leader answers it and takes it off


_COMMIT, _DELETE, _ROTATE, _BARRIER = range(4)
#: Bytes of keys and values one commit group takes at most (a bigger single commit goes alone).
_GROUP_BYTES = 1 << 20
#: Immutable memtables waiting for the background flush before commits wait.
_MAX_IMMUTABLE = 2


def _yielding(entries: Iterator[T], every: int = 256) -> Iterator[T]:
    """``entries``, handing the interpreter lock to any thread waiting for it every ``every`` items.

    A background flush or merge is CPU-bound Python: without this it keeps
    the lock for the whole switch interval (5 ms) each time a committing or
    reading thread lets it go for a system call, so foreground work would
    crawl while tables are written.
    """
    sleep = time.sleep
    while True:
        chunk = list(itertools.islice(entries, every))
        if not chunk:
            return
        yield from chunk
        sleep(0)


def _copy_error(exc: BaseException) -> BaseException:
    """A fresh exception like ``exc`` for another thread to raise (one object raised twice shares a traceback)."""
    try:
        copy = type(exc)(*exc.args)
    except Exception:  # noqa: BLE001 - an exception type with another constructor: raise it as it is
        return exc
    copy.__cause__ = exc.__cause__
    return copy


class KV:
    """An open database directory.  Create one with ``KV.open(path)``.

    A KV may be shared by any number of threads: reads outside a
    transaction each see one snapshot taken when they start; commits from
    many threads are grouped (one WAL write and one fsync per group); with
    ``Config.background`` flushes and merges run in two background threads
    and never block readers.  Use it as a context manager, or call
    ``close()``.

    Locks, taken in this order and never the other way: the write queue's
    (``_wq_lock``: who leads), ``_merge_lock`` (one merge at a time),
    ``_meta_lock`` (the meta, file numbers, the table list and logs change
    under it), ``_lock`` (the current view, sequence, snapshots and
    immutable memtables; held only for moments, never across I/O), then a
    memtable's own lock.
    """

    _lock: threading.RLock

    def __init__(self) -> None:
        raise TypeError("use KV.open(path, config) to open a database")

    # ------------------------------------------------------------------ open and recovery

    @classmethod
    def open(cls, path: str | os.PathLike[str], config: Config | None = None, *,
             fs: FileSystem | None = None) -> KV:
        """Open (or create) the database in directory ``path``, recovering from any crash.

        Raises ``FileNotFoundError`` when the database is missing and
        ``create_if_missing`` is False (or ``read_only`` is True),
        ``LockedError`` when another KV holds it, ``CorruptionError`` when
        its files are damaged before their durable point (never opening it as
        empty), ``UnsupportedFormatError`` for a newer format.
        """
        if config is None:
            config = Config()
        if not isinstance(config, Config):
            raise TypeError(f"config must be a kvstore.Config, not {type(config).__name__}")
        kv = object.__new__(cls)
        kv._setup(os.fspath(path), config, OSFileSystem() if fs is None else fs)
        try:
            kv._recover()
        except BaseException:
            kv._abandon()
            raise
        kv._start_background()
        return kv

    def _setup(self, dirpath: str, config: Config, fs: FileSystem) -> None:
        self._dir = dirpath
        self._config = config
        self._fs = fs
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)  # background work and stalled commits wait on it
        self._meta_lock = threading.Lock()
        self._merge_lock = threading.Lock()
        self._wq_lock = threading.Lock()
        self._writers: collections.deque[_Writer] = collections.deque()
        self._closed = False
        self._closing = False
        self._closed_event = threading.Event()
        self._failed: str | None = None
        self._read_only = config.read_only
        self._file_lock: FileLock | None = None
        self._metastore = MetaStore(fs, dirpath)
        self._meta = Meta(0, 1, 0, 0, ())
        self._cache = BlockCache(config.cache_size)
        self._mem = Memtable()
        self._imms: list[tuple[Memtable, int]] = []  # (memtable, the log that follows it), newest first
        self._tables: list[_Table] = []
        self._view = _View((self._mem,), ())
        self._wal: WalWriter | None = None
        self._logs: list[int] = []  # live log numbers, ascending
        self._seq = 0
        self._next_file = 1
        self._snapshots: dict[int, int] = {}
        self._snapshot_times: dict[int, float] = {}
        self._oldest_snapshot: int | None = None
        self._tx_snapshots: dict[int, int] = {}  # snapshots of live transactions (they may conflict)
        self._recent_keys: dict[bytes, int] = {}  # key -> last sequence that wrote it, while a tx may conflict
        self._recent_log: collections.deque[tuple[int, list[bytes]]] = collections.deque()  # (seq, sorted keys)
        self._doomed: list[tuple[str, int, int]] = []  # (file name, number, meta version that dropped it)
        self._doomed_tables: dict[int, _Table] = {}
        self._threads: list[threading.Thread] = []
        self._stopping = False
        self._merge_wanted = False
        self._collect_wanted = False
        self._flushes = 0
        self._merges = 0
        self._write_stalls = 0
        self._stall_seconds = 0.0
        self._bytes_written = 0
        self._user_bytes = 0
        self._recovery_notes: list[str] = []
        self._wal_bytes_replayed = 0

    def _path(self, name: str) -> str:
        return os.path.join(self._dir, name)

    def _recover(self) -> None:
        fs, config = self._fs, self._config
        created_dir = False
        if not fs.isdir(self._dir):
            if fs.exists(self._dir):
                raise NotADirectoryError(f"{self._dir} is not a directory")
            if config.read_only or not config.create_if_missing:
                raise FileNotFoundError(f"no database at {self._dir}")
            fs.mkdir(self._dir)
            created_dir = True
        lock_path = self._path(LOCK_NAME)
        lock_existed = fs.exists(lock_path)
        if not config.read_only:
            self._file_lock = fs.lock(lock_path)
        elif fs.exists(lock_path):
            self._file_lock = fs.lock(lock_path, shared=True)
        names = fs.listdir(self._dir)
        tables: set[int] = set()
        logs: set[int] = set()
        for name in names:
            m = _own_file(name)
            if m:
                (tables if m.group(2) == "sst" else logs).add(int(m.group(1)))
        meta = self._metastore.load()
        if meta is None:
            if tables or logs:
                raise CorruptionError(self._dir, -1, "table or log files but no meta slot: refusing to open as empty")
            if config.read_only or not config.create_if_missing:
                if not lock_existed and not config.read_only:
                    fs.unlink(lock_path)  # leave the directory as it was found
                raise FileNotFoundError(f"no database at {self._dir}")
            self._create(created_dir, names)
            return
        if max(meta.version, meta.next_file, meta.log_number, meta.last_sequence, *meta.tables) > record.MAX_COUNTER:
            assert self._metastore.newest is not None
            raise CorruptionError(self._metastore.path(self._metastore.newest), record.FILE_HEADER.size,
                                  f"meta holds a counter past {record.MAX_COUNTER}: counting on would overflow")
        self._meta = meta
        self._seq = meta.last_sequence
        self._next_file = max([meta.next_file, *(n + 1 for n in tables | logs)])
        for number in meta.tables:
            if number not in tables:
                raise CorruptionError(self._path(table_name(number)), -1, "table named by the meta is missing")
        for number in meta.tables:
            self._tables.append(_Table(TableReader(fs, self._path(table_name(number)), number, self._cache)))
        self._replay(sorted(n for n in logs if n >= meta.log_number))
        self._view = _View((self._mem,), tuple(self._tables))
        if not config.read_only:
            self._finish_recovery(names, tables, logs)

    def _create(self, created_dir: bool, names: list[str]) -> None:
        """Write the first meta slot and log of a new database."""
        for name in names:
            if name in (f"{META_NAMES[0]}.tmp", f"{META_NAMES[1]}.tmp"):
                self._fs.unlink(self._path(name))
        if created_dir:
            parent = os.path.dirname(os.path.abspath(self._dir))
            self._fs.sync_dir(parent)
        meta = Meta(1, 2, 1, 0, ())
        self._metastore.write(meta)
        self._meta = meta
        self._next_file = 2
        self._wal = WalWriter.create(self._fs, self._dir, self._path(log_name(1)), 1)
        self._logs = [1]

    def _replay(self, logs: list[int]) -> None:
        """Apply every commit of the live logs to the memtable, in order."""
        strict = self._config.recovery == "strict"
        self._replayed: dict[int, tuple[int, bool]] = {}
        for i, number in enumerate(logs):
            path = self._path(log_name(number))
            last = i == len(logs) - 1
            result = replay_log(self._fs, path, number, last=last, strict=strict)
            self._wal_bytes_replayed += result.valid_end
            for seq, writes in result.commits:
                if seq != self._seq + 1 and seq > self._meta.last_sequence:
                    # every commit takes the next sequence: a gap is a lost commit, not a crash
                    raise CorruptionError(path, -1, f"sequence {seq} follows {self._seq}: a commit is missing")
                if seq <= self._seq:
                    if seq <= self._meta.last_sequence:
                        continue  # already in a table
                    raise CorruptionError(path, -1, f"sequence {seq} does not follow {self._seq}")
                for key, value in writes:
                    self._mem.put(key, seq, value)
                self._seq = seq
            self._replayed[number] = (result.valid_end, result.header_ok)
            self._logs.append(number)
            if result.damage is not None:
                offset, reason = result.damage
                if last and not result.salvaged:
                    note = f"{path}: torn tail at offset {offset} ({reason}); {result.size - offset} bytes dropped"
                    log.info("%s", note)
                else:
                    dropped = logs[i + 1 :]
                    note = (f"{path}: salvage kept the valid prefix up to offset {offset} ({reason}); "
                            f"dropped {result.size - offset} bytes and later logs {dropped}")
                    log.warning("%s", note)
                self._recovery_notes.append(note)
                if not last:
                    self._salvage_dropped = logs[i + 1 :]
                    break

    def _finish_recovery(self, names: list[str], tables: set[int], logs: set[int]) -> None:
        """Writable open: cut the torn tail, delete orphans, keep appending to the last log."""
        fs = self._fs
        for number in getattr(self, "_salvage_dropped", []):
            fs.unlink(self._path(log_name(number)))
        meta = self._meta
        if self._next_file > meta.next_file:
            # numbers seen on disk (orphans included) are never handed out again
            self._write_meta(attrs.evolve(meta, version=meta.version + 1, next_file=self._next_file))
            meta = self._meta
        named = self._metastore.named_tables()
        min_log = self._metastore.min_log_number()
        for name in names:
            m = _own_file(name)
            orphan_table = m is not None and m.group(2) == "sst" and int(m.group(1)) not in named
            orphan_log = m is not None and m.group(2) == "log" and int(m.group(1)) < min_log
            own_temp = name in (f"{META_NAMES[0]}.tmp", f"{META_NAMES[1]}.tmp")  # other *.tmp are not ours
            if own_temp and not fs.exists(self._path(name)):
                continue  # the meta write above already renamed it into place
            if own_temp or orphan_table or orphan_log:
                fs.unlink(self._path(name))
        # files the other valid slot still names go one meta write later
        for number in tables & named:
            if number not in meta.tables:
                self._doomed.append((table_name(number), number, meta.version))
        for number in logs:
            if min_log <= number < meta.log_number:
                self._doomed.append((log_name(number), number, meta.version))
        if self._logs:
            number = self._logs[-1]
            valid_end, header_ok = self._replayed[number]
            self._wal = WalWriter.reopen(fs, self._path(log_name(number)), number, valid_end, header_ok)
        else:
            number = self._new_number()
            self._wal = WalWriter.create(fs, self._dir, self._path(log_name(number)), number)
            self._logs = [number]

    def _abandon(self) -> None:
        """Give back what a failed open took."""
        self._closed = True
        if self._wal is not None:
            self._wal.close()
        for t in self._tables:
            t.reader.close()
        if self._file_lock is not None:
            self._file_lock.release()


    # ------------------------------------------------------------------ checks

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("the KV is closed")

    def _check_writable(self, queued: bool = False) -> None:
        """Raise unless writes are accepted; ``queued`` requests were accepted before ``close()`` began."""
        if self._closed or (self._closing and not queued):
            raise ClosedError("the KV is closed")
        if self._read_only:
            raise ReadOnlyError("the KV was opened read-only")
        if self._failed is not None:
            raise FailedError(errno.EIO, f"the KV stopped after an error ({self._failed}); reopen it")

    def _key(self, key: object) -> bytes:
        key = _as_bytes(key, "key")
        if len(key) > self._config.max_key_size:
            raise KeyOrValueTooLargeError(f"key of {len(key)} bytes, max_key_size is {self._config.max_key_size}")
        return key

    def _value(self, value: object) -> bytes:
        value = _as_bytes(value, "value")
        if len(value) > self._config.max_value_size:
            raise KeyOrValueTooLargeError(
                f"value of {len(value)} bytes, max_value_size is {self._config.max_value_size}")
        return value

    # ------------------------------------------------------------------ reads

    def get(self, key: Bytes) -> bytes | None:
        """The value of ``key``, or None when it is absent or deleted.

        Cost: a dict lookup per memtable, then per table a bloom probe and,
        when it passes, an index bisect and one block (usually cached).
        """
        key = _as_bytes(key, "key")
        self._check_open()
        lock = self._lock
        with lock:
            view = self._view
            view.refs += 1
            snapshot = self._seq
        try:
            return self._get_in(view, key, snapshot)
        except (OSError, ValueError, CorruptionError):
            if self._closing:  # closed by another thread while this read was under way
                raise ClosedError("the KV is closed") from None
            raise
        finally:
            with lock:
                collect = self._unref_view(view)
            if collect:
                self._collect_soon()

    def _get_in(self, view: _View, key: bytes, snapshot: int) -> bytes | None:
        for mem in view.mems:
            found = mem.get(key, snapshot)
            if found is not None:
                return found[1]
        readers = view.readers
        if readers:
            h = record.key_hash(key)
            for reader in readers:
                found = reader.get(key, snapshot, h)
                if found is not None:
                    return found[1]
        return None

    def seek(self, key: Bytes = b"") -> Cursor:
        """A ``Cursor`` on the first key ``>= key`` (invalid when there is none), with its own snapshot."""
        key = _as_bytes(key, "key")
        self._check_open()
        return Cursor(_Reader(self, None), True, key, for_prev=False)

    def seek_for_prev(self, key: Bytes) -> Cursor:
        """A ``Cursor`` on the last key ``<= key`` (invalid when there is none), with its own snapshot."""
        key = _as_bytes(key, "key")
        self._check_open()
        return Cursor(_Reader(self, None), True, key, for_prev=True)

    def scan(self, start: Bytes | None = None, end: Bytes | None = None, *, prefix: Bytes | None = None,
             reverse: bool = False) -> Iterator[tuple[bytes, bytes]]:
        """Iterate ``(key, value)`` over ``[start, end)`` intersected with ``prefix``, in key order
        (descending with ``reverse``), from a snapshot taken now.  Close the iterator (or exhaust it)
        to release the snapshot early."""
        lo, hi = _bounds(start, end, prefix)
        self._check_open()
        return _Scan(_Reader(self, None), True, lo, hi, reverse)

    # ------------------------------------------------------------------ writes

    def set(self, key: Bytes, value: Bytes) -> None:
        """Set ``key`` to ``value`` in a one-operation transaction (durable per ``Config.sync``)."""
        key = self._key(key)
        value = self._value(value)
        self._write(_COMMIT, [(key, value)], self._config.sync)

    def delete(self, key: Bytes) -> bool:
        """Delete ``key``; True when it existed.  Deleting an absent key writes nothing.  The read and
        the write happen together under the commit order, so this never raises ``ConflictError``."""
        key = self._key(key)
        return self._write(_DELETE, [(key, None)], self._config.sync).existed

    def new_tx(self) -> KVTX:
        """A new transaction reading the snapshot of now."""
        self._check_open()
        return KVTX(self)

    def transact(self, fn: Callable[[KVTX], T], *, attempts: int = 10) -> T:
        """Run ``fn(tx)`` in a new transaction and commit it, again in a fresh one on ``ConflictError``,
        at most ``attempts`` times in all; returns ``fn``'s result."""
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        for attempt in range(attempts):
            tx = self.new_tx()
            try:
                result = fn(tx)
                if not tx._closed:
                    tx.commit()
                return result
            except ConflictError:
                if attempt == attempts - 1:
                    raise
            finally:
                tx.abort()
        raise AssertionError("unreachable")

    def _write(self, kind: int, writes: list[tuple[bytes, bytes | None]], sync: bool,
               reader: _Reader | None = None) -> _Writer:
        """Queue one request and wait until a leader (this thread or another) has carried it out."""
        with self._wq_lock:
            self._check_writable()
            if reader is None:
                w = _Writer(kind, writes, sync, None, 0)
            else:
                w = _Writer(kind, writes, sync, reader.tx, reader.snapshot)
                w.reader = reader
            writers = self._writers
            if not writers and not sync and kind == _COMMIT:
                # nobody leads and nothing waits for an fsync: carry it out holding the queue's lock (a
                # writer arriving meanwhile waits for the lock instead of for its turn)
                self._carry_out([w])
                group = None
            else:
                writers.append(w)
                if len(writers) > 1:
                    self._wait_turn(w)
                group = None if w.done else self._take_group(w)
        if group is not None:
            self._lead(group)
        if w.error is not None:
            raise w.error
        return w

    def _take_group(self, head: _Writer) -> list[_Writer]:
        """The requests the leader ``head`` carries out together (under ``_wq_lock``): the commits queued
        behind it, up to ``_GROUP_BYTES`` of keys and values; any other request goes alone."""
        writers = self._writers
        if len(writers) == 1 or head.kind > _DELETE:
            return [head]
        group = [head]
        size = sum(len(k) + len(v or b"") for k, v in head.writes)
        for w in itertools.islice(writers, 1, None):
            if w.kind > _DELETE or size > _GROUP_BYTES:
                break
            size += sum(len(k) + len(v or b"") for k, v in w.writes)
            w.taken = True
            group.append(w)
        return group

    def _lead(self, group: list[_Writer]) -> None:
        """Carry out ``group``, at the head of the write queue (this thread's request first), then
        answer its members and wake the next head."""
        try:
            self._carry_out(group)
        finally:
            with self._wq_lock:
                popleft = self._writers.popleft
                for w in group:
                    popped = popleft()
                    assert popped is w
                    w.done = True
                    if w.cond is not None:
                        w.cond.notify()
                if self._writers:
                    self._wake_head()

    def _carry_out(self, group: list[_Writer]) -> None:
        """Do what ``group`` asks; an error becomes every unanswered member's outcome."""
        head = group[0]
        try:
            self._check_writable(queued=True)
            if head.kind == _ROTATE:
                head.frozen = self._make_room()
                if head.frozen is None and self._imms:  # nothing new: wait for what is already frozen
                    head.frozen = self._imms[0][0]
            elif head.kind == _COMMIT or head.kind == _DELETE:
                self._commit_group(group)
        except BaseException as exc:  # noqa: BLE001 - every member not yet answered shares the outcome
            if isinstance(exc, OSError) and not isinstance(exc, FailedError):
                exc = self._fail(exc, "writing the WAL")
            for w in group:
                if not w.done and w.error is None:
                    if w is head:
                        w.error = exc
                    elif self._failed is not None and not isinstance(exc, FailedError):
                        w.error = FailedError(errno.EIO, f"the KV stopped after an error ({self._failed})")
                    else:
                        w.error = _copy_error(exc)

    def _wait_turn(self, w: _Writer) -> None:
        """Wait (under ``_wq_lock``) until ``w`` is answered or at the head of the queue.  Interrupted
        (``KeyboardInterrupt`` in the wait), it leaves the queue, so the writers behind it go on."""
        try:
            while not w.done and self._writers[0] is not w:
                if w.cond is None:
                    w.cond = threading.Condition(self._wq_lock)
                w.cond.wait()
        except BaseException:
            if not w.done and not w.taken:
                if self._writers and self._writers[0] is w:
                    self._writers.popleft()
                    self._wake_head()
                else:
                    self._writers.remove(w)
            raise

    def _wake_head(self) -> None:
        """Wake the writer now at the head of the queue (under ``_wq_lock``)."""
        if self._writers:
            head = self._writers[0]
            if head.cond is not None:
                head.cond.notify()

    def _commit_group(self, group: list[_Writer]) -> None:
        """Check, number, log, apply and publish one group; the lead is held, so nothing else commits."""
        accepted: list[tuple[int, list[tuple[bytes, bytes | None]]]] = []
        members: list[_Writer] = []
        ahead: dict[bytes, bytes | None] = {}  # what the accepted members ahead wrote
        seq = self._seq
        last = group[-1]
        for w in group:
            if not w.writes:
                continue  # a transaction that wrote nothing: no conflict, no sequence (it may sync)
            if w.kind == _DELETE:
                key = w.writes[0][0]
                if key in ahead:
                    w.existed = ahead[key] is not None
                else:
                    w.existed = self._exists(key)
                if not w.existed:
                    continue  # deleting an absent key writes nothing
            elif w.tx is not None:
                clash = self._conflict(w.tx, w.snapshot, ahead)
                if clash is not None:
                    w.error = ConflictError(f"a transaction that committed after this one's snapshot wrote "
                                            f"{clash!r}, which this one read")
                    continue
            seq += 1
            accepted.append((seq, w.writes))
            members.append(w)
            if w is not last:
                ahead.update(w.writes)
        wal = self._wal
        assert wal is not None
        if not accepted:
            if any(w.sync for w in group if w.error is None):  # a sync asked for: all before it durable
                try:
                    wal.sync()
                except OSError as exc:
                    raise self._fail(exc, "syncing the WAL") from exc
            return
        before = wal.size
        try:
            wal.append_many(accepted, any(w.sync for w in members))
        except OSError as exc:
            raise self._fail(exc, "writing the WAL") from exc
        try:
            self._publish(accepted, members, seq, wal.size - before)
        except BaseException as exc:  # the frames are in the log: going on would reuse their sequences
            failed = self._fail(exc, "applying a commit")
            if not isinstance(exc, Exception):  # KeyboardInterrupt, SystemExit: stopped, and let through
                raise
            raise failed from exc
        for w in members:  # a committed transaction's snapshot keeps nothing alive from here on
            if w.reader is not None:
                w.reader.release()
        if self._mem.bytes >= self._config.memtable_size:
            self._make_room()

    def _publish(self, accepted: list[tuple[int, list[tuple[bytes, bytes | None]]]], members: list[_Writer],
                 seq: int, logged: int) -> None:
        """Apply a logged group to the memtable and make it visible at sequence ``seq``."""
        mem = self._mem
        user = mem.apply_many(accepted)
        with self._lock:
            self._bytes_written += logged
            self._user_bytes += user
            if self._tx_snapshots:  # a live transaction may conflict with these: remember what they wrote
                recent = self._recent_keys
                for number, writes in accepted:
                    keys = [k for k, _ in writes]
                    self._recent_log.append((number, keys))
                    for key in keys:
                        recent[key] = number
            if self._recent_log:
                self._forget_write_sets()
            self._seq = seq

    def _exists(self, key: bytes) -> bool:
        """Whether ``key`` has a value at the latest sequence (the caller leads the write queue)."""
        with self._lock:
            view = self._view
            view.refs += 1
        try:
            return self._get_in(view, key, self._seq) is not None
        finally:
            with self._lock:
                collect = self._unref_view(view)
            if collect:
                self._collect_soon()

    def _conflict(self, tx: _TxState, snapshot: int, ahead: dict[bytes, bytes | None]) -> bytes | None:
        """A key that ``tx`` read (by get, delete, or inside a covered range) and that a commit after its
        snapshot wrote, or that a member ahead in this group writes; None when there is none."""
        reads, ranges = tx.reads, [r for r in tx.ranges if r.active]
        if not reads and not ranges:
            return None
        recent = self._recent_keys
        if len(reads) <= len(recent):
            for key in reads:
                if recent.get(key, 0) > snapshot:
                    return key
        else:
            for key, seq in recent.items():
                if seq > snapshot and key in reads:
                    return key
        if ranges:
            for seq, keys in reversed(self._recent_log):
                if seq <= snapshot:
                    break
                for r in ranges:
                    found = r.first_in(keys)
                    if found is not None:
                        return found
        if ahead:
            for key in reads:
                if key in ahead:
                    return key
            if ranges:
                keys = sorted(ahead)
                for r in ranges:
                    found = r.first_in(keys)
                    if found is not None:
                        return found
        return None

    def _forget_write_sets(self) -> None:
        """Drop write sets no live transaction can conflict with (under ``_lock``)."""
        log_ = self._recent_log
        if not log_:
            return
        oldest = min(self._tx_snapshots) if self._tx_snapshots else None
        if oldest is None:
            log_.clear()
            self._recent_keys.clear()
            return
        recent = self._recent_keys
        while log_ and log_[0][0] <= oldest:
            seq, keys = log_.popleft()
            for key in keys:
                if recent.get(key) == seq:
                    del recent[key]

    def _fail(self, exc: BaseException, what: str) -> FailedError:
        """Stop accepting writes after an error on the durability path or in background work."""
        if isinstance(exc, FailedError):
            return exc  # already stopped, said and logged where it happened
        log.error("kvstore stopped after an error while %s: %s", what, exc)  # before anyone can see it stopped
        if self._failed is None:
            self._failed = f"{what}: {exc}"
        with self._cond:
            self._cond.notify_all()
        code = getattr(exc, "errno", None) or errno.EIO
        detail = getattr(exc, "strerror", None) or exc
        return FailedError(code, f"error while {what}: {detail}")

    # ------------------------------------------------------------------ memtable swap, flush and merge

    def flush(self) -> None:
        """Write the memtable to a new table now; returns once the table is in the meta."""
        frozen = self._write(_ROTATE, [], False).frozen
        if frozen is not None:
            self._wait_flushed(frozen)

    def _wait_flushed(self, frozen: Memtable) -> None:
        """Wait until the background flush has written ``frozen`` (and every older one)."""
        with self._cond:
            while any(m is frozen for m, _ in self._imms) and self._failed is None and not self._closed:
                self._cond.wait()
        if self._failed is not None:
            raise FailedError(errno.EIO, f"the KV stopped after an error ({self._failed}); reopen it")

    def compact(self, *, full: bool = False) -> None:
        """Merge tables until the growth-factor policy holds; ``full=True`` flushes the memtable and merges
        every table into one (dropping deletes and versions no snapshot sees)."""
        self._check_writable()
        if full:
            self.flush()
        with self._merge_lock:
            self._check_writable()
            try:
                if full:
                    tables = list(self._tables)
                    if len(tables) > 1 or (tables and (tables[0].reader.deletes
                                                       or self._has_old_versions(tables[0]))):
                        self._merge(tables)
                else:
                    self._compact_by_policy()
            except OSError as exc:
                raise self._fail(exc, "merging tables") from exc

    def _has_old_versions(self, table: _Table) -> bool:
        return any(a == b for a, b in itertools.pairwise(k for k, _, _ in table.reader.entries()))

    def _new_number(self, reserve: int = 1) -> int:
        """Hand out the next file number (under ``_meta_lock``), first writing a meta whose ``next_file``
        covers it (and ``reserve - 1`` more) when the durable one does not: a crash that loses a new file
        before its directory entry is durable must not let a later open hand its number out again."""
        number = self._next_file
        if number >= self._meta.next_file:
            meta = self._meta
            self._write_meta(attrs.evolve(meta, version=meta.version + 1, next_file=number + reserve))
        self._next_file += 1
        return number

    def _make_room(self) -> Memtable | None:
        """Swap the memtable for a fresh one and a fresh log (the caller leads the write queue), then
        flush it inline, or leave it to the background flush, first waiting while that one is behind.
        Returns the memtable frozen, None when it was empty."""
        if not len(self._mem):
            return None
        background = self._config.background
        if background and len(self._imms) >= _MAX_IMMUTABLE:
            start = time.monotonic()
            with self._cond:
                self._write_stalls += 1
                while len(self._imms) >= _MAX_IMMUTABLE and self._failed is None:
                    self._cond.wait()
                self._stall_seconds += time.monotonic() - start
            if self._failed is not None:
                raise FailedError(errno.EIO, f"the KV stopped after an error ({self._failed}); reopen it")
        wal = self._wal
        assert wal is not None
        try:
            with self._meta_lock:
                wal.sync()  # the old log is durable whole before a newer one exists
                new_log = self._new_number(reserve=2)  # the log and the table of its flush
                new_wal = WalWriter.create(self._fs, self._dir, self._path(log_name(new_log)), new_log)
                with self._lock:
                    self._bytes_written += new_wal.size
                    imm = self._mem
                    self._mem = Memtable()
                    self._imms.insert(0, (imm, new_log))
                    self._wal = new_wal
                    self._logs.append(new_log)
                    self._install_view()
                    self._cond.notify_all()
                wal.close()
        except OSError as exc:
            raise self._fail(exc, "starting a new log") from exc
        if not background:
            while self._imms:
                self._flush_oldest()
            with self._merge_lock:
                try:
                    self._compact_by_policy()
                except OSError as exc:
                    raise self._fail(exc, "merging tables") from exc
        return imm

    def _flush_oldest(self) -> None:
        """Write the oldest immutable memtable to a table and swap it in through the meta."""
        imm, next_log = self._imms[-1]
        try:
            with self._meta_lock:
                number = self._new_number()
                bottom = not self._tables
            table = self._write_table(number, [imm.entries()], bottom)
            with self._meta_lock:
                tables = ([table] if table is not None else []) + self._tables
                meta = self._meta
                new_meta = attrs.evolve(meta, version=meta.version + 1, next_file=self._next_file,
                                        log_number=next_log, last_sequence=max(meta.last_sequence, imm.max_seq),
                                        tables=tuple(t.reader.file_number for t in tables))
                self._write_meta(new_meta)
                for number in [n for n in self._logs if n < next_log]:
                    self._logs.remove(number)
                    self._doomed.append((log_name(number), number, new_meta.version))
                with self._lock:
                    self._imms.pop()
                    self._tables = tables
                    self._install_view()
                    self._flushes += 1
                    self._merge_wanted = True
                    self._cond.notify_all()
                self._collect()
        except OSError as exc:
            raise self._fail(exc, "flushing the memtable") from exc

    def _write_table(self, number: int, sources: list[Iterator[tuple[bytes, int, bytes | None]]],
                     bottom: bool) -> _Table | None:
        """Write the merge of ``sources`` as table ``number``, fsynced with its directory; None when empty."""
        path = self._path(table_name(number))
        fs = self._fs
        with self._lock:
            snapshots = sorted(self._snapshots)
        file = fs.open(path, create=True)
        try:
            writer = TableWriter(file, number, self._config.block_size, self._config.bloom_bits_per_key)
            entries = compact_entries(sources, snapshots, bottom)
            if threading.current_thread() in self._threads:
                entries = _yielding(entries)
            writer.add_all(entries)
            if writer.entries == 0:
                file.close()
                fs.unlink(path)
                return None
            info = writer.finish()
        finally:
            file.close()
        fs.sync_dir(self._dir)
        with self._lock:
            self._bytes_written += info.size
        return _Table(TableReader(fs, path, number, self._cache))

    def _pick_run(self) -> list[_Table] | None:
        """The first run of tables (newest first) that the growth-factor rule merges, or None."""
        tables = list(self._tables)
        sizes = [t.reader.size for t in tables]
        factor = self._config.growth_factor - 1
        for i in range(len(sizes) - 1):
            acc = sizes[i]
            j = i + 1
            while j < len(sizes) and sizes[j] <= factor * acc:
                acc += sizes[j]
                j += 1
            if j - i >= 2:
                return tables[i:j]
        return None

    def _compact_by_policy(self) -> None:
        """Merge runs until the policy holds (under ``_merge_lock``)."""
        while not self._stopping_merges():
            group = self._pick_run()
            if group is None:
                return
            self._merge(group)

    def _stopping_merges(self) -> bool:
        return self._failed is not None or (self._stopping and threading.current_thread() in self._threads)

    def _merge(self, group: list[_Table]) -> None:
        """Merge adjacent tables ``group`` (newest first) into one and swap it in through the meta (under
        ``_merge_lock``; flushes may add newer tables meanwhile, nothing else changes the list)."""
        with self._meta_lock:
            number = self._new_number()
            bottom = group[-1] is self._tables[-1]
        table = self._write_table(number, [t.reader.entries() for t in group], bottom)
        with self._meta_lock:
            current = self._tables
            i = next(k for k, t in enumerate(current) if t is group[0])
            assert current[i : i + len(group)] == group
            tables = current[:i] + ([table] if table is not None else []) + current[i + len(group) :]
            meta = self._meta
            new_meta = attrs.evolve(meta, version=meta.version + 1, next_file=self._next_file,
                                    tables=tuple(t.reader.file_number for t in tables))
            self._write_meta(new_meta)
            with self._lock:
                for t in group:
                    t.removed_in = new_meta.version
                    self._doomed_tables[t.reader.file_number] = t
                self._tables = tables
                self._install_view()
                self._merges += 1
            self._collect()

    def _write_meta(self, meta: Meta) -> None:
        self._metastore.write(meta)
        self._meta = meta
        with self._lock:
            self._bytes_written += record.FILE_HEADER.size + record.META_BODY.size + 8 * len(meta.tables) + 4

    def _install_view(self) -> None:
        """Make the current memtables and tables the view new readers take (under ``_lock``)."""
        old = self._view
        self._view = _View((self._mem, *(m for m, _ in self._imms)), tuple(self._tables))
        if self._unref_view(old):
            self._collect_wanted = True

    def _unref_view(self, view: _View) -> bool:
        """Let go of one hold on ``view`` (under ``_lock``); True when a dropped table became free."""
        view.refs -= 1
        if view.refs:
            return False
        free = False
        for t in view.tables:
            t.refs -= 1
            if t.refs == 0 and t.removed_in is not None:
                free = True
        return free

    def _collect_soon(self) -> None:
        """A dropped table lost its last reader: have it deleted, by the background thread or right here
        when no flush or merge holds the meta (they collect when they finish).  Never raises: an error
        deleting it has already stopped the KV and is reported by the next write."""
        if self._threads:
            with self._cond:
                self._collect_wanted = True
                self._cond.notify_all()
            return
        if self._meta_lock.acquire(blocking=False):
            try:
                self._collect()
            except FailedError:
                pass  # recorded in _failed and logged by _fail
            finally:
                self._meta_lock.release()

    def _collect(self) -> None:
        """Unlink dropped files that neither valid meta slot names and no view holds (under
        ``_meta_lock``).  Never after a failure: what the meta on disk names is then unknown, so nothing
        is deleted until reopen."""
        if self._read_only or self._closed or self._failed is not None:
            return
        version = self._meta.version
        keep = []
        names = []
        for name, number, removed_in in self._doomed:
            if version > removed_in:
                names.append(name)
            else:
                keep.append((name, number, removed_in))
        self._doomed = keep
        tables = []
        with self._lock:
            self._collect_wanted = False
            for number, t in list(self._doomed_tables.items()):
                assert t.removed_in is not None
                if version > t.removed_in and t.refs == 0:
                    del self._doomed_tables[number]
                    tables.append(t)
        for t in tables:
            t.reader.close()
            self._cache.evict_file(t.reader.file_number)
            names.append(table_name(t.reader.file_number))
        for name in names:
            self._unlink(name)

    def _unlink(self, name: str) -> None:
        try:
            self._fs.unlink(self._path(name))
        except FileNotFoundError:
            pass  # already gone: the goal holds
        except OSError as exc:
            raise self._fail(exc, f"deleting {name}") from exc

    # ------------------------------------------------------------------ background threads

    def _start_background(self) -> None:
        if self._read_only or not self._config.background:
            return
        self._merge_wanted = True  # the policy may not hold after recovery
        for target, name in ((self._flusher, "flush"), (self._merger, "merge")):
            thread = threading.Thread(target=target, name=f"kvstore-{name} {self._dir}", daemon=True)
            self._threads.append(thread)
        for thread in self._threads:
            thread.start()

    def _flusher(self) -> None:
        """Background thread: flush immutable memtables, oldest first, and delete files readers let go."""
        try:
            while True:
                with self._cond:
                    while not (self._imms or self._collect_wanted or self._stopping or self._failed):
                        self._cond.wait()
                    if self._failed is not None or (self._stopping and not self._imms):
                        return
                    flush = bool(self._imms)
                if flush:
                    self._flush_oldest()
                else:
                    with self._meta_lock:
                        self._collect()
        except BaseException as exc:  # noqa: BLE001 - never swallowed: the KV stops and says why
            self._background_error(exc, "flushing the memtable")

    def _merger(self) -> None:
        """Background thread: merge tables by the growth-factor policy after each flush."""
        try:
            while True:
                with self._cond:
                    while not (self._merge_wanted or self._stopping or self._failed):
                        self._cond.wait()
                    if self._failed is not None or self._stopping:
                        return
                    self._merge_wanted = False
                with self._merge_lock:
                    self._compact_by_policy()
        except BaseException as exc:  # noqa: BLE001 - never swallowed: the KV stops and says why
            self._background_error(exc, "merging tables")

    def _background_error(self, exc: BaseException, what: str) -> None:
        if not isinstance(exc, FailedError):
            self._fail(exc, what)
        log.error("kvstore background work stopped: %s", self._failed)

    def _stop_background(self) -> None:
        """Let the flush thread write every immutable memtable and the merge thread finish its merge; join."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join()

    # ------------------------------------------------------------------ stats, check, close

    def stats(self) -> Stats:
        """Counters and the live tables (newest first); see ``Stats``."""
        self._check_open()
        disk = 0
        for name in self._fs.listdir(self._dir):
            try:
                if _own_file(name) or name in META_NAMES:
                    file = self._fs.open(self._path(name))
                    disk += file.size()
                    file.close()
            except FileNotFoundError:
                continue
        with self._lock:
            tables = tuple(
                TableStats(table_name(r.file_number), r.file_number, r.num_entries, r.deletes, r.size, r.smallest,
                           r.largest, r.min_seq, r.max_seq)
                for r in (t.reader for t in self._tables))
            mems = self._view.mems
            oldest = self._oldest_snapshot
            age = None if oldest is None else time.monotonic() - self._snapshot_times[oldest]
            return Stats(
                sequence=self._seq, tables=tables,
                memtable_bytes=sum(m.bytes for m in mems), memtable_entries=sum(m.num_entries for m in mems),
                immutable_memtables=len(self._imms),
                wal_bytes=self._wal.size if self._wal is not None else self._wal_bytes_replayed,
                live_snapshots=sum(self._snapshots.values()), oldest_snapshot=oldest, oldest_snapshot_age=age,
                flushes=self._flushes, merges=self._merges, bytes_written=self._bytes_written,
                user_bytes=self._user_bytes, disk_bytes=disk, cache_hits=self._cache.hits,
                cache_misses=self._cache.misses, recovery=tuple(self._recovery_notes), failed=self._failed,
                write_stalls=self._write_stalls, stall_seconds=self._stall_seconds,
                tracked_writes=sum(len(keys) for _, keys in self._recent_log))

    def check(self) -> list[str]:
        """Verify every checksum and order of every live table, the meta's references and the sequence
        order of tables; returns the problems found (empty when healthy).  Reads every byte of every
        table: cost proportional to the database's size."""
        self._check_open()
        problems: list[str] = []
        with self._exclusive(), self._meta_lock:  # no commit, flush or merge changes the files meanwhile
            pin = _Reader(self, None)  # keeps these tables' files until the check is done
            tables = list(self._tables)
            meta = self._meta
            problems.extend(self._check_metas_and_logs())
        try:
            for t in tables:
                try:  # the header, footer, index, bloom and properties, read again from disk
                    TableReader(self._fs, t.reader.path, t.reader.file_number, BlockCache(0)).close()
                except (CorruptionError, UnsupportedFormatError, FileNotFoundError) as exc:
                    problems.append(str(exc))
                problems.extend(t.reader.verify())
        finally:
            pin.release()
        for newer, older in itertools.pairwise(tables):
            if newer.reader.num_entries and older.reader.num_entries and newer.reader.min_seq <= older.reader.max_seq:
                problems.append(f"{table_name(newer.reader.file_number)}: sequences {newer.reader.min_seq}.. "
                                f"overlap older table {table_name(older.reader.file_number)} "
                                f"(..{older.reader.max_seq})")
        for t in tables:
            if t.reader.max_seq > meta.last_sequence:
                problems.append(f"{table_name(t.reader.file_number)}: sequence {t.reader.max_seq} is past the "
                                f"meta's last sequence {meta.last_sequence}")
        return problems

    def _check_metas_and_logs(self) -> list[str]:
        """Problems in the meta slots and the live logs, read again from disk (no commit runs meanwhile)."""
        problems: list[str] = []
        for slot in (0, 1):
            try:
                state = self._metastore.read_slot(slot)
            except UnsupportedFormatError as exc:
                problems.append(str(exc))
                continue
            if state.error is not None:
                problems.append(str(state.error))
        for i, number in enumerate(self._logs):
            path = self._path(log_name(number))
            last = i == len(self._logs) - 1
            try:
                result = replay_log(self._fs, path, number, last=last)
            except (CorruptionError, UnsupportedFormatError, FileNotFoundError) as exc:
                problems.append(str(exc))
                continue
            # a read-only KV leaves the torn tail it found in place; a writable one cut it at open
            if result.damage is not None and not (last and self._read_only):
                problems.append(f"{path} at offset {result.damage[0]}: {result.damage[1]}")
        return problems

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        """Lead the write queue for the block: no commit or memtable swap runs until it ends."""
        with self._wq_lock:
            if self._closing:
                raise ClosedError("the KV is closed")
            w = _Writer(_BARRIER, [], False, None, 0)
            self._writers.append(w)
            self._wait_turn(w)
            if w.done:  # answered by close(): it never led
                raise w.error if w.error is not None else ClosedError("the KV is closed")
        try:
            yield
        finally:
            with self._wq_lock:
                popped = self._writers.popleft()
                assert popped is w
                self._wake_head()

    def backup(self, dest: str | os.PathLike[str], *,
               progress: Callable[[int, int], None] | None = None) -> list[tuple[str, str]]:
        """Write a consistent copy of the database, as of one snapshot taken now, into directory ``dest``.

        ``dest`` must not exist or be an empty directory.  Each table is
        hard-linked into it under its own file number (copied when linking
        fails, e.g. across file systems); the memtables' entries up to the
        snapshot become one new table; a fresh meta naming them is written
        last, so an interrupted backup leaves a directory that refuses to open
        (``CorruptionError``), never a partial database (DESIGN.md, "Backup").
        The KV stays usable meanwhile, from any thread; commits after the
        snapshot are not in the copy.  ``progress(done, total)`` is called
        after each table.  Returns ``(file name, "linked" | "copied" |
        "written")`` for each table of the copy, newest first.  Raises
        ``FileExistsError`` when ``dest`` is not an empty directory and
        ``OSError`` from the file system; neither affects this KV.  Cost: a
        link (or a copy) per table, plus writing the memtable as a table.
        """
        self._check_open()
        fs = self._fs
        dirpath = os.fspath(dest)
        if fs.exists(dirpath) and (not fs.isdir(dirpath) or fs.listdir(dirpath)):
            raise FileExistsError(f"{dirpath} exists and is not an empty directory")
        reader = _Reader(self, None)
        try:
            view, snapshot = reader.view, reader.snapshot
            fs.mkdir(dirpath)
            fs.sync_dir(os.path.dirname(os.path.abspath(dirpath)))
            total = len(view.readers) + 1
            done: list[tuple[str, str]] = []
            numbers: list[int] = []
            for table in view.readers:  # immutable, and alive while the view is held
                assert table.max_seq <= snapshot, (table.path, table.max_seq, snapshot)
                name = table_name(table.file_number)
                numbers.append(table.file_number)
                try:
                    fs.link(table.path, os.path.join(dirpath, name))
                    done.append((name, "linked"))
                except OSError:  # another file system, no hard links, too many links: a copy surfaces real errors
                    self._copy_file(table.path, os.path.join(dirpath, name))
                    done.append((name, "copied"))
                if progress is not None:
                    progress(len(done), total)

            def visible(mem: Memtable) -> Iterator[tuple[bytes, int, bytes | None]]:
                for key, _ in mem.items(None, snapshot):
                    found = mem.get(key, snapshot)  # kept: the reader's snapshot holds it
                    assert found is not None
                    yield key, found[0], found[1]

            number = max((t.file_number for t in view.readers), default=0) + 1
            path = os.path.join(dirpath, table_name(number))
            file = fs.open(path, create=True)
            try:
                writer = TableWriter(file, number, self._config.block_size, self._config.bloom_bits_per_key)
                writer.add_all(compact_entries([visible(m) for m in view.mems], [], not view.readers))
                if writer.entries:
                    writer.finish()
                    done.insert(0, (table_name(number), "written"))
                    numbers.insert(0, number)
            finally:
                file.close()
            if not writer.entries:
                fs.unlink(path)
            if progress is not None:
                progress(total, total)
            fs.sync_dir(dirpath)  # every table's entry is durable before the meta names it
            MetaStore(fs, dirpath).write(Meta(1, number + 2, number + 1, snapshot, tuple(numbers)))
            return done
        finally:
            reader.release()

    def _copy_file(self, src: str, dst: str) -> None:
        """Copy file ``src`` to a new file ``dst`` and fsync it."""
        fs = self._fs
        source = fs.open(src)
        try:
            target = fs.open(dst, create=True)
            try:
                size = source.size()
                offset = 0
                while offset < size:
                    chunk = source.pread(min(1 << 20, size - offset), offset)
                    if not chunk:
                        raise OSError(f"{src} ended at {offset} of {size} bytes while it was copied")
                    target.append(chunk)
                    offset += len(chunk)
                target.fsync()
            finally:
                target.close()
        finally:
            source.close()

    def close(self) -> None:
        """Wait for commits in progress and background work, flush the memtable, release the lock;
        idempotent.  Every later call, and the next use of a cursor, scan or transaction opened on this
        KV, raises ``ClosedError``.  Raises ``FailedError`` when the final flush fails (the KV is closed
        anyway; reopening recovers from the WAL)."""
        with self._wq_lock:
            closing = self._closing
            self._closing = True  # new writes raise ClosedError from here on
            if not closing:
                w = _Writer(_BARRIER, [], False, None, 0)
                self._writers.append(w)
                self._wait_turn(w)
        if closing:  # closed, or another thread is closing it: return once that is done
            self._closed_event.wait()
            return
        try:  # this thread now leads the write queue, and nothing queues behind it
            self._stop_background()
            if not self._read_only and self._failed is None:
                try:
                    if len(self._mem) or self._imms:
                        self._make_room_on_close()
                    with self._merge_lock:
                        self._compact_by_policy()
                    with self._meta_lock:
                        if self._doomed or self._doomed_tables:
                            # one more meta write frees what the previous one dropped
                            meta = self._meta
                            self._write_meta(attrs.evolve(meta, version=meta.version + 1,
                                                          next_file=self._next_file))
                            with self._lock:
                                for t in self._doomed_tables.values():
                                    t.refs = 0  # readers still open fail with ClosedError from now on
                            self._collect()
                except FailedError:
                    raise
                except OSError as exc:
                    raise self._fail(exc, "closing") from exc
        finally:
            self._closed = True
            with self._cond:
                self._cond.notify_all()
            with self._meta_lock:
                if self._wal is not None:
                    self._wal.close()
                for t in self._tables:
                    t.reader.close()
                for t in self._doomed_tables.values():
                    t.reader.close()
                if self._file_lock is not None:
                    self._file_lock.release()
                    self._file_lock = None
            with self._wq_lock:
                self._writers.popleft()
                for waiting in self._writers:  # none can have queued, but never leave one hanging
                    waiting.error = ClosedError("the KV is closed")
                    waiting.done = True
                    if waiting.cond is not None:
                        waiting.cond.notify()
                self._writers.clear()
            self._closed_event.set()

    def _make_room_on_close(self) -> None:
        """Flush the memtable and any immutable one inline (the background threads have stopped)."""
        if len(self._mem):
            wal = self._wal
            assert wal is not None
            try:
                with self._meta_lock:
                    wal.sync()
                    # no new log: the flush's meta names a fresh number no file has (the next open
                    # creates that log), so every log there is can go
                    new_log = self._new_number(reserve=2)
                    with self._lock:
                        imm = self._mem
                        self._mem = Memtable()
                        self._imms.insert(0, (imm, new_log))
                        self._install_view()
            except OSError as exc:
                raise self._fail(exc, "closing") from exc
        while self._imms:
            self._flush_oldest()

    def __enter__(self) -> KV:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<KV {self._dir!r} {state} seq={self._seq}>"

    def _check(self) -> None:
        """Assert the invariants (O(n) in memtable size); for tests."""
        with self._meta_lock, self._lock:
            self._mem._check()
            assert self._view.tables == tuple(self._tables)
            assert self._view.mems == (self._mem, *(m for m, _ in self._imms))
            assert tuple(t.reader.file_number for t in self._tables) == self._meta.tables
            for newer, older in itertools.pairwise(self._tables):
                assert newer.reader.min_seq > older.reader.max_seq, (newer.reader.path, older.reader.path)
            oldest_mem = self._imms[-1][0] if self._imms else self._mem
            assert oldest_mem.min_seq == 0 or oldest_mem.min_seq > self._meta.last_sequence
            for t in self._tables:
                assert t.reader.max_seq <= self._meta.last_sequence
                assert t.reader.file_number < self._next_file
            assert self._meta.next_file <= self._next_file
            assert all(t.refs >= 1 for t in self._tables)
            assert self._oldest_snapshot == (min(self._snapshots) if self._snapshots else None)
            assert all(self._recent_keys[k] >= seq for seq, keys in self._recent_log for k in keys)


class KVTX:
    """A buffered transaction over one snapshot.  Create one with ``kv.new_tx()``.

    Reads see the database as of ``new_tx()`` plus this transaction's own
    writes; nothing is visible to others before ``commit()``, which applies
    every write under one sequence number or none.  A KVTX belongs to one
    thread at a time.  After ``commit()`` or ``abort()`` every call but
    ``abort()`` raises ``TxClosedError``.
    """

    def __init__(self, kv: KV) -> None:
        self._kv = kv
        self._state = _TxState()
        self._pending = _Pending()
        self._reader = _Reader(kv, self._pending, self._state)
        # a transaction dropped without commit or abort still lets its snapshot go
        self._finalizer = weakref.finalize(self, self._reader.release)

    @property
    def _closed(self) -> bool:
        return self._state.closed

    def _check(self) -> None:
        if self._closed:
            raise TxClosedError("the transaction is closed")
        if self._kv._closed:
            raise ClosedError("the KV is closed")

    def get(self, key: Bytes) -> bytes | None:
        """The value of ``key`` in this transaction's view, or None."""
        key = _as_bytes(key, "key")
        self._check()
        return self._reader.get(key)

    def set(self, key: Bytes, value: Bytes) -> None:
        """Buffer ``key = value``."""
        kv = self._kv
        config = kv._config
        if type(key) is not bytes or len(key) > config.max_key_size:  # the checks of KV._key, inline
            key = kv._key(key)
        if type(value) is not bytes or len(value) > config.max_value_size:
            value = kv._value(value)
        if self._state.closed or kv._closed:
            self._check()
        pending = self._pending
        if key not in pending.writes:
            pending._sorted = None
        pending.writes[key] = value

    def delete(self, key: Bytes) -> bool:
        """Buffer a delete of ``key``; True when the key exists in this transaction's view."""
        key = self._kv._key(key)
        self._check()
        existed = self._reader.get(key) is not None
        self._pending.put(key, None)
        return existed

    def seek(self, key: Bytes = b"") -> Cursor:
        """A ``Cursor`` on the first key ``>= key`` in this transaction's view."""
        key = _as_bytes(key, "key")
        self._check()
        cursor = Cursor(self._reader, False, key, for_prev=False)
        cursor._tx = self  # a dropped KVTX would release the snapshot under its cursor
        return cursor

    def seek_for_prev(self, key: Bytes) -> Cursor:
        """A ``Cursor`` on the last key ``<= key`` in this transaction's view."""
        key = _as_bytes(key, "key")
        self._check()
        cursor = Cursor(self._reader, False, key, for_prev=True)
        cursor._tx = self
        return cursor

    def scan(self, start: Bytes | None = None, end: Bytes | None = None, *, prefix: Bytes | None = None,
             reverse: bool = False) -> Iterator[tuple[bytes, bytes]]:
        """As ``KV.scan``, in this transaction's view (its own writes included)."""
        lo, hi = _bounds(start, end, prefix)
        self._check()
        scan = _Scan(self._reader, False, lo, hi, reverse)
        scan._tx = self
        return scan

    def commit(self, *, sync: bool | None = None) -> None:
        """Apply every write atomically under one sequence number; ``sync`` None takes ``Config.sync``.

        Raises ``ConflictError`` (nothing applied) when a transaction that
        committed after this one's snapshot wrote a key this one read or a
        key inside a range its scans and cursors covered (SPEC.md §6);
        ``FailedError`` on an I/O error (outcome unknown until reopen).  The
        transaction is closed afterwards in every case.
        """
        self._check()
        try:
            writes = self._pending.writes
            kv = self._kv
            durable = kv._config.sync if sync is None else bool(sync)
            if writes:
                entry = record.WAL_ENTRY.size
                size = record.COMMIT_HEADER.size + sum(entry + len(k) + len(v or b"") for k, v in writes.items())
                if size > record.MAX_RECORD_PAYLOAD:  # refused here, not in a group it would fail whole
                    raise KeyOrValueTooLargeError(f"transaction encodes to {size} bytes, the WAL limit is 4 GiB")
                kv._write(_COMMIT, sorted(writes.items()), durable, self._reader)
            elif durable and not kv._read_only:  # nothing to write, but every commit before it becomes durable
                kv._write(_COMMIT, [], True, self._reader)
        finally:
            self._close()

    def abort(self) -> None:
        """Drop every buffered write; does nothing on a closed transaction."""
        self._close()

    def _close(self) -> None:
        if not self._state.closed:
            self._state.closed = True
            self._finalizer()

    def __enter__(self) -> KVTX:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            if not self._closed:
                self.commit()
        else:
            self.abort()
