"""SimFS: an in-memory file system that remembers what was synced, and can crash, tear and fail on demand.

It implements the engine's ``FileSystem`` interface, so ``KV.open(path,
config, fs=SimFS())`` runs kvstore on it, and so can any user's test.  Every
file keeps two states: what the OS holds (every write) and what the disk
holds (as of the file's last ``fsync``), plus the list of writes in between.
Every directory keeps its entries as the OS sees them and as of its last
``sync_dir``, plus the creates, renames and unlinks in between.  A crash image
(``crash_image(mode, seed)``) is a new SimFS holding what a disk could hold
after power loss at this moment, by the rule of ``CrashMode``; everything in it
counts as synced.

Faults: ``crash_at(n)`` raises ``SimulatedCrash`` at the n-th mutating
operation (``ops`` counts them: create, write, truncate, fsync, sync_dir,
rename, unlink, link); ``fail(op, pattern, nth, err)`` makes the n-th call of
an operation on a matching file raise ``OSError``; ``space_limit`` makes a
write that passes it short, then ``ENOSPC``.

    >>> from kvstore import KV, Config
    >>> from kvstore.simfs import CrashMode, SimFS
    >>> fs = SimFS()
    >>> kv = KV.open("/db", Config(sync=False), fs=fs)
    >>> kv.set(b"a", b"1")                         # in the OS, not on disk
    >>> after = fs.crash_image(CrashMode.DROP)     # power loss now
    >>> KV.open("/db", fs=after).get(b"a") is None
    True

Directories made by ``mkdir`` are durable at once (the model does not lose
a directory, only entries in it).  Paths are normalized strings.

Invariants:
  - a directory entry names a live inode;
  - ``durable`` plus the pending writes, replayed in order, equals ``data``.
"""

from __future__ import annotations

import enum
import errno
import fnmatch
import os
import random
import threading

from kvstore.errors import LockedError

__all__ = ["CrashMode", "SimFS", "SimFile", "SimulatedCrash"]

#: Sector size for ``CrashMode.SECTORS``: each sector of an unsynced write lands or not, independently.
SECTOR = 512


class SimulatedCrash(BaseException):
    """Raised when an armed crash point is reached; a ``BaseException`` so the engine never handles it."""


class CrashMode(enum.Enum):
    """What of the unsynced state a crash image keeps."""

    DROP = "drop"
    """Unsynced file data and directory operations are all lost (files back to their last fsync)."""
    TORN = "torn"
    """Unsynced writes land in order up to a random byte; directory operations each kept or lost."""
    GARBAGE = "garbage"
    """Unsynced writes keep their size but their bytes are random (size reached disk before data)."""
    ZEROS = "zeros"
    """Unsynced writes keep their size but their bytes are zeros."""
    SECTORS = "sectors"
    """Each 512-byte sector of each unsynced write keeps its old or new bytes independently."""
    REORDER = "reorder"
    """Each unsynced write lands or not independently (later ones may land, earlier ones not)."""
    DIRS = "dirs"
    """File data as written; unsynced directory operations each kept or lost."""
    KILL = "kill"
    """The process was killed: everything written to the OS is kept."""


class _Fault:
    __slots__ = ("op", "pattern", "nth", "err")

    def __init__(self, op: str, pattern: str, nth: int, err: int) -> None:
        self.op = op
        self.pattern = pattern
        self.nth = nth
        self.err = err


class _Inode:
    __slots__ = ("data", "durable", "pending")

    def __init__(self) -> None:
        self.data = bytearray()
        self.durable = b""
        # writes since the last fsync: ("w", offset, bytes) or ("t", size)
        self.pending: list[tuple[str, int, bytes]] = []


class SimFile:
    """An open file of a ``SimFS``."""

    def __init__(self, fs: SimFS, path: str, inode: _Inode, writable: bool) -> None:
        self._fs = fs
        self.path = path
        self._inode = inode
        self._writable = writable
        self._closed = False

    def _check(self, write: bool) -> None:
        if self._closed:
            raise ValueError(f"I/O on a closed file {self.path}")
        if write and not self._writable:
            raise OSError(errno.EBADF, "file not open for writing", self.path)

    def pread(self, size: int, offset: int) -> bytes:
        """Up to ``size`` bytes at ``offset``, as the OS holds them (fewer only at the end of the file)."""
        self._check(False)
        self._fs._alive()
        return bytes(self._inode.data[offset : offset + size])

    def append(self, data: bytes) -> None:
        """Write ``data`` at the end of the file (not durable before ``fsync``)."""
        self._check(True)
        self._fs._write(self.path, self._inode, len(self._inode.data), bytes(data))

    def write_at(self, offset: int, data: bytes) -> None:
        """Write ``data`` at ``offset``, overwriting what is there (not durable before ``fsync``)."""
        self._check(True)
        self._fs._write(self.path, self._inode, offset, bytes(data))

    def truncate(self, size: int) -> None:
        """Cut (or extend with zeros) the file to ``size`` bytes (not durable before ``fsync``)."""
        self._check(True)
        fs = self._fs
        with fs._lock:
            fs._op("truncate", self.path)
            inode = self._inode
            del inode.data[size:]
            if len(inode.data) < size:
                inode.data.extend(bytes(size - len(inode.data)))
            inode.pending.append(("t", size, b""))

    def fsync(self) -> None:
        """Make the file's data as it is now durable."""
        self._check(False)
        fs = self._fs
        with fs._lock:
            fs._op("fsync", self.path)
            self._inode.durable = bytes(self._inode.data)
            self._inode.pending.clear()

    def size(self) -> int:
        """The file's length in bytes, as the OS sees it."""
        self._check(False)
        return len(self._inode.data)

    def close(self) -> None:
        """Release the file; idempotent.  Later reads and writes raise ``ValueError``."""
        self._closed = True


class _SimLock:
    def __init__(self, fs: SimFS, path: str, shared: bool) -> None:
        self._fs = fs
        self._path = path
        self._shared = shared
        self._held = True

    def release(self) -> None:
        if not self._held:
            return
        self._held = False
        with self._fs._lock:
            holders = self._fs._locks.get(self._path, 0)
            if holders > 1:
                self._fs._locks[self._path] = holders - 1
            else:
                self._fs._locks.pop(self._path, None)


class SimFS:
    """An in-memory ``FileSystem`` that records what was synced; see the module docstring."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._dirs: dict[str, dict[str, _Inode]] = {"/": {}}
        self._durable_dirs: dict[str, dict[str, _Inode]] = {"/": {}}
        # directory operations since the directory's last sync: ("create", name, inode) / ("unlink", name, None)
        self._dir_ops: dict[str, list[tuple[str, str, _Inode | None]]] = {"/": []}
        self._locks: dict[str, int] = {}
        self._faults: list[_Fault] = []
        self._crash_at: int | None = None
        self._down = False
        self.ops = 0
        """Mutating operations performed so far (create, write, truncate, fsync, sync_dir, rename, unlink, link)."""
        self.space_limit: int | None = None
        """Bytes of file data that may still be written (a write past it is cut short, then ``ENOSPC``);
        None, the default, is unlimited."""
        self.log: list[tuple[str, str]] = []
        """Every mutating operation as ``(op, path)``, in order (for protocol checks and debugging)."""

    # ------------------------------------------------------------------ faults

    def crash_at(self, n: int | None) -> None:
        """Raise ``SimulatedCrash`` when operation number ``n`` (1-based, counting from now on) starts;
        after it the file system is down: every operation raises ``OSError(EIO)``."""
        self._crash_at = None if n is None else self.ops + n

    def fail(self, op: str, pattern: str = "*", nth: int = 1, err: int = errno.EIO) -> None:
        """Make the ``nth`` call of ``op`` ("create", "write", "truncate", "fsync", "sync_dir", "rename",
        "unlink", "link") on a path whose base name matches ``pattern`` raise ``OSError(err)``; once."""
        self._faults.append(_Fault(op, pattern, nth, err))

    def _alive(self) -> None:
        if self._down:
            raise OSError(errno.EIO, "simulated machine is down")

    def _op(self, op: str, path: str) -> None:
        """Count one mutating operation, and fire any crash or fault armed for it."""
        self._alive()
        self.ops += 1
        if self._crash_at is not None and self.ops >= self._crash_at:
            self._crash_at = None
            self._down = True
            raise SimulatedCrash(f"crash at operation {self.ops} ({op} {path})")
        name = os.path.basename(path)
        for fault in self._faults:
            if fault.op == op and fnmatch.fnmatchcase(name, fault.pattern):
                fault.nth -= 1
                if fault.nth <= 0:
                    self._faults.remove(fault)
                    raise OSError(fault.err, f"simulated {os.strerror(fault.err)} on {op}", path)
                break
        self.log.append((op, path))

    def _write(self, path: str, inode: _Inode, offset: int, data: bytes) -> None:
        with self._lock:
            self._op("write", path)
            short = None
            if self.space_limit is not None:
                grow = max(0, offset + len(data) - len(inode.data))
                if grow > self.space_limit:
                    keep = max(0, len(data) - (grow - self.space_limit))
                    data, short = data[:keep], OSError(errno.ENOSPC, "simulated no space left on device", path)
                self.space_limit -= max(0, offset + len(data) - len(inode.data))
            if offset > len(inode.data):
                inode.data.extend(bytes(offset - len(inode.data)))
            inode.data[offset : offset + len(data)] = data
            inode.pending.append(("w", offset, data))
            if short is not None:
                raise short

    # ------------------------------------------------------------------ paths

    @staticmethod
    def _norm(path: str) -> str:
        return os.path.normpath(os.path.join("/", os.fspath(path)))

    def _parent(self, path: str) -> tuple[dict[str, _Inode], str, str]:
        p = self._norm(path)
        d, name = os.path.split(p)
        entries = self._dirs.get(d)
        if entries is None:
            raise FileNotFoundError(errno.ENOENT, "no such directory", d)
        return entries, d, name

    # ------------------------------------------------------------------ FileSystem

    def open(self, path: str, *, write: bool = False, create: bool = False) -> SimFile:
        """Open ``path``; ``create=True`` makes a new file (``FileExistsError`` if it exists), ``write=True``
        allows writes to an existing one.  ``FileNotFoundError`` when the file or its directory is missing."""
        with self._lock:
            self._alive()
            entries, d, name = self._parent(path)
            if create:
                if name in entries or self._norm(path) in self._dirs:
                    raise FileExistsError(errno.EEXIST, "file exists", path)
                self._op("create", path)
                inode = _Inode()
                entries[name] = inode
                self._dir_ops[d].append(("create", name, inode))
                return SimFile(self, path, inode, True)
            inode_or_none = entries.get(name)
            if inode_or_none is None:
                raise FileNotFoundError(errno.ENOENT, "no such file", path)
            return SimFile(self, path, inode_or_none, write)

    def exists(self, path: str) -> bool:
        """Whether ``path`` names a file or directory, as the OS sees it now."""
        p = self._norm(path)
        if p in self._dirs:
            return True
        d, name = os.path.split(p)
        return name in self._dirs.get(d, {})

    def isdir(self, path: str) -> bool:
        """Whether ``path`` names a directory."""
        return self._norm(path) in self._dirs

    def mkdir(self, path: str) -> None:
        """Create directory ``path`` and its missing parents, durable at once; ``FileExistsError`` when a file
        is in the way."""
        with self._lock:
            self._alive()
            p = self._norm(path)
            parts = []
            while p not in self._dirs:
                parts.append(p)
                p = os.path.dirname(p)
            for d in reversed(parts):
                if os.path.basename(d) in self._dirs[os.path.dirname(d)]:
                    raise FileExistsError(errno.EEXIST, "a file is in the way", d)
                self._dirs[d] = {}
                self._durable_dirs[d] = {}
                self._dir_ops[d] = []

    def listdir(self, path: str) -> list[str]:
        """The sorted names of the files and directories in directory ``path``."""
        self._alive()
        p = self._norm(path)
        if p not in self._dirs:
            raise FileNotFoundError(errno.ENOENT, "no such directory", path)
        subdirs = [os.path.basename(d) for d in self._dirs if d != p and os.path.dirname(d) == p]
        return sorted([*self._dirs[p], *subdirs])

    def rename(self, src: str, dst: str) -> None:
        """Rename ``src`` to ``dst``, replacing ``dst``; durable once both directories are synced."""
        with self._lock:
            s_entries, s_dir, s_name = self._parent(src)
            d_entries, d_dir, d_name = self._parent(dst)
            if s_name not in s_entries:
                raise FileNotFoundError(errno.ENOENT, "no such file", src)
            self._op("rename", src)
            inode = s_entries.pop(s_name)
            d_entries[d_name] = inode
            self._dir_ops[s_dir].append(("unlink", s_name, None))
            self._dir_ops[d_dir].append(("create", d_name, inode))

    def unlink(self, path: str) -> None:
        """Remove file ``path``; durable once its directory is synced."""
        with self._lock:
            entries, d, name = self._parent(path)
            if name not in entries:
                raise FileNotFoundError(errno.ENOENT, "no such file", path)
            self._op("unlink", path)
            del entries[name]
            self._dir_ops[d].append(("unlink", name, None))

    def link(self, src: str, dst: str) -> None:
        """Make ``dst`` a hard link to ``src`` (``FileExistsError`` if ``dst`` exists); durable once its directory
        is synced."""
        with self._lock:
            s_entries, _, s_name = self._parent(src)
            d_entries, d_dir, d_name = self._parent(dst)
            if s_name not in s_entries:
                raise FileNotFoundError(errno.ENOENT, "no such file", src)
            if d_name in d_entries:
                raise FileExistsError(errno.EEXIST, "file exists", dst)
            self._op("link", dst)
            d_entries[d_name] = s_entries[s_name]
            self._dir_ops[d_dir].append(("create", d_name, s_entries[s_name]))

    def sync_dir(self, path: str) -> None:
        """Make the entries of directory ``path`` (creates, renames, unlinks, links) durable."""
        with self._lock:
            p = self._norm(path)
            if p not in self._dirs:
                raise FileNotFoundError(errno.ENOENT, "no such directory", path)
            self._op("sync_dir", p)
            self._durable_dirs[p] = dict(self._dirs[p])
            self._dir_ops[p].clear()

    def lock(self, path: str, *, shared: bool = False) -> _SimLock:
        """Lock file ``path`` (created if missing unless ``shared``); ``LockedError`` when it is held
        exclusively, or held at all and ``shared`` is False.  Locks are not kept by crash images."""
        with self._lock:
            self._alive()
            p = self._norm(path)
            holders = self._locks.get(p, 0)
            if holders < 0 or (holders > 0 and not shared):
                raise LockedError(errno.EAGAIN, "database is locked", path)
            if not self.exists(p):
                if shared:
                    raise FileNotFoundError(errno.ENOENT, "no such file", path)
                self.open(p, create=True).close()
            self._locks[p] = holders + 1 if shared else -1
            return _SimLock(self, p, shared)

    # ------------------------------------------------------------------ inspection and damage

    def read_file(self, path: str) -> bytes:
        """The bytes of ``path`` as the OS sees them."""
        entries, _, name = self._parent(path)
        if name not in entries:
            raise FileNotFoundError(errno.ENOENT, "no such file", path)
        return bytes(entries[name].data)

    def is_durable(self, path: str) -> bool:
        """Whether ``path`` would survive any crash as it is now: its data fsynced and its entry synced."""
        p = self._norm(path)
        d, name = os.path.split(p)
        inode = self._dirs.get(d, {}).get(name)
        return (inode is not None and not inode.pending and bytes(inode.data) == inode.durable
                and self._durable_dirs.get(d, {}).get(name) is inode)

    def corrupt(self, path: str, offset: int, xor: int = 0xFF) -> None:
        """Flip bits of one byte of ``path`` on disk and in the OS alike (media damage, not a crash)."""
        entries, _, name = self._parent(path)
        inode = entries[name]
        inode.data[offset] ^= xor
        durable = bytearray(inode.durable)
        if offset < len(durable):
            durable[offset] ^= xor
            inode.durable = bytes(durable)

    # ------------------------------------------------------------------ crash images

    def crash_image(self, mode: CrashMode, seed: int = 0) -> SimFS:
        """A new SimFS holding what the disk could hold after a crash now, by ``mode``'s rule.

        Every random choice comes from ``random.Random(seed)``: the same state,
        mode and seed give the same image.
        """
        rnd = random.Random(seed)
        with self._lock:
            image = SimFS()
            contents: dict[int, bytes] = {}
            for d in sorted(self._dirs):
                entries = self._crash_entries(d, mode, rnd)
                image._dirs[d] = {}
                image._durable_dirs[d] = {}
                image._dir_ops[d] = []
                for name, inode in sorted(entries.items()):
                    key = id(inode)
                    if key not in contents:
                        contents[key] = self._crash_data(inode, mode, rnd)
                    new = _Inode()
                    new.data = bytearray(contents[key])
                    new.durable = contents[key]
                    image._dirs[d][name] = new
                    image._durable_dirs[d][name] = new
            return image

    def _crash_entries(self, d: str, mode: CrashMode, rnd: random.Random) -> dict[str, _Inode]:
        if mode is CrashMode.KILL:
            return dict(self._dirs[d])
        entries = dict(self._durable_dirs[d])
        if mode is CrashMode.DROP:
            return entries
        for op, name, inode in self._dir_ops[d]:
            if rnd.random() < 0.5:
                continue  # this operation never reached the disk
            if op == "create":
                assert inode is not None
                entries[name] = inode
            else:
                entries.pop(name, None)
        return entries

    @staticmethod
    def _crash_data(inode: _Inode, mode: CrashMode, rnd: random.Random) -> bytes:
        if mode in (CrashMode.KILL, CrashMode.DIRS) or not inode.pending:
            return bytes(inode.data)
        data = bytearray(inode.durable)
        if mode is CrashMode.DROP:
            return bytes(data)
        ops = inode.pending
        if mode is CrashMode.TORN:
            total = sum(len(b) if kind == "w" else 0 for kind, _, b in ops)
            budget = rnd.randint(0, total)
            for kind, at, b in ops:
                if kind == "t":
                    if budget <= 0:
                        break
                    _truncate(data, at)
                    continue
                part = b[:budget]
                _put(data, at, part)
                budget -= len(part)
                if budget <= 0:
                    break
            return bytes(data)
        for kind, at, b in ops:
            if kind == "t":
                _truncate(data, at)
            elif mode is CrashMode.GARBAGE:
                _put(data, at, rnd.randbytes(len(b)))
            elif mode is CrashMode.ZEROS:
                _put(data, at, bytes(len(b)))
            elif mode is CrashMode.REORDER:
                if rnd.random() < 0.5:
                    _put(data, at, b)  # a lost write below a landed one reads as zeros
            else:  # SECTORS
                for s in range(0, len(b), SECTOR):
                    if rnd.random() < 0.5:
                        _put(data, at + s, b[s : s + SECTOR])
        return bytes(data)


def _put(data: bytearray, offset: int, b: bytes) -> None:
    if offset > len(data):
        data.extend(bytes(offset - len(data)))
    data[offset : offset + len(b)] = b


def _truncate(data: bytearray, size: int) -> None:
    del data[size:]
    if len(data) < size:
        data.extend(bytes(size - len(data)))
