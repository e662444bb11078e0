"""CheckingFS: a SimFS wrapper that asserts kvstore's durability protocol on every operation.

It implements the engine's ``FileSystem`` interface by delegating to a
``SimFS`` (and passes its fault and crash controls through), and before each
mutating operation checks the rules of docs/durability.md and DESIGN.md ("Meta slots",
"Flush"):

1. a meta slot (``meta0``/``meta1``, written in place or renamed into place
   from ``metaN.tmp``) is written only after every table it names is durable
   (data fsynced, directory entry synced) and every log at or above its
   ``log_number`` has a durable entry; every such log but the newest is
   durable whole (only the last log may have a torn tail); the newest may
   hold commits no sync has vouched for yet (they are the WAL's business: a
   torn tail, or a torn header on a log no longer than one, is cut and
   rewritten at open);
2. the slot written never holds the newest valid meta, and the new meta's
   version is above every valid version either slot could hold after a crash;
3. an unlinked table is in neither valid slot's table list, and an unlinked
   log is below every valid slot's ``log_number`` (unless ``salvage=True``:
   a salvage deliberately drops later logs);
4. the number of a ``NNNNNN.sst``/``NNNNNN.log`` is created at most once over
   the life of the check, crash images included (``crash_image`` carries the
   set of numbers created to the wrapper of the image); once ``corrupt()`` has
   damaged a file this rule is off for the wrapper and its images: media
   damage to the newest meta slot rolls the database back to the older slot,
   which cannot know numbers only the damaged one recorded, and the durability
   promise (docs/durability.md) covers crashes, not media damage;
5. no file is written, truncated or fsynced after an operation on it raised
   an I/O error (``OSError`` other than ``FileNotFoundError``/``FileExistsError``);
   this holds for a later ``KV.open`` on the same wrapper too (after a failed
   fsync the kernel may have dropped the data it could not write, so bytes read
   back are no proof): model a restart by opening a crash image instead.

A violation raises ``AssertionError`` and is also appended to ``violations``,
so a test can assert it stayed empty even if something swallowed the raise.
``assert_durable(path)`` checks, right after ``commit(sync=True)`` returns,
that the current log's bytes and directory entry are synced.

Checks run only while the simulated machine is up: after a crash fires, the
process is dead and nothing it tries reaches a disk.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable

from kvstore import record
from kvstore.errors import CorruptionError
from kvstore.fs import FileLock
from kvstore.metadata import META_NAMES
from kvstore.simfs import CrashMode, SimFile, SimFS

__all__ = ["CheckingFS", "CheckingFile", "DelegatingFS"]

_NUMBERED = re.compile(r"^(\d{6,})\.(sst|log)$")
MetaFields = tuple[int, int, int, int, list[int]]


def _norm(path: str) -> str:
    return os.path.normpath(os.path.join("/", os.fspath(path)))


class CheckingFile:
    """An open file of a ``CheckingFS``: checks rules 1, 2 and 5 before each write."""

    def __init__(self, fs: CheckingFS, inner: SimFile) -> None:
        self._fs = fs
        self._inner = inner
        self.path = inner.path

    def pread(self, size: int, offset: int) -> bytes:
        return self._inner.pread(size, offset)

    def append(self, data: bytes) -> None:
        self._fs._before_write(self.path, self.size(), bytes(data))
        self._fs._guard(self.path, lambda: self._inner.append(data))

    def write_at(self, offset: int, data: bytes) -> None:
        self._fs._before_write(self.path, offset, bytes(data))
        self._fs._guard(self.path, lambda: self._inner.write_at(offset, data))

    def truncate(self, size: int) -> None:
        self._fs._before_write(self.path, None, b"")
        self._fs._guard(self.path, lambda: self._inner.truncate(size))

    def fsync(self) -> None:
        self._fs._before_write(self.path, None, b"")
        self._fs._guard(self.path, self._inner.fsync)

    def size(self) -> int:
        return self._inner.size()

    def close(self) -> None:
        self._inner.close()


class DelegatingFS:
    """The read-only half of the ``FileSystem`` protocol, passed to ``inner``: a base for wrappers."""

    inner: SimFS

    def exists(self, path: str) -> bool:
        return self.inner.exists(path)

    def isdir(self, path: str) -> bool:
        return self.inner.isdir(path)

    def mkdir(self, path: str) -> None:
        self.inner.mkdir(path)

    def listdir(self, path: str) -> list[str]:
        return self.inner.listdir(path)


class CheckingFS(DelegatingFS):
    """A ``FileSystem`` over ``inner`` (a ``SimFS``) that asserts the protocol; see the module docstring."""

    def __init__(self, inner: SimFS | None = None, *, created: set[str] | None = None,
                 salvage: bool = False, damaged: bool = False) -> None:
        self.inner = SimFS() if inner is None else inner
        #: "NNNNNN.sst"/"NNNNNN.log" style keys ("sst:5", "log:7") of every numbered file created
        self.created: set[str] = set() if created is None else created
        #: every violation found, in order
        self.violations: list[str] = []
        #: paths an operation failed on with an I/O error
        self.failed_paths: set[str] = set()
        self.salvage = salvage
        #: set by ``corrupt()``: media damage, outside the crash promise, turns rule 4 off
        self.damaged = damaged

    # ------------------------------------------------------------------ reporting

    def _violation(self, message: str) -> None:
        self.violations.append(message)
        raise AssertionError(f"protocol violation: {message}")

    def _up(self) -> bool:
        return not self.inner._down

    def _guard(self, path: str, call: Callable[[], None], *also: str) -> None:
        """Run ``call``; an I/O error marks ``path`` (and ``also``) as failed before it propagates."""
        try:
            call()
        except (FileNotFoundError, FileExistsError):
            raise
        except OSError:
            if self._up():
                self.failed_paths.add(_norm(path))
                self.failed_paths.update(_norm(p) for p in also)
            raise

    # ------------------------------------------------------------------ inspecting the inner SimFS

    def _inode_views(self, path: str) -> list[bytes]:
        """Every content ``path`` could show after a crash now: OS data and durable data, through the
        OS entry and through the durable entry (a torn mix never passes a meta CRC)."""
        p = _norm(path)
        d, name = os.path.split(p)
        views: list[bytes] = []
        for entries in (self.inner._dirs.get(d, {}), self.inner._durable_dirs.get(d, {})):
            inode = entries.get(name)
            if inode is not None:
                for b in (bytes(inode.data), inode.durable):
                    if b not in views:
                        views.append(b)
        return views

    def _os_bytes(self, path: str) -> bytes | None:
        p = _norm(path)
        d, name = os.path.split(p)
        inode = self.inner._dirs.get(d, {}).get(name)
        return None if inode is None else bytes(inode.data)

    @staticmethod
    def _decode(buf: bytes, path: str, slot: int) -> MetaFields | None:
        try:
            return record.decode_meta(buf, path, slot)
        except CorruptionError:
            return None

    def _valid_metas(self, dirpath: str) -> list[MetaFields]:
        """Every valid meta either slot of ``dirpath`` holds or could hold after a crash now."""
        metas = []
        for slot, name in enumerate(META_NAMES):
            path = os.path.join(dirpath, name)
            for buf in self._inode_views(path):
                fields = self._decode(buf, path, slot)
                if fields is not None:
                    metas.append(fields)
        return metas

    def _newest_slot(self, dirpath: str) -> int | None:
        """The slot holding the newest valid meta as the OS sees it; None when neither is valid."""
        best: tuple[int, int] | None = None
        for slot, name in enumerate(META_NAMES):
            path = os.path.join(dirpath, name)
            buf = self._os_bytes(path)
            fields = None if buf is None else self._decode(buf, path, slot)
            if fields is not None and (best is None or fields[0] > best[0]):
                best = (fields[0], slot)
        return None if best is None else best[1]

    # ------------------------------------------------------------------ the rules

    def _before_write(self, path: str, offset: int | None, data: bytes) -> None:
        """Rules 5 (no write after an error) and, for a meta slot, 1 and 2."""
        if not self._up():
            return
        p = _norm(path)
        if p in self.failed_paths:
            self._violation(f"{p} written after an I/O error on it")
        name = os.path.basename(p)
        if name in META_NAMES and offset is not None:
            old = self._os_bytes(p) or b""
            if offset == 0:
                new = data
            else:
                buf = bytearray(old)
                if offset > len(buf):
                    buf.extend(bytes(offset - len(buf)))
                buf[offset : offset + len(data)] = data
                new = bytes(buf)
            self._check_meta_write(p, new)

    def _check_meta_write(self, slot_path: str, new: bytes) -> None:
        dirpath, name = os.path.split(slot_path)
        slot = META_NAMES.index(name)
        fields = self._decode(new, slot_path, slot)
        if fields is None:
            self._violation(f"{slot_path} written with bytes that are not a valid meta")
            return
        version, _, log_number, _, tables = fields
        newest = self._newest_slot(dirpath)
        if newest == slot:
            self._violation(f"{slot_path} overwritten while it holds the newest valid meta")
        for old_version, *_ in self._valid_metas(dirpath):
            if version <= old_version:
                self._violation(f"{slot_path} written with version {version}, not above valid version {old_version}")
        for number in tables:
            table = os.path.join(dirpath, f"{number:06d}.sst")
            if not self.inner.is_durable(table):
                self._violation(f"{slot_path} v{version} names {table}, which is not durable")
        logs = sorted(int(m.group(1)) for m in map(_NUMBERED.match, self.inner.listdir(dirpath))
                      if m is not None and m.group(2) == "log" and int(m.group(1)) >= log_number)
        for i, number in enumerate(logs):
            log = os.path.join(dirpath, f"{number:06d}.log")
            inode = self.inner._dirs[dirpath][os.path.basename(log)]
            if self.inner._durable_dirs.get(dirpath, {}).get(os.path.basename(log)) is not inode:
                self._violation(f"{slot_path} v{version} needs {log}, whose directory entry is not synced")
            elif i < len(logs) - 1 and not self.inner.is_durable(log):
                self._violation(f"{slot_path} v{version} needs {log}, an older log not fsynced whole")

    def _check_unlink(self, path: str) -> None:
        if not self._up():
            return
        p = _norm(path)
        dirpath, name = os.path.split(p)
        m = _NUMBERED.match(name)
        if m is None:
            return
        number = int(m.group(1))
        for version, _, log_number, _, tables in self._valid_metas(dirpath):
            if m.group(2) == "sst" and number in tables:
                self._violation(f"{p} unlinked while valid meta v{version} names it")
            if m.group(2) == "log" and number >= log_number and not self.salvage:
                self._violation(f"{p} unlinked while valid meta v{version} has log_number {log_number}")

    @staticmethod
    def _number_key(path: str) -> str | None:
        m = _NUMBERED.match(os.path.basename(_norm(path)))
        return None if m is None else f"{m.group(2)}:{int(m.group(1))}"

    def _check_create(self, path: str) -> None:
        key = self._number_key(path)
        if key is not None and key in self.created and self._up() and not self.damaged:
            self._violation(f"{_norm(path)}: file number {key} created a second time")

    # ------------------------------------------------------------------ FileSystem

    def open(self, path: str, *, write: bool = False, create: bool = False) -> CheckingFile:
        if create and self._up() and _norm(path) in self.failed_paths:
            self._violation(f"{_norm(path)} created again after an I/O error on it")
        if create:
            self._check_create(path)
        result: list[SimFile] = []
        self._guard(path, lambda: result.append(self.inner.open(path, write=write, create=create)))
        key = self._number_key(path)
        if create and key is not None:
            self.created.add(key)
        return CheckingFile(self, result[0])

    def rename(self, src: str, dst: str) -> None:
        if self._up():
            s = _norm(src)
            if s in self.failed_paths:
                self._violation(f"{s} renamed after an I/O error on it")
            if os.path.basename(_norm(dst)) in META_NAMES:
                self._check_meta_write(_norm(dst), self._os_bytes(s) or b"")
        self._guard(src, lambda: self.inner.rename(src, dst), dst)
        if _norm(src) in self.failed_paths:  # the failure stays with the file under its new name
            self.failed_paths.add(_norm(dst))

    def unlink(self, path: str) -> None:
        self._check_unlink(path)
        self._guard(path, lambda: self.inner.unlink(path))

    def link(self, src: str, dst: str) -> None:
        self._guard(dst, lambda: self.inner.link(src, dst))

    def sync_dir(self, path: str) -> None:
        self._guard(path, lambda: self.inner.sync_dir(path))

    def lock(self, path: str, *, shared: bool = False) -> FileLock:
        return self.inner.lock(path, shared=shared)

    # ------------------------------------------------------------------ SimFS controls, passed through

    @property
    def ops(self) -> int:
        return self.inner.ops

    @property
    def log(self) -> list[tuple[str, str]]:
        return self.inner.log

    @property
    def space_limit(self) -> int | None:
        return self.inner.space_limit

    @space_limit.setter
    def space_limit(self, value: int | None) -> None:
        self.inner.space_limit = value

    def crash_at(self, n: int | None) -> None:
        self.inner.crash_at(n)

    def fail(self, op: str, pattern: str = "*", nth: int = 1, err: int | None = None) -> None:
        if err is None:
            self.inner.fail(op, pattern, nth)
        else:
            self.inner.fail(op, pattern, nth, err)

    def is_durable(self, path: str) -> bool:
        return self.inner.is_durable(path)

    def read_file(self, path: str) -> bytes:
        return self.inner.read_file(path)

    def corrupt(self, path: str, offset: int, xor: int = 0xFF) -> None:
        self.damaged = True
        self.inner.corrupt(path, offset, xor)

    def crash_image(self, mode: CrashMode, seed: int = 0) -> CheckingFS:
        """A checking wrapper of the inner crash image; the numbers created so far stay taken."""
        return CheckingFS(self.inner.crash_image(mode, seed), created=set(self.created), salvage=self.salvage,
                          damaged=self.damaged)

    def assert_durable(self, path: str) -> None:
        """Assert ``path``'s bytes are fsynced and its directory entry synced (use right after a sync
        commit returns, on ``kv._wal.path``)."""
        if not self.inner.is_durable(path):
            self._violation(f"{_norm(path)} is not durable after a sync commit returned")
