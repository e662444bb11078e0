"""The state of one open database that every mechanism reads: one typed home for the hot fields.

``KV`` (the facade, ``store.py``) is a ``Core``: ``get``, ``set``, commits
and scans read these fields straight off ``self``, with no hop through
another object.  The mechanisms (``versions``, ``commit``, ``jobs``,
``recovery``, ``snapshot``) hold the same object and change the fields named
for them below, and only those.  Pebble documents beside each field of its
``DB`` which lock guards it; so does this class.

Locks, taken in this order and never the other way: the write queue's
(``commit.CommitPipeline.lock``: who leads), ``jobs.Jobs.merge_lock`` (one
merge at a time), ``versions.VersionSet.lock`` (the meta, file numbers, the
table list and logs change under it), ``_lock`` (the current view, sequence,
snapshots and immutable memtables; held only for moments, never across I/O),
then a memtable's own lock.

Fields (guard; who changes it):
  - ``_mem``: the memtable commits go to (``_lock`` to swap; ``jobs``, ``recovery``);
  - ``_imms``: frozen memtables waiting for their flush, newest first (``_lock``; ``jobs``);
  - ``_view``: what a reader starting now sees (``_lock``; ``install_view``);
  - ``_seq``: the last sequence published (``_lock``; ``commit``, ``recovery``);
  - ``_wal``: the log commits are appended to (the write queue's lead; ``jobs``, ``recovery``);
  - ``_snapshots``, ``_writesets``: snapshots of live readers and transactions (``_lock``; ``snapshot``),
    committed write sets (``_lock``; ``commit``);
  - ``_closed``, ``_closing``, ``_failed``: the lifecycle (``store`` closes; ``_fail`` stops);
  - ``_metrics``: counters and latency histograms (``metrics``; write amplification's byte counts
    under ``_lock``, the rest lock-free: see its docstring).

The KV's own key space (``_own_space``, ``_legacy``) is read through ``_versions``, which knows the
meta format: ``DEFAULT``, or ``LEGACY`` in a database of meta format 1 opened read-only.  It is not a
field of its own because a KV with more than about 30 instance attributes loses CPython's shared-key
attribute loads (DESIGN.md, "Attributes of the KV object").
"""

from __future__ import annotations

import errno
import logging
import os
import threading
from collections.abc import Callable
from typing import Any

from kvstore.config import MAX_KEY_SIZE_CAP, Config
from kvstore.errors import ClosedError, FailedError, KeyOrValueTooLargeError, ReadOnlyError
from kvstore.expiry import Clock
from kvstore.fs import FileLock, FileSystem
from kvstore.isolation import WriteSets
from kvstore.keys import as_bytes
from kvstore.keyspace import LEGACY, Space
from kvstore.metrics import Metrics
from kvstore.sorted_array import Memtable
from kvstore.sorted_file import BlockCache
from kvstore.view import Frozen, Snapshots, Table, View
from kvstore.wal import WalWriter

__all__ = ["Core", "closed_error", "log"]

log = logging.getLogger("kvstore")


def closed_error() -> ClosedError:
    """The error every call on a closed KV raises."""
    return ClosedError("the KV is closed")


class Core:
    """The fields of one open database that the hot paths and every mechanism read."""

    _lock: threading.RLock
    #: Commits a request through the write queue (``commit.CommitPipeline.write``, bound at open).
    _write: Callable[..., Any]
    #: Has dropped files deleted once readers let go (``versions.VersionSet.collect_soon``, bound at open).
    _collect_soon: Callable[[], None]

    #: The meta, the live tables and logs (``versions.VersionSet``, a higher layer, made at open).
    _versions: Any

    @property
    def _own_space(self) -> Space:
        """The KV's own key space: ``DEFAULT``, or ``LEGACY`` in a database of meta format 1 opened
        read-only (its keys stored as they are)."""
        space: Space = self._versions.own_space
        return space

    @property
    def _legacy(self) -> bool:
        """Whether the KV's own keys are stored as they are (a database of meta format 1, read-only)."""
        return self._versions.own_space is LEGACY

    def _init_core(self, dirpath: str, config: Config, fs: FileSystem, clock: Clock) -> None:
        self._dir = dirpath
        self._clock = clock
        self._config = config
        self._fs = fs
        self._read_only = config.read_only
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)  # background work and stalled commits wait on it
        self._closed = False
        self._closing = False
        self._closed_event = threading.Event()
        self._failed: str | None = None
        self._file_lock: FileLock | None = None
        self._cache = BlockCache(config.cache_size)
        self._mem = Memtable()
        self._imms: list[Frozen] = []
        self._view = View((self._mem,), ())
        self._wal: WalWriter | None = None
        self._seq = 0
        self._snapshots = Snapshots()
        self._writesets = WriteSets()
        self._metrics = Metrics()

    def _path(self, name: str) -> str:
        return os.path.join(self._dir, name)

    # ------------------------------------------------------------------ arguments and lifecycle

    def _key(self, key: object) -> bytes:
        """``key`` as ``bytes``; ``KeyOrValueTooLargeError`` when it is longer than ``Config.max_key_size``."""
        key = as_bytes(key, "key")
        if len(key) > self._config.max_key_size:
            raise KeyOrValueTooLargeError(f"key of {len(key)} bytes, max_key_size is {self._config.max_key_size}")
        return key

    def _stored(self, key: bytes, space: Space) -> bytes:
        """The stored key of a checked ``key`` of ``space``; ``KeyOrValueTooLargeError`` when it is too
        long to store (a collection's prefix, or the byte a key starting with ``FF`` gains, counts)."""
        stored = space.stored(key)
        if len(stored) > MAX_KEY_SIZE_CAP:
            raise KeyOrValueTooLargeError(f"key of {len(key)} bytes is stored in {len(stored)} bytes in its key "
                                          f"space, more than the {MAX_KEY_SIZE_CAP} a table holds")
        return stored

    def _check_spaces(self) -> None:
        """``ReadOnlyError`` for collections in a database of meta format 1 opened read-only (its first
        writable open upgrades it)."""
        if self._legacy:
            raise ReadOnlyError("collections need the database upgraded to meta format 2, which its next "
                                "writable open does")

    def _bounds(self, start: object, end: object) -> tuple[bytes, bytes]:
        """The bounds of a range delete as ``bytes``, checked as keys are (``TypeError`` and
        ``KeyOrValueTooLargeError`` naming ``start`` or ``end``)."""
        bounds = []
        for bound, what in ((start, "start"), (end, "end")):
            data = as_bytes(bound, what)
            if len(data) > self._config.max_key_size:
                raise KeyOrValueTooLargeError(f"{what} of {len(data)} bytes, max_key_size is "
                                              f"{self._config.max_key_size}")
            bounds.append(data)
        return bounds[0], bounds[1]

    def _value(self, value: object) -> bytes:
        """``value`` as ``bytes``; ``KeyOrValueTooLargeError`` when it is longer than ``Config.max_value_size``."""
        value = as_bytes(value, "value")
        if len(value) > self._config.max_value_size:
            raise KeyOrValueTooLargeError(
                f"value of {len(value)} bytes, max_value_size is {self._config.max_value_size}")
        return value

    def _check_open(self) -> None:
        if self._closed:
            raise closed_error()

    def _check_writable(self, queued: bool = False) -> None:
        """Raise unless writes are accepted; ``queued`` requests were accepted before ``close()`` began."""
        if self._closed or (self._closing and not queued):
            raise closed_error()
        if self._read_only:
            raise ReadOnlyError("the KV was opened read-only")
        if self._failed is not None:
            raise self._failed_error()

    def _failed_error(self) -> FailedError:
        """The error every write raises once the KV has stopped after an error."""
        return FailedError(errno.EIO, f"the KV stopped after an error ({self._failed}); reopen it")

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

    # ------------------------------------------------------------------ the view

    def _pin(self) -> tuple[View, int]:
        """Hold the current view for a read at the latest sequence; ``_unpin`` lets it go."""
        with self._lock:
            view = self._view
            view.refs += 1
            return view, self._seq

    def _unpin(self, view: View) -> None:
        """Let go of a view ``_pin`` (or a reader) held; a dropped table it freed is deleted soon."""
        with self._lock:
            free = view.release()
        if free:
            self._collect_soon()

    def _install_view(self, tables: tuple[Table, ...]) -> bool:
        """Make the current memtables and ``tables`` the view new readers take (under ``_lock``); True when
        letting go of the old view freed a dropped table."""
        old = self._view
        self._view = View((self._mem, *(f.mem for f in self._imms)), tables, old)
        return old.release()
