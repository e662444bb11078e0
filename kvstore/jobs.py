"""Flushes and merges, and the two background threads that run them (DESIGN.md, "Threads and locks").

A full memtable is frozen (``make_room``: a fresh memtable and a fresh log
take its place) and written to a table by ``flush_oldest``, oldest frozen
memtable first; tables then merge by the growth-factor rule
(``merge.pick_run``) in ``compact_by_policy``.  With ``Config.background``
(the default) a flush thread and a merge thread do this work and commits
only wait when two frozen memtables are already queued (a *stall*);
otherwise it runs inline in the committing thread.  Readers never wait for
either: a table enters their view through one meta write and one view swap
(``versions.VersionSet.swap``).

Invariants:
  - frozen memtables are flushed oldest first, so tables stay in descending sequence order;
  - one merge at a time (``merge_lock``); flushes may add newer tables meanwhile, nothing else changes
    the table list;
  - an error in either thread stops the KV (``Core._fail``) and is never swallowed.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from typing import TypeVar

from kvstore import helper, runs
from kvstore.builder import build_table
from kvstore.core import Core, log
from kvstore.errors import FailedError
from kvstore.expiry import Expired
from kvstore.filenames import table_path
from kvstore.fs import OSFileSystem
from kvstore.merge import EntryChunk, compact_chunks, pick_run
from kvstore.rangedel import Fragments
from kvstore.sorted_array import Memtable
from kvstore.sorted_file import TableReader
from kvstore.versions import VersionSet
from kvstore.view import Frozen, Table

__all__ = ["IDLE_RATIO", "IDLE_SECONDS", "MAX_IMMUTABLE", "Jobs"]

T = TypeVar("T")
#: Frozen memtables waiting for the background flush before commits wait.
MAX_IMMUTABLE = 2
#: seconds without a commit or a flush after which the merge thread merges the tables down to one sorted
#: run or two (``Jobs._idle_merge``)
IDLE_SECONDS = 1.0
#: an idle merge rewrites the oldest run only when the newer runs hold at least 1/IDLE_RATIO of its bytes
IDLE_RATIO = 8
#: keys per chunk of a memtable sent to the helper (fewer, larger lists to pickle)
_ROWS_CHUNK = 4096


def _yielding(chunks: Iterator[T]) -> Iterator[T]:
    """``chunks``, handing the interpreter lock to any thread waiting for it after each one.

    A background flush or merge is CPU-bound: without this it keeps the lock
    for the whole switch interval (5 ms) each time a committing or reading
    thread lets it go for a system call, so foreground work would crawl while
    tables are written.  A chunk of a merge holds about 256 entries from
    each input table (``TableReader.entry_chunks``, whole blocks), a flush's
    256 keys (``Memtable.entry_chunks``): about a millisecond of work or less.
    """
    sleep = time.sleep
    for chunk in chunks:
        yield chunk
        sleep(0)


class Jobs:
    """The flushes and merges of one open database, and the threads that run them."""

    def __init__(self, kv: Core, versions: VersionSet) -> None:
        self._kv = kv
        self._versions = versions
        self.merge_lock = threading.Lock()
        self.threads: list[threading.Thread] = []
        self.stopping = False
        self.merge_wanted = False
        self.flushes = 0
        self.merges = 0
        #: expired entries flushes and merges dropped
        self.expired = 0
        self.idle_merges = 0
        self.write_stalls = 0
        self.stall_seconds = 0.0

    # ------------------------------------------------------------------ freezing the memtable

    def make_room(self) -> Memtable | None:
        """Freeze the memtable behind a fresh one and a fresh log (the caller leads the write queue),
        then flush it inline, or leave it to the background flush, first waiting while that one is
        behind.  Returns the memtable frozen, None when it was empty."""
        kv = self._kv
        if kv._mem.empty():
            return None
        background = kv._config.background
        if background and len(kv._imms) >= MAX_IMMUTABLE:
            self._stall()
        frozen = self._freeze(new_log=True, what="starting a new log")
        if not background:
            while kv._imms:
                self.flush_oldest()
            self.compact(full=False, queued=True)
        return frozen

    def _stall(self) -> None:
        """Wait while the background flush is ``MAX_IMMUTABLE`` memtables behind; counted in stats."""
        kv = self._kv
        start = time.monotonic()
        with kv._cond:
            self.write_stalls += 1
            while len(kv._imms) >= MAX_IMMUTABLE and kv._failed is None:
                kv._cond.wait()
            self.stall_seconds += time.monotonic() - start
        if kv._failed is not None:
            raise kv._failed_error()

    def _freeze(self, new_log: bool, what: str) -> Memtable:
        """Swap the memtable for a fresh one.  ``new_log``: commits go on in a fresh log; otherwise (at
        close) the flush's meta names a fresh number no file has, so every log there is can go."""
        kv, versions = self._kv, self._versions
        wal = kv._wal
        assert wal is not None
        try:
            with versions.lock:
                wal.sync()  # the old log is durable whole before a newer one exists
                if new_log:
                    number, new_wal = versions.new_log()
                else:
                    number, new_wal = versions.new_number(reserve=2), None
                with kv._lock:
                    if new_wal is not None:
                        kv._metrics.engine_bytes += new_wal.size
                        kv._wal = new_wal
                    frozen = kv._mem
                    kv._mem = Memtable()
                    kv._imms.insert(0, Frozen(frozen, number))
                    versions.install_view()
                    kv._cond.notify_all()
                if new_wal is not None:
                    wal.close()
        except OSError as exc:
            raise kv._fail(exc, what) from exc
        return frozen

    def flush_on_close(self) -> None:
        """Flush the memtable and every frozen one inline (the background threads have stopped)."""
        kv = self._kv
        if not kv._mem.empty():
            self._freeze(new_log=False, what="closing")
        while kv._imms:
            self.flush_oldest()

    def wait_flushed(self, mem: Memtable) -> None:
        """Wait until the background flush has written ``mem`` (and every older frozen memtable)."""
        kv = self._kv
        with kv._cond:
            while any(f.mem is mem for f in kv._imms) and kv._failed is None and not kv._closed:
                kv._cond.wait()
        if kv._failed is not None:
            raise kv._failed_error()

    # ------------------------------------------------------------------ flush and merge

    def flush_oldest(self) -> None:
        """Write the oldest frozen memtable to a table and swap it in through the meta."""
        kv, versions = self._kv, self._versions
        frozen = kv._imms[-1]
        start = time.perf_counter_ns()

        def flushed() -> None:
            kv._imms.pop()
            self.flushes += 1
            kv._metrics.flush.observe(time.perf_counter_ns() - start)
            self.merge_wanted = True
            kv._cond.notify_all()

        try:
            with versions.lock:
                number = versions.new_number()
                bottom = not versions.tables
            expired = self._expired(frozen.mem.expiring)
            done, table = self._in_helper([], number, bottom, expired, frozen.mem)
            if not done:
                fragments = frozen.mem.fragments()
                table = self._write_table(number, [frozen.mem.entry_chunks()], bottom, fragments or None, expired)
            with versions.lock:
                last = max(versions.meta.last_sequence, frozen.mem.max_seq)
                versions.swap([], table, flushed, log_number=frozen.next_log, last_sequence=last)
        except OSError as exc:
            raise kv._fail(exc, "flushing the memtable") from exc

    def _expired(self, expiring: int) -> Expired | None:
        """What a flush or merge whose sources hold ``expiring`` values that expire drops them by: the
        clock now; None when they hold none."""
        return Expired(self._kv._clock()) if expiring else None

    def _write_table(self, number: int, sources: list[Iterator[EntryChunk]], bottom: bool,
                     fragments: Fragments | None, expired: Expired | None) -> Table | None:
        """Write the merge of ``sources`` under range tombstones ``fragments`` (those of every source),
        dropping values expired by ``expired``'s clock, as table ``number``, fsynced with its directory;
        None when empty."""
        kv = self._kv
        path = table_path(kv._dir, number)
        with kv._lock:
            snapshots = sorted(kv._snapshots.counts)
        chunks = compact_chunks(sources, snapshots, bottom, fragments, expired)
        if threading.current_thread() in self.threads:
            chunks = _yielding(chunks)
        kept = fragments.retained(snapshots, bottom) if fragments else None
        info = build_table(kv._fs, path, number, kv._config, chunks, kept)
        if expired is not None:
            with kv._lock:
                self.expired += expired.count
        if info is None:
            return None
        kv._fs.sync_dir(kv._dir)
        with kv._lock:
            kv._metrics.engine_bytes += info.size
        return Table(TableReader(kv._fs, path, number, kv._cache))

    def compact(self, full: bool, queued: bool = False) -> None:
        """Merge tables until the policy holds; ``full``: every table into one, dropping every version
        and delete no snapshot sees (the caller flushed first).  ``queued``: the caller leads the write
        queue (``Core._check_writable``)."""
        kv = self._kv
        with self.merge_lock:
            kv._check_writable(queued)
            try:
                tables = list(self._versions.tables)
                if not full:
                    self._compact_by_policy()
                elif len(tables) > 1 or (tables and (tables[0].reader.deletes or tables[0].reader.ranged
                                                     or self._has_expired(tables[0])
                                                     or _has_old_versions(tables[0]))):
                    self._merge(tables)
            except OSError as exc:
                raise kv._fail(exc, "merging tables") from exc

    def settle(self) -> None:
        """Merge until the policy holds, at close; ``OSError`` passes through."""
        with self.merge_lock:
            self._compact_by_policy()

    def _compact_by_policy(self) -> None:
        """Merge sorted runs (``runs.group``: adjacent tables of disjoint key ranges weigh as one) until the
        growth-factor rule holds over them (under ``merge_lock``)."""
        versions, growth = self._versions, self._kv._config.growth_factor
        while not self._stopping_merges():
            tables = list(versions.tables)
            counts = runs.group([(t.reader.lo, t.reader.hi) for t in tables])
            ends = list(itertools.accumulate(counts))
            sizes = [sum(t.reader.size for t in tables[end - count : end]) for count, end in zip(counts, ends)]
            picked = pick_run(sizes, growth)
            if picked is None:
                return
            i, j = picked
            self._merge(tables[ends[i] - counts[i] : ends[j - 1]])

    def _stopping_merges(self) -> bool:
        return self._kv._failed is not None or (self.stopping and threading.current_thread() in self.threads)

    def _merge(self, group: list[Table]) -> None:
        """Merge adjacent tables ``group`` (newest first) into one and swap it in through the meta (under
        ``merge_lock``)."""
        versions = self._versions
        start = time.perf_counter_ns()

        def merged() -> None:
            self.merges += 1
            self._kv._metrics.merge.observe(time.perf_counter_ns() - start)

        with versions.lock:
            number = versions.new_number()
            bottom = group[-1] is versions.tables[-1]
        expired = self._expired(sum(t.reader.expiring for t in group))
        done, table = self._in_helper(group, number, bottom, expired)
        if not done:
            fragments = Fragments([], [], []).merge(*(t.reader.fragments for t in group if t.reader.ranged))
            with self._kv._lock:
                snapshots = sorted(self._kv._snapshots.counts)
            readers = runs.unhidden([t.reader for t in group], fragments, snapshots)  # the others dropped unread
            levels = runs.runs_of(readers)  # a run's tables as one source, in key order
            table = self._write_table(number, [level.entry_chunks() for level in levels], bottom, fragments or None,
                                      expired)
        with versions.lock:
            versions.swap(group, table, merged)

    def _helper_writes(self) -> bool:
        """Whether tables are written by the helper process: ``Config.merge_process`` on the real file system
        (a simulated one lives in this process only)."""
        kv = self._kv
        return kv._config.merge_process and type(kv._fs) is OSFileSystem

    def _in_helper(self, group: list[Table], number: int, bottom: bool, expired: Expired | None,
                   mem: Memtable | None = None) -> tuple[bool, Table | None]:
        """Merge ``group`` (and frozen memtable ``mem``, newer than all of it: a flush) into table ``number``
        in a helper process (``helper.merge_files``), off the interpreter lock: (True, the table or None
        when nothing was left), or (False, None) when the helper does not write tables (``_helper_writes``)
        or failed, and the merge is still to be done here."""
        kv = self._kv
        if not self._helper_writes():
            return False, None
        path = table_path(kv._dir, number)
        with kv._lock:
            snapshots = tuple(sorted(kv._snapshots.counts))
        rows = tuple(mem.entry_chunks(_ROWS_CHUNK)) if mem is not None else ()
        ranges = tuple(mem.ranges) if mem is not None else ()
        request = helper.MergeRequest(tuple((t.reader.path, t.reader.file_number) for t in group), path, number,
                                      kv._config, snapshots, bottom, rows, ranges,
                                      expired.now if expired is not None else None)
        try:
            info, dropped = helper.merge_files(request)
        except helper.HelperError as exc:
            log.warning("kvstore merge helper failed (%s); writing the table in this process", exc)
            return False, None
        with kv._lock:
            self.expired += dropped
        if info is None:
            return True, None
        kv._fs.sync_dir(kv._dir)
        with kv._lock:
            kv._metrics.engine_bytes += info.size
        return True, Table(TableReader(kv._fs, path, number, kv._cache))

    # ------------------------------------------------------------------ background threads

    def start(self) -> None:
        """Start the flush and merge threads (``Config.background``, writable KVs only)."""
        kv = self._kv
        if kv._read_only or not kv._config.background:
            return
        self.merge_wanted = True  # the policy may not hold after recovery
        self._versions.deferred = True
        for target, name in ((self._flusher, "flush"), (self._merger, "merge")):
            thread = threading.Thread(target=target, name=f"kvstore-{name} {kv._dir}", daemon=True)
            self.threads.append(thread)
        for thread in self.threads:
            thread.start()

    def _flusher(self) -> None:
        """Background thread: flush frozen memtables, oldest first, and delete files readers let go."""
        kv, versions = self._kv, self._versions
        try:
            while True:
                with kv._cond:
                    while not (kv._imms or versions.collect_wanted or self.stopping or kv._failed):
                        kv._cond.wait()
                    if kv._failed is not None or (self.stopping and not kv._imms):
                        return
                    flush = bool(kv._imms)
                if flush:
                    self.flush_oldest()
                else:
                    with versions.lock:
                        versions.collect()
        except BaseException as exc:  # noqa: BLE001 - never swallowed: the KV stops and says why
            self._background_error(exc, "flushing the memtable")

    def _merger(self) -> None:
        """Background thread: merge tables by the growth-factor policy after each flush, and once more when
        the KV has been idle for ``IDLE_SECONDS`` (``_idle_merge``); while a table holds entries that
        expire, it looks again every ``IDLE_SECONDS`` of idleness for one whose entries expired."""
        kv = self._kv
        try:
            while True:
                idle = False
                with kv._cond:
                    while not (self.merge_wanted or self.stopping or kv._failed):
                        seq = kv._seq
                        timeout = IDLE_SECONDS if self._idle_merge() or self._may_expire() else None
                        if not kv._cond.wait(timeout) and kv._seq == seq and not kv._imms:
                            idle = True
                            break
                    if kv._failed is not None or self.stopping:
                        return
                    if not idle:
                        self.merge_wanted = False
                with self.merge_lock:
                    if idle:
                        group = self._idle_merge()
                        if group:
                            self.idle_merges += 1
                            self._merge(group)
                    else:
                        self._compact_by_policy()
        except BaseException as exc:  # noqa: BLE001 - never swallowed: the KV stops and says why
            self._background_error(exc, "merging tables")

    def _idle_merge(self) -> list[Table]:
        """The tables an idle KV merges, so that reads consult one sorted run or two: every table when the
        runs newer than the oldest hold at least ``1 / IDLE_RATIO`` of its bytes, else the newer runs
        (when there are two or more of them); none when table writing is not in a helper process (merging
        in this process would take the interpreter lock from the readers)."""
        if not self._helper_writes():
            return []
        tables = list(self._versions.tables)
        counts = runs.group([(t.reader.lo, t.reader.hi) for t in tables])
        if len(counts) < 2:  # one sorted run: a table holding expired entries is merged alone, to drop them
            return next(([t] for t in tables if self._has_expired(t)), [])
        oldest = sum(t.reader.size for t in tables[len(tables) - counts[-1] :])
        newer = tables[: len(tables) - counts[-1]]
        if sum(t.reader.size for t in newer) * IDLE_RATIO >= oldest:
            return tables
        return newer if len(counts) > 2 else []

    def _may_expire(self) -> bool:
        """Whether an idle KV should look again later for tables holding expired entries (``_idle_merge``):
        some table holds entries that expire, and tables are written in the helper."""
        return self._helper_writes() and any(t.reader.expiring for t in self._versions.tables)

    def _has_expired(self, table: Table) -> bool:
        """Whether ``table`` holds an entry expired by the KV's clock now."""
        reader = table.reader
        return bool(reader.expiring) and reader.earliest <= self._kv._clock()

    def _background_error(self, exc: BaseException, what: str) -> None:
        kv = self._kv
        if not isinstance(exc, FailedError):
            kv._fail(exc, what)
        log.error("kvstore background work stopped: %s", kv._failed)

    def stop(self) -> None:
        """Let the flush thread write every frozen memtable and the merge thread finish its merge; join."""
        kv = self._kv
        with kv._cond:
            self.stopping = True
            kv._cond.notify_all()
        for thread in self.threads:
            thread.join()


def _has_old_versions(table: Table) -> bool:
    return any(a == b for a, b in itertools.pairwise(k for k, _, _ in table.reader.entries()))
