"""The file-system layer: every byte kvstore reads or writes goes through a ``FileSystem``.

``OSFileSystem`` is the real one.  The interface is small and complete
(pread, append, write_at, truncate, fsync, sync_dir, rename, unlink, link,
listdir, lock) so that an in-memory file system that records what was synced
can stand in for it in crash tests.  Paths are ``str``; a directory is synced
with ``sync_dir`` after any create, rename or unlink that must survive a crash.
"""

from __future__ import annotations

import errno
import fcntl
import os
import threading
from typing import ClassVar, Protocol

from kvstore.errors import LockedError

__all__ = ["File", "FileLock", "FileSystem", "OSFile", "OSFileSystem"]


class File(Protocol):
    """An open file.  Writers append or write in place; nothing is durable before ``fsync``."""

    path: str

    def pread(self, size: int, offset: int) -> bytes:
        """Up to ``size`` bytes at ``offset`` (fewer only at the end of the file)."""
        ...

    def append(self, data: bytes) -> None:
        """Write ``data`` at the end of the file."""
        ...

    def write_at(self, offset: int, data: bytes) -> None:
        """Write ``data`` at ``offset``, overwriting what is there."""
        ...

    def truncate(self, size: int) -> None:
        """Cut the file to ``size`` bytes."""
        ...

    def fsync(self) -> None:
        """Make the file's data durable."""
        ...

    def size(self) -> int:
        """The file's length in bytes."""
        ...

    def close(self) -> None:
        """Release the file; idempotent."""
        ...


class FileLock(Protocol):
    """A held lock on a database directory."""

    def release(self) -> None:
        """Give the lock up; idempotent."""
        ...


class FileSystem(Protocol):
    """The operations kvstore needs from a file system."""

    def open(self, path: str, *, write: bool = False, create: bool = False) -> File:
        """Open ``path``; ``create=True`` makes a new file and fails if it exists (``FileExistsError``)."""
        ...

    def exists(self, path: str) -> bool:
        """Whether ``path`` names a file or directory."""
        ...

    def isdir(self, path: str) -> bool:
        """Whether ``path`` names a directory."""
        ...

    def mkdir(self, path: str) -> None:
        """Create directory ``path`` and its missing parents."""
        ...

    def listdir(self, path: str) -> list[str]:
        """Names in directory ``path``."""
        ...

    def rename(self, src: str, dst: str) -> None:
        """Atomically rename ``src`` to ``dst``, replacing ``dst``."""
        ...

    def unlink(self, path: str) -> None:
        """Remove file ``path``."""
        ...

    def link(self, src: str, dst: str) -> None:
        """Make ``dst`` a hard link to ``src``."""
        ...

    def sync_dir(self, path: str) -> None:
        """Make the entries of directory ``path`` (creates, renames, unlinks) durable."""
        ...

    def lock(self, path: str, *, shared: bool = False) -> FileLock:
        """Lock file ``path`` (created if missing unless ``shared``); raises ``LockedError`` when held."""
        ...


class OSFile:
    """A file of the operating system, read with ``os.pread`` and written with ``os.pwrite``."""

    def __init__(self, path: str, fd: int) -> None:
        self.path = path
        self._fd = fd
        self._size = os.fstat(fd).st_size

    def pread(self, size: int, offset: int) -> bytes:
        return os.pread(self._fd, size, offset)

    def append(self, data: bytes) -> None:
        self._write(self._size, data)

    def write_at(self, offset: int, data: bytes) -> None:
        self._write(offset, data)

    def _write(self, offset: int, data: bytes) -> None:
        view = memoryview(data)
        end = offset + len(data)
        while view:
            written = os.pwrite(self._fd, view, offset)
            view = view[written:]
            offset += written
        if end > self._size:
            self._size = end

    def truncate(self, size: int) -> None:
        os.ftruncate(self._fd, size)
        self._size = size

    def fsync(self) -> None:
        os.fsync(self._fd)

    def size(self) -> int:
        return self._size

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)


class _OSLock:
    def __init__(self, fs: OSFileSystem, key: str, fd: int, shared: bool) -> None:
        self._fs = fs
        self._key = key
        self._fd = fd
        self._shared = shared

    def release(self) -> None:
        if self._fd < 0:
            return
        fd, self._fd = self._fd, -1
        with self._fs._registry_lock:
            holders = self._fs._registry.get(self._key, 0)
            if holders > 1:
                self._fs._registry[self._key] = holders - 1
            else:
                self._fs._registry.pop(self._key, None)
        os.close(fd)  # closing the descriptor drops the flock


class OSFileSystem:
    """The real file system.  Locks combine ``fcntl.flock`` with a registry of this process's holders."""

    # path -> holders: -1 for an exclusive holder, n > 0 for n shared holders.  One for the whole process.
    _registry: ClassVar[dict[str, int]] = {}
    _registry_lock = threading.Lock()

    def open(self, path: str, *, write: bool = False, create: bool = False) -> OSFile:
        if create:
            flags = os.O_RDWR | os.O_CREAT | os.O_EXCL
        elif write:
            flags = os.O_RDWR
        else:
            flags = os.O_RDONLY
        fd = os.open(path, flags | os.O_CLOEXEC, 0o644)
        return OSFile(path, fd)

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def isdir(self, path: str) -> bool:
        return os.path.isdir(path)

    def mkdir(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)

    def listdir(self, path: str) -> list[str]:
        return os.listdir(path)

    def rename(self, src: str, dst: str) -> None:
        os.replace(src, dst)

    def unlink(self, path: str) -> None:
        os.unlink(path)

    def link(self, src: str, dst: str) -> None:
        os.link(src, dst)

    def sync_dir(self, path: str) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def lock(self, path: str, *, shared: bool = False) -> _OSLock:
        key = os.path.realpath(path)
        with self._registry_lock:
            holders = self._registry.get(key, 0)
            if holders < 0 or (holders > 0 and not shared):
                raise LockedError(errno.EAGAIN, "database is locked by this process", path)
            if shared:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            else:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                os.close(fd)
                raise LockedError(errno.EAGAIN, "database is locked by another process", path) from exc
            except BaseException:
                os.close(fd)
                raise
            self._registry[key] = holders + 1 if shared else -1
        return _OSLock(self, key, fd, shared)
