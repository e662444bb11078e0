"""Every exception kvstore raises on purpose: a small closed set under KVError.

Each class subclasses the builtin that matches its meaning, so callers that
catch ``ValueError`` or ``OSError`` keep working.  Nothing here imports any
other kvstore module (this is the lowest layer).
"""

from __future__ import annotations

import os

__all__ = [
    "BadChecksumError",
    "ClosedError",
    "ConflictError",
    "CorruptSSTableError",
    "CorruptionError",
    "FailedError",
    "InvalidCursorError",
    "KVError",
    "KeyOrValueTooLargeError",
    "LockedError",
    "ReadOnlyError",
    "TxClosedError",
    "UnsupportedFormatError",
]


class KVError(Exception):
    """Raised when kvstore fails on purpose: the base class of every error it raises."""


class CorruptionError(KVError):
    """Raised when bytes read back from disk are not what kvstore wrote.

    ``path`` names the damaged file and ``offset`` the byte offset of the
    damaged structure in it (``-1`` when the damage is not at one place, for
    example a missing file named by the meta).
    """

    def __init__(self, path: str | os.PathLike[str], offset: int, reason: str) -> None:
        self.path = os.fspath(path)
        """The damaged file."""
        self.offset = offset
        """The byte offset of the damaged structure in ``path``; ``-1`` when the damage is not at one place."""
        self.reason = reason
        """What is wrong, in words."""
        super().__init__(f"{self.path} at offset {offset}: {reason}")

    def __reduce__(self) -> tuple[type[CorruptionError], tuple[str, int, str]]:
        return (type(self), (self.path, self.offset, self.reason))


class BadChecksumError(CorruptionError):
    """Raised when a CRC32C stored on disk does not match the bytes it covers."""


class CorruptSSTableError(CorruptionError):
    """Raised when a table file is damaged: a block, the index, the bloom filter or the footer."""


class UnsupportedFormatError(KVError):
    """Raised when a file carries a format version newer than this kvstore reads."""


class KeyOrValueTooLargeError(KVError, ValueError):
    """Raised when a key, a value or a whole transaction exceeds the configured or format limit."""


class TxClosedError(KVError):
    """Raised when a transaction is used after commit() or abort()."""


class ConflictError(KVError):
    """Raised when commit() finds that a concurrent commit wrote what this transaction read; nothing was applied."""


class ClosedError(KVError, ValueError):
    """Raised when a KV, or a cursor, scan or transaction opened on it, is used after close()."""


class LockedError(KVError, OSError):
    """Raised when KV.open() finds another KV, in this process or another, holding the directory's lock."""


class FailedError(KVError, OSError):
    """Raised when an I/O error on the durability path stopped the KV; writes fail until it is reopened."""


class InvalidCursorError(KVError):
    """Raised when reading or moving a cursor that is not positioned on a key."""


class ReadOnlyError(KVError, PermissionError):
    """Raised when writing through a KV opened with ``Config(read_only=True)``."""
