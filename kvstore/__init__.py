"""kvstore: an embedded, transactional, crash-safe key-value store (an LSM tree) in pure Python.

>>> import tempfile, kvstore
>>> with kvstore.KV.open(tempfile.mkdtemp()) as kv:
...     kv.set(b"k", b"v")
...     kv.get(b"k")
b'v'
"""

from kvstore.collection import Collection
from kvstore.config import Config
from kvstore.cursor import Cursor
from kvstore.errors import (
    BadChecksumError,
    ClosedError,
    ConflictError,
    CorruptionError,
    CorruptSSTableError,
    FailedError,
    InvalidCursorError,
    KeyOrValueTooLargeError,
    KVError,
    LockedError,
    ReadOnlyError,
    TxClosedError,
    UnsupportedFormatError,
)
from kvstore.fs import FileSystem, OSFileSystem
from kvstore.spacestats import CollectionStats
from kvstore.store import KV, Stats, TableStats
from kvstore.trace import BlockRead, Step, Trace
from kvstore.transaction import KVTX

__version__ = "0.1.0"

__all__ = [
    "KV",
    "KVTX",
    "BadChecksumError",
    "BlockRead",
    "ClosedError",
    "Collection",
    "CollectionStats",
    "Config",
    "ConflictError",
    "CorruptSSTableError",
    "CorruptionError",
    "Cursor",
    "FailedError",
    "FileSystem",
    "InvalidCursorError",
    "KVError",
    "KeyOrValueTooLargeError",
    "LockedError",
    "OSFileSystem",
    "ReadOnlyError",
    "Stats",
    "Step",
    "TableStats",
    "Trace",
    "TxClosedError",
    "UnsupportedFormatError",
    "__version__",
]
