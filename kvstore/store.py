"""``KV``, the facade of one open database directory: its public calls and the wiring of the mechanisms
that carry them out.

A database directory holds ``meta0``/``meta1`` (which tables and logs are
live), numbered tables ``NNNNNN.sst``, numbered logs ``NNNNNN.log`` and a
``LOCK`` file (DESIGN.md, "Directory layout").  Read top-down, each call
names the mechanism it delegates to:

  - ``core.Core``: the fields every hot path reads (``KV`` is one), fail-stop, view pinning;
  - ``recovery``: opening a directory, replay, orphans, salvage;
  - ``snapshot``: point reads (``get_in``), readers, scans and cursors (``Reads``);
  - ``commit.CommitPipeline``: the write queue, group commit, the WAL write and publication;
  - ``isolation``: pending writes, read sets, write sets and the conflict check;
  - ``versions.VersionSet``: the meta, file numbers, the table list, deleting dropped files;
  - ``jobs.Jobs``: flushes and merges and their background threads;
  - ``transaction.KVTX``, ``backup``, ``check``.

Invariants (``KV._check``):
  - ``_view`` is the current memtables and ``VersionSet.tables``, newest first;
  - the memtable holds only sequences above the meta's ``last_sequence``;
  - and those of ``VersionSet``, ``Snapshots`` and ``WriteSets``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from time import perf_counter_ns
from types import TracebackType
from typing import TypeVar

from kvstore import record
from kvstore.backup import Progress, backup
from kvstore.check import check
from kvstore.collection import Collection
from kvstore.commit import COMMIT, DELETE, ROTATE, CommitPipeline
from kvstore.config import Config
from kvstore.core import Core, closed_error
from kvstore.cursor import Reads
from kvstore.errors import ConflictError, CorruptionError, FailedError
from kvstore.expiry import Clock, check_ttl, expires_at, remaining
from kvstore.filenames import META_NAMES, parse, table_name
from kvstore.fs import FileSystem, OSFileSystem
from kvstore.jobs import Jobs
from kvstore.keys import Bytes, as_bytes
from kvstore.keyspace import (
    COLLECTIONS_END,
    COLLECTIONS_START,
    DEFAULT,
    LEGACY,
    Space,
    check_name,
    prefix_of,
    split,
    successor,
)
from kvstore.metrics import SAMPLE, exposition, families
from kvstore.recovery import Recovery, abandon, recover
from kvstore.snapshot import Reader, get_in, merge_rows
from kvstore.spacestats import CollectionStats, collection_stats
from kvstore.stats import Stats, TableStats
from kvstore.trace import Trace, trace
from kvstore.transaction import KVTX
from kvstore.upgrade import upgrade
from kvstore.versions import VersionSet

__all__ = ["KV", "Stats", "TableStats"]

T = TypeVar("T")


class KV(Core, Reads):
    """An open database directory.  Create one with ``KV.open(path)``.

    A KV may be shared by any number of threads: reads outside a
    transaction each see one snapshot taken when they start; commits from
    many threads are grouped (one WAL write and one fsync per group); with
    ``Config.background`` flushes and merges run in two background threads
    and never block readers.  Use it as a context manager, or call
    ``close()``.
    """

    def __init__(self) -> None:
        raise TypeError("use KV.open(path, config) to open a database")

    @classmethod
    def open(cls, path: str | os.PathLike[str], config: Config | None = None, *,
             fs: FileSystem | None = None, clock: Callable[[], float] = time.time) -> KV:
        """Open (or create) the database in directory ``path``, recovering from any crash.

        Raises ``FileNotFoundError`` when the database is missing and
        ``create_if_missing`` is False (or ``read_only`` is True),
        ``NotADirectoryError`` when ``path`` is a file, ``LockedError`` when
        another KV holds it, ``CorruptionError`` when its files are damaged
        before their durable point (never opening it as empty),
        ``UnsupportedFormatError`` for a newer format, ``TypeError`` when
        ``config`` is not a ``Config``, and ``OSError`` from the file system.
        ``fs`` is the file system to work through (``OSFileSystem()``, or a
        ``SimFS`` in tests).  ``clock`` gives the time in seconds that keys
        set with a ``ttl`` expire by (``time.time``; tests pass one they
        move); the KV never lets it go back (a reading below the highest
        seen counts as that one); ``TypeError`` when it is not callable.  Cost: replaying the live logs (at most two
        memtables' worth) and opening every table's index and bloom filter.
        """
        if config is None:
            config = Config()
        if not isinstance(config, Config):
            raise TypeError(f"config must be a kvstore.Config, not {type(config).__name__}")
        kv = object.__new__(cls)
        kv._wire(os.fspath(path), config, OSFileSystem() if fs is None else fs, Clock(clock))
        try:
            kv._recovery = recover(kv, kv._versions)
            if kv._versions.meta.format < record.META_FORMAT_VERSION and not config.read_only:
                upgrade(kv, kv._versions, kv._jobs)
            if kv._versions.meta.format < record.META_FORMAT_VERSION:
                kv._versions.own_space = LEGACY
        except BaseException:
            abandon(kv, kv._versions)
            raise
        kv._metrics.first_seq = kv._seq  # commits count from here
        kv._jobs.start()
        return kv

    def _wire(self, dirpath: str, config: Config, fs: FileSystem, clock: Clock) -> None:
        self._init_core(dirpath, config, fs, clock)
        self._recovery = Recovery()
        self._versions = VersionSet(self)
        self._jobs = Jobs(self, self._versions)
        self._pipeline = CommitPipeline(self, self._jobs.make_room)
        self._write = self._pipeline.write
        self._collect_soon = self._versions.collect_soon

    # ------------------------------------------------------------------ reads (snapshot)

    def get(self, key: Bytes) -> bytes | None:
        """The value of ``key``, or None when it is absent or deleted.

        A key set with a ``ttl`` reads as absent from the instant the KV's
        clock reaches its expiry.  Raises ``TypeError`` when ``key`` is not
        bytes-like, ``ClosedError`` once the KV is closed.  Cost: a dict
        lookup per memtable, then per table a bloom probe and, when it
        passes, an index bisect and one block (usually cached).
        """
        # ``_get`` written out: a call level costs the hot path about 2% of a get
        metrics = self._metrics  # every ``SAMPLE``-th get is timed (``metrics.Metrics.countdown``)
        left = metrics.countdown - 1
        if not left:
            return self._timed_get(key)
        metrics.countdown = left
        key = as_bytes(key, "key")
        if key >= b"\xff" and not self._legacy:  # the KV's own keys starting with FF are stored escaped
            key = b"\xff\x00" + key[1:]
        if self._closed:
            raise closed_error()
        view, snapshot = self._pin()
        try:
            return get_in(view, key, snapshot, self._clock)
        except (OSError, ValueError, CorruptionError):
            if self._closing:  # closed by another thread while this read was under way
                raise closed_error() from None
            raise
        finally:
            self._unpin(view)

    def _timed_get(self, key: Bytes) -> bytes | None:
        """``get``, timed into the get histogram (``metrics``): every ``SAMPLE``-th call."""
        metrics = self._metrics
        metrics.countdown = SAMPLE
        metrics.timed += 1
        start = perf_counter_ns()
        value = self._get(key, self._clock)
        metrics.get.observe(perf_counter_ns() - start)
        return value

    def ttl(self, key: Bytes) -> float | None:
        """The seconds ``key`` has left before it expires, by the KV's clock now; None when it does not
        expire (set without a ``ttl``), has expired, or is absent.  Raises as ``get``."""
        return remaining(self._get(key, None), self._clock())

    def trace(self, key: Bytes, *, collection: str | None = None) -> Trace:
        """What a ``get`` of ``key`` (in collection ``collection``, else among the KV's own keys) does, traced
        level by level: each memtable and table consulted in order with its key range and bloom filter's
        answer, each block read and whether the block cache held it, a range tombstone met, the version
        found with its sequence number and expiry, the answer ``get`` gives and the time taken (``Trace``;
        docs/operations.md, "trace()").  A trace is a real lookup: it reads blocks into the cache as a
        ``get`` does.  Raises as ``get``, and for ``collection`` as ``collection()``."""
        self._check_open()
        key = as_bytes(key, "key")
        if collection is None:
            space = self._own_space
        else:
            space = Space(prefix_of(check_name(collection)))
            self._check_spaces()
        return trace(self, key, space.stored(key), self._clock)

    def _get_in(self, space: Space, key: Bytes) -> bytes | None:
        """``get`` in ``space``."""
        return self._get(space.stored(as_bytes(key, "key")), self._clock, stored=True)

    def _ttl_in(self, space: Space, key: Bytes) -> float | None:
        """``ttl`` of ``key`` in ``space``."""
        return remaining(self._get(space.stored(as_bytes(key, "key")), None, stored=True), self._clock())

    def _may_expire(self) -> bool:
        """Whether a memtable or table holds a value set with a ttl (what ``kvstore dump`` asks before it
        asks ``ttl`` of each key)."""
        view = self._view
        return any(mem.expiring for mem in view.mems) or any(run.expiring for run in view.runs)

    def _get(self, key: Bytes, clock: Callable[[], float] | None, stored: bool = False) -> bytes | None:
        """``get``, or with ``clock`` None the value as stored (``get_in``); ``stored``: ``key`` is a stored
        key (of any key space), else one of the KV's own."""
        key = as_bytes(key, "key")
        if not stored and key >= b"\xff" and not self._legacy:
            key = b"\xff\x00" + key[1:]
        if self._closed:
            raise closed_error()
        view, snapshot = self._pin()
        try:
            return get_in(view, key, snapshot, clock)
        except (OSError, ValueError, CorruptionError):
            if self._closing:  # closed by another thread while this read was under way
                raise closed_error() from None
            raise
        finally:
            self._unpin(view)

    def _own(self) -> Space:
        space: Space = self._versions.own_space  # ``_own_space`` without the property's call
        return space

    def _reading(self) -> tuple[Reader, bool]:
        if self._closed:
            raise closed_error()
        return Reader(self, None), True

    # ------------------------------------------------------------------ writes (commit)

    def set(self, key: Bytes, value: Bytes, *, ttl: float | None = None) -> None:
        """Set ``key`` to ``value`` in a one-operation transaction (durable per ``Config.sync``).

        With ``ttl`` (seconds, an int or a float above 0) the key expires
        ``ttl`` seconds after this call by the KV's clock: from then on it
        reads as absent everywhere, and hides any older value of the key
        (DESIGN.md, "Expiring keys").  Never raises ``ConflictError``.
        Raises ``TypeError``, ``KeyOrValueTooLargeError`` (nothing
        written), ``TypeError`` or ``ValueError`` naming ``ttl`` when it is
        not an int or float, not finite or not above 0 (nothing written),
        ``ReadOnlyError``, ``ClosedError``, and ``FailedError`` once an I/O
        error stopped the KV.
        """
        key = self._key(key)  # ``_set_in`` written out: the hot path of a one-operation write
        if key >= b"\xff" and not self._legacy:
            key = self._stored(key, DEFAULT)
        value = self._value(value)
        if ttl is not None:
            value = record.Expiring.of(value, expires_at(self._clock(), check_ttl(ttl)))
        self._pipeline.set_one([(key, value)], self._config.sync)

    def _set_in(self, space: Space, key: Bytes, value: Bytes, ttl: float | None) -> None:
        """``set`` in ``space``."""
        key = self._key(key)
        if key >= b"\xff" or space.prefix is not None:
            key = self._stored(key, space)
        value = self._value(value)
        if ttl is not None:
            value = record.Expiring.of(value, expires_at(self._clock(), check_ttl(ttl)))
        self._pipeline.set_one([(key, value)], self._config.sync)

    def delete(self, key: Bytes) -> bool:
        """Delete ``key``; True when it existed.  Deleting an absent key writes nothing.  The read and
        the write happen together under the commit order, so this never raises ``ConflictError``; it
        raises as ``set``."""
        return self._delete_in(DEFAULT, key)

    def _delete_in(self, space: Space, key: Bytes) -> bool:
        """``delete`` in ``space``."""
        key = self._stored(self._key(key), space)
        existed: bool = self._write(DELETE, [(key, None)], self._config.sync).existed
        return existed

    def delete_range(self, start: Bytes, end: Bytes) -> None:
        """Delete every key in ``[start, end)``: one range tombstone, whatever the number of keys it covers
        (DESIGN.md, "Range tombstones").  ``start >= end`` deletes nothing and writes nothing.  Every later
        read misses a covered key written before it and sees one written after it.  It reads nothing, so
        it never raises ``ConflictError``; transactions that read a key or range it covers, with an older
        snapshot, conflict at their commit.  Raises ``TypeError`` or ``KeyOrValueTooLargeError`` naming the
        bound (nothing written), and as ``set`` otherwise."""
        self._delete_range_in(DEFAULT, start, end)

    def _delete_range_in(self, space: Space, start: Bytes, end: Bytes) -> None:
        """``delete_range`` in ``space``."""
        start, end = self._bounds(start, end)
        if start >= end:
            self._check_writable()
            return
        start, end = self._stored(start, space), self._stored(end, space)
        self._write(COMMIT, [(start, record.RangeEnd(end))], self._config.sync)

    # ------------------------------------------------------------------ collections

    def collection(self, name: str) -> Collection:
        """The collection ``name``: a key space of its own in this KV, with the read and write calls of the
        KV (DESIGN.md, "Collections").  ``TypeError`` for a name that is not a ``str``, ``ValueError`` for
        an empty one or one of more than 255 bytes in UTF-8."""
        self._check_open()
        self._check_spaces()
        return Collection(self, name)

    def collections(self) -> list[str]:
        """The names of the collections that hold at least one key, in the order of their stored prefixes
        (by length in UTF-8, then by bytes); one snapshot, one seek per collection."""
        self._check_open()
        if self._legacy:
            return []
        names: list[str] = []
        reader = Reader(self, None)
        try:
            start = COLLECTIONS_START
            while True:
                row = next(reader.items(start, False, True), None)
                if row is None or row[0] >= COLLECTIONS_END:
                    return names
                name = split(row[0], self._dir, -1)[0]  # a key no space stores: damage (check names its table)
                assert name is not None
                names.append(name)
                start = successor(prefix_of(name))
        finally:
            reader.release()

    def drop_collection(self, name: str) -> None:
        """Delete every key of collection ``name`` with one write (a range tombstone over its key space,
        as ``delete_range``: merges reclaim the space).  Handles on it stay usable and read it empty;
        keys set in it afterwards are new keys.  Raises as ``collection`` and as ``set``."""
        prefix = prefix_of(check_name(name))
        self._check_spaces()
        self._write(COMMIT, [(prefix, record.RangeEnd(successor(prefix)))], self._config.sync)

    def new_tx(self) -> KVTX:
        """A new transaction reading the snapshot of now; ``ClosedError`` once the KV is closed."""
        self._check_open()
        return KVTX(self)

    def transact(self, fn: Callable[[KVTX], T], *, attempts: int = 10) -> T:
        """Run ``fn(tx)`` in a new transaction and commit it, again in a fresh one on ``ConflictError``,
        at most ``attempts`` times in all; returns ``fn``'s result.

        ``fn`` may therefore run several times: keep its effects inside the
        transaction.  When ``fn`` commits or aborts the transaction itself,
        nothing is committed after it.  The last ``ConflictError``, and any
        other exception (the transaction aborted), passes through;
        ``ValueError`` when ``attempts < 1``.
        """
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

    # ------------------------------------------------------------------ flush and merge (jobs)

    def flush(self) -> None:
        """Write the memtable to a new table now; returns once the table (and every memtable frozen before
        it) is in the meta.  Does nothing when there is nothing to flush.  Raises ``ReadOnlyError``,
        ``ClosedError``, and ``FailedError`` when writing the table fails (the KV then stops)."""
        frozen = self._pipeline.write(ROTATE, [], False).frozen
        if frozen is not None:
            self._jobs.wait_flushed(frozen)

    def compact(self, *, full: bool = False) -> None:
        """Merge tables until the growth-factor policy holds; ``full=True`` flushes the memtable and merges
        every table into one (dropping deletes and versions no snapshot sees).

        Raises as ``flush``.  Cost: ``full=True`` reads and rewrites the
        whole database; readers and writers go on meanwhile.
        """
        self._check_writable()
        if full:
            self.flush()
        self._jobs.compact(full)

    # ------------------------------------------------------------------ stats, check, backup

    def stats(self) -> Stats:
        """Counters and the live tables (newest first); see ``Stats``.  Cost: one directory listing, and a
        scan of at most 1,025 keys per collection."""
        return self._stats(collections=True)

    def _stats(self, collections: bool) -> Stats:
        self._check_open()
        disk = self._disk_bytes()
        spaces = self._collection_stats() if collections else ()
        versions, jobs, metrics = self._versions, self._jobs, self._metrics
        with self._lock:
            tables = tuple(
                TableStats(table_name(r.file_number), r.file_number, r.num_entries, r.deletes, r.size, r.smallest,
                           r.largest, r.min_seq, r.max_seq, r.expiring)
                for r in (t.reader for t in versions.tables))
            mems = self._view.mems
            return Stats(
                sequence=self._seq, tables=tables,
                memtable_bytes=sum(m.bytes for m in mems), memtable_entries=sum(m.num_entries for m in mems),
                immutable_memtables=len(self._imms),
                wal_bytes=self._wal.size if self._wal is not None else self._recovery.wal_bytes,
                live_snapshots=self._snapshots.live(), oldest_snapshot=self._snapshots.oldest,
                oldest_snapshot_age=self._snapshots.oldest_age(),
                flushes=jobs.flushes, merges=jobs.merges, bytes_written=self._metrics.engine_bytes,
                user_bytes=self._metrics.user_bytes, disk_bytes=disk, cache_hits=self._cache.hits,
                cache_misses=self._cache.misses, recovery=tuple(self._recovery.notes), failed=self._failed,
                write_stalls=jobs.write_stalls, stall_seconds=jobs.stall_seconds,
                tracked_writes=self._writesets.tracked(), expired=jobs.expired, collections=spaces,
                gets=metrics.gets(), commits=self._seq - metrics.first_seq, conflicts=metrics.conflicts,
                bloom_negatives=self._cache.bloom_negatives, bloom_false_positives=self._cache.bloom_false_positives)

    def metrics_text(self) -> str:
        """The KV's counters, gauges and latency histograms in the Prometheus text exposition format
        (version 0.0.4), every name under ``kvstore_``; counters count since this open (docs/operations.md,
        "metrics_text()").  Cost: ``stats()`` without its collections, and a copy of each histogram."""
        return exposition(families(self._stats(collections=False), self._metrics))

    def _collection_stats(self) -> tuple[CollectionStats, ...]:
        """``Stats.collections``: one snapshot, a scan of at most 1,025 keys per collection."""
        out = []
        reader = Reader(self, None)
        try:
            for name in self.collections():
                space = Space(prefix_of(name))
                rows = merge_rows(reader, space)
                out.append(collection_stats(name, space, rows, reader.view))
        finally:
            reader.release()
        return tuple(out)

    def _disk_bytes(self) -> int:
        disk = 0
        for name in self._fs.listdir(self._dir):
            try:
                if parse(name) is not None or name in META_NAMES:
                    file = self._fs.open(self._path(name))
                    disk += file.size()
                    file.close()
            except FileNotFoundError:
                continue
        return disk

    def check(self) -> list[str]:
        """Verify every checksum and order of every live table, both meta slots, the live logs and the
        sequence order of tables; returns the problems found (empty when healthy).  Reads every byte of
        every table: cost proportional to the database's size.  ``ClosedError`` once closed."""
        self._check_open()
        return check(self, self._versions, self._pipeline)

    def backup(self, dest: str | os.PathLike[str], *, progress: Progress | None = None) -> list[tuple[str, str]]:
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
        return backup(self, dest, progress)

    # ------------------------------------------------------------------ close

    def close(self) -> None:
        """Wait for commits in progress and background work, flush the memtable, release the lock;
        idempotent.  Every later call, and the next use of a cursor, scan or transaction opened on this
        KV, raises ``ClosedError``.  Raises ``FailedError`` when the final flush fails (the KV is closed
        anyway; reopening recovers from the WAL)."""
        if not self._pipeline.begin_close():  # closed, or another thread is closing it: wait for that
            self._closed_event.wait()
            return
        try:  # this thread now leads the write queue, and nothing queues behind it
            self._jobs.stop()
            if not self._read_only and self._failed is None:
                self._write_out()
        finally:
            self._closed = True
            for scan in list(self._snapshots.scans):  # rows already fetched are not handed out after the close
                scan.cut()
            with self._cond:
                self._cond.notify_all()
            with self._versions.lock:
                if self._wal is not None:
                    self._wal.close()
                self._versions.close_files()
                if self._file_lock is not None:
                    self._file_lock.release()
                    self._file_lock = None
            self._pipeline.end_close()
            self._closed_event.set()

    def _write_out(self) -> None:
        """At close: flush every memtable, merge by the policy, delete what the merges dropped."""
        try:
            self._jobs.flush_on_close()
            self._jobs.settle()
            with self._versions.lock:
                self._versions.free_on_close()
        except FailedError:
            raise
        except OSError as exc:
            raise self._fail(exc, "closing") from exc

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
        versions = self._versions
        with versions.lock, self._lock:
            self._mem._check()
            versions._check()
            assert self._view.mems == (self._mem, *(f.mem for f in self._imms))
            oldest_mem = self._imms[-1].mem if self._imms else self._mem
            assert oldest_mem.min_seq == 0 or oldest_mem.min_seq > versions.meta.last_sequence
            self._snapshots._check()
            self._writesets._check()
