"""The live set of files (LevelDB's VersionSet): the meta, file numbers, the newest-first table list, the
live logs, and which dropped files may be deleted when.

Every change of the live set is one meta write (``metadata.MetaStore``,
double-buffered): a new table enters the list only once it is fsynced with
its directory; a table or log leaves it in a meta write, and its file is
deleted only once a later meta write has made that one the fallback slot
too (so neither valid slot names it) and no reader's view holds it.  File
numbers only grow, and a number is reserved in the durable meta before any
file takes it (DESIGN.md, "Directory layout", "Meta slots").

Invariants (``VersionSet._check``):
  - ``tables`` are the meta's tables, newest first, with descending sequence ranges;
  - every number handed out is ``>= meta.next_file`` at the time; ``meta.next_file <= next_file``;
  - a file is unlinked only when neither valid meta slot names it and no view holds it.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from kvstore.core import Core
from kvstore.errors import FailedError
from kvstore.filenames import log_name, log_path, table_name
from kvstore.keyspace import DEFAULT, Space
from kvstore.metadata import Meta, MetaStore
from kvstore.view import Table
from kvstore.wal import WalWriter

__all__ = ["VersionSet", "sequence_disorder"]


def sequence_disorder(tables: Sequence[Table]) -> list[str]:
    """Where a newer table (of ``tables``, newest first) holds a sequence not above every older one's."""
    problems = []
    for newer, older in itertools.pairwise(tables):
        n, o = newer.reader, older.reader
        if n.num_entries and o.num_entries and n.min_seq <= o.max_seq:
            problems.append(f"{table_name(n.file_number)}: sequences {n.min_seq}.. overlap older table "
                            f"{table_name(o.file_number)} (..{o.max_seq})")
    return problems


class VersionSet:
    """The meta and the files it names, for one open database; changed under ``lock``."""

    def __init__(self, kv: Core) -> None:
        self._kv = kv
        self.lock = threading.Lock()
        self.metastore = MetaStore(kv._fs, kv._dir)
        self.meta = Meta(0, 1, 0, 0, ())
        self.next_file = 1
        self.tables: list[Table] = []  # the meta's tables, newest first
        self.logs: list[int] = []  # live log numbers, ascending
        self.doomed: list[tuple[str, int]] = []  # (file name, meta version that dropped it)
        self.doomed_tables: dict[int, Table] = {}  # dropped tables, deleted once no view holds them
        self.collect_wanted = False  # a dropped table lost its last reader
        self.deferred = False  # a background thread deletes dropped files (``collect_soon``)
        self.own_space: Space = DEFAULT  # the KV's own keys: LEGACY in a meta format 1 database opened read-only

    # ------------------------------------------------------------------ the meta and file numbers

    def restore(self, meta: Meta, next_file: int, tables: list[Table], logs: list[int]) -> None:
        """Take the live set recovery found on disk (before any reader exists)."""
        self.meta = meta
        self.next_file = next_file
        self.tables = tables
        self.logs = logs

    def doom(self, name: str, version: int) -> None:
        """Delete file ``name`` once a meta newer than ``version`` is the fallback slot too."""
        self.doomed.append((name, version))

    def bump(self, **changes: Any) -> Meta:
        """Write the next meta version with ``changes`` (``next_file`` defaults to the counter's); under
        ``lock``.  Raises ``OSError`` from the write (the KV must then stop)."""
        changes.setdefault("next_file", self.next_file)
        meta = attrs.evolve(self.meta, version=self.meta.version + 1, **changes)
        written = self.metastore.write(meta)
        self.meta = meta
        kv = self._kv
        with kv._lock:
            kv._metrics.engine_bytes += written
        return meta

    def new_number(self, reserve: int = 1) -> int:
        """Hand out the next file number (under ``lock``), first writing a meta whose ``next_file``
        covers it (and ``reserve - 1`` more) when the durable one does not: a crash that loses a new file
        before its directory entry is durable must not let a later open hand its number out again."""
        number = self.next_file
        if number >= self.meta.next_file:
            self.bump(next_file=number + reserve)
        self.next_file += 1
        return number

    def new_log(self, reserve: int = 2) -> tuple[int, WalWriter]:
        """Create the next log (under ``lock``); by default its number is reserved in the meta with the
        next one, which the flush of the memtable it follows takes."""
        kv = self._kv
        number = self.new_number(reserve)
        wal = WalWriter.create(kv._fs, kv._dir, log_path(kv._dir, number), number)
        wal.fsyncs = kv._metrics.fsync
        self.logs.append(number)
        return number, wal

    # ------------------------------------------------------------------ swapping tables in

    def swap(self, old: list[Table], new: Table | None, on_swap: Callable[[], None], *,
             log_number: int | None = None, last_sequence: int | None = None,
             meta_format: int | None = None) -> None:
        """Replace the adjacent tables ``old`` (newest first; none for a flush, whose table becomes the
        newest) by ``new`` through one meta write, then install the view (under ``lock``).  A flush gives
        the ``log_number`` its memtable's successor starts, and logs below it are dropped.  ``on_swap``
        runs under the KV's ``_lock`` with the new list in place; dropped files are deleted after."""
        current = self.tables
        i = current.index(old[0]) if old else 0
        assert current[i : i + len(old)] == old
        tables = current[:i] + ([new] if new is not None else []) + current[i + len(old) :]
        changes: dict[str, Any] = {"tables": tuple(t.reader.file_number for t in tables)}
        if log_number is not None:
            changes["log_number"] = log_number
        if last_sequence is not None:
            changes["last_sequence"] = last_sequence
        if meta_format is not None:
            changes["format"] = meta_format
        meta = self.bump(**changes)
        if log_number is not None:
            for number in [n for n in self.logs if n < log_number]:
                self.logs.remove(number)
                self.doomed.append((log_name(number), meta.version))
        kv = self._kv
        with kv._lock:
            for t in old:
                t.removed_in = meta.version
                self.doomed_tables[t.reader.file_number] = t
            self.tables = tables
            on_swap()
            self.install_view()
        self.collect()

    def install_view(self) -> None:
        """Make the current memtables and tables the view new readers take (under the KV's ``_lock``)."""
        if self._kv._install_view(tuple(self.tables)):
            self.collect_wanted = True

    # ------------------------------------------------------------------ deleting dropped files

    def collect_soon(self) -> None:
        """A dropped table lost its last reader: have it deleted, by the background thread or right here
        when no flush or merge holds the meta (they collect when they finish).  Never raises: an error
        deleting it has already stopped the KV and is reported by the next write."""
        kv = self._kv
        if self.deferred:
            with kv._cond:
                self.collect_wanted = True
                kv._cond.notify_all()
            return
        if self.lock.acquire(blocking=False):
            try:
                self.collect()
            except FailedError:
                pass  # recorded in _failed and logged by _fail
            finally:
                self.lock.release()

    def collect(self) -> None:
        """Unlink dropped files that neither valid meta slot names and no view holds (under ``lock``).
        Never after a failure: what the meta on disk names is then unknown, so nothing is deleted until
        reopen."""
        kv = self._kv
        if kv._read_only or kv._closed or kv._failed is not None:
            return
        version = self.meta.version
        names = [name for name, removed_in in self.doomed if version > removed_in]
        self.doomed = [(name, removed_in) for name, removed_in in self.doomed if version <= removed_in]
        tables = []
        with kv._lock:
            self.collect_wanted = False
            for number, t in list(self.doomed_tables.items()):
                assert t.removed_in is not None
                if version > t.removed_in and t.refs == 0:
                    del self.doomed_tables[number]
                    tables.append(t)
        for t in tables:
            t.reader.close()
            kv._cache.evict_file(t.reader.file_number)
            names.append(table_name(t.reader.file_number))
        for name in names:
            self._unlink(name)

    def _unlink(self, name: str) -> None:
        kv = self._kv
        try:
            kv._fs.unlink(kv._path(name))
        except FileNotFoundError:
            pass  # already gone: the goal holds
        except OSError as exc:
            raise kv._fail(exc, f"deleting {name}") from exc

    def free_on_close(self) -> None:
        """At close (under ``lock``, no reader left that may read): one more meta write makes every
        dropped file unnamed by both slots, and they are deleted."""
        if not (self.doomed or self.doomed_tables):
            return
        self.bump()
        with self._kv._lock:
            for t in self.doomed_tables.values():
                t.refs = 0  # readers still open fail with ClosedError from now on
        self.collect()

    def close_files(self) -> None:
        """Close every table reader (live and dropped); under ``lock``."""
        for t in self.tables:
            t.reader.close()
        for t in self.doomed_tables.values():
            t.reader.close()

    def _check(self) -> None:
        kv = self._kv
        assert kv._view.tables == tuple(self.tables)
        assert tuple(t.reader.file_number for t in self.tables) == self.meta.tables
        assert not sequence_disorder(self.tables), sequence_disorder(self.tables)
        for t in self.tables:
            assert t.reader.max_seq <= self.meta.last_sequence
            assert t.reader.file_number < self.next_file
        assert self.meta.next_file <= self.next_file
        assert all(t.refs >= 1 for t in self.tables)
