"""The double-buffered meta files meta0 and meta1: which tables and logs are live.

Each slot holds a whole ``Meta`` with a version counter and a CRC32C
(DESIGN.md, "Meta slots").  A write always goes to the slot that does not hold
the newest valid meta, so a torn write leaves the newest one intact.  A
missing slot is created through a temp file, fsync, rename and directory
fsync; an existing one is overwritten in place and fsynced.  Open picks the
newest valid slot; both present and invalid is ``CorruptionError``.

Invariants:
  - after a write of version v, the written slot holds v and the other slot holds v - 1 or nothing;
  - a file named by either valid slot is never deleted (``named_tables``/``min_log_number``).
"""

from __future__ import annotations

import os

import attrs

from kvstore import record
from kvstore.errors import CorruptionError
from kvstore.filenames import META_NAMES, META_TEMP_NAMES
from kvstore.fs import FileSystem

__all__ = ["META_NAMES", "Meta", "MetaStore", "SlotState"]


@attrs.frozen
class Meta:
    """The live state of a database: its tables (newest first) and logs.

    ``log_number`` is the lowest live log: every log numbered at or above it
    is replayed.  ``last_sequence`` is the newest sequence held in tables.
    """

    version: int
    next_file: int
    log_number: int
    last_sequence: int
    tables: tuple[int, ...]
    format: int = record.META_FORMAT_VERSION
    """The meta format version: 1 for a database whose keys starting with ``FF`` are not yet escaped."""


@attrs.frozen
class SlotState:
    """What one slot file holds: absent, invalid (with the error) or a valid Meta."""

    name: str
    present: bool
    meta: Meta | None = None
    error: CorruptionError | None = None


class MetaStore:
    """Reads and writes the two meta slots of one database directory."""

    def __init__(self, fs: FileSystem, dirpath: str) -> None:
        self._fs = fs
        self._dir = dirpath
        self.slots: list[SlotState] = [SlotState(n, False) for n in META_NAMES]
        self.newest: int | None = None  # index of the slot holding the newest valid meta

    def path(self, slot: int) -> str:
        return os.path.join(self._dir, META_NAMES[slot])

    def read_slot(self, slot: int) -> SlotState:
        """Read one slot; raises only ``UnsupportedFormatError`` and OS errors."""
        path = self.path(slot)
        name = META_NAMES[slot]
        if not self._fs.exists(path):
            return SlotState(name, False)
        file = self._fs.open(path)
        try:
            buf = file.pread(file.size(), 0)
        finally:
            file.close()
        try:
            fields = record.decode_meta(buf, path, slot)
        except CorruptionError as exc:
            return SlotState(name, True, error=exc)
        version, next_file, log_number, last_sequence, tables = fields
        found = record.decode_file_header(buf, path, record.META_MAGIC, slot)  # checked by decode_meta
        return SlotState(name, True, meta=Meta(version, next_file, log_number, last_sequence, tuple(tables),
                                               found))

    def load(self) -> Meta | None:
        """The newest valid meta; None when neither slot exists.  Both present and invalid (or one
        invalid and the other absent): ``CorruptionError`` naming the newest damage."""
        self.slots = [self.read_slot(0), self.read_slot(1)]
        valid = [i for i, s in enumerate(self.slots) if s.meta is not None]
        if not valid:
            damaged = [s.error for s in self.slots if s.error is not None]
            if damaged:
                first = damaged[0]
                assert first is not None
                raise CorruptionError(first.path, first.offset, f"no valid meta slot: {first.reason}")
            self.newest = None
            return None
        self.newest = max(valid, key=lambda i: self.slots[i].meta.version)  # type: ignore[union-attr]
        return self.slots[self.newest].meta

    def valid_metas(self) -> list[Meta]:
        return [s.meta for s in self.slots if s.meta is not None]

    def named_tables(self) -> set[int]:
        """Table numbers named by either valid slot."""
        return {t for m in self.valid_metas() for t in m.tables}

    def min_log_number(self) -> int:
        """The lowest live log number of either valid slot (logs at or above it must be kept)."""
        metas = self.valid_metas()
        return min(m.log_number for m in metas) if metas else 0

    def write(self, meta: Meta) -> int:
        """Write ``meta`` durably into the slot that does not hold the newest valid meta; returns the
        number of bytes written."""
        slot = 0 if self.newest is None else 1 - self.newest
        data = record.encode_meta(slot, meta.version, meta.next_file, meta.log_number, meta.last_sequence,
                                  meta.tables, meta.format)
        path = self.path(slot)
        fs = self._fs
        # always a new file renamed over the slot: a crash (or a kill) at any moment leaves the slot whole,
        # old or new, never an old slot partly overwritten (which ``check()`` would rightly call damaged)
        tmp = os.path.join(self._dir, META_TEMP_NAMES[slot])
        if fs.exists(tmp):
            fs.unlink(tmp)
        file = fs.open(tmp, create=True)
        try:
            file.append(data)
            file.fsync()
        finally:
            file.close()
        fs.rename(tmp, path)
        fs.sync_dir(self._dir)
        self.slots[slot] = SlotState(META_NAMES[slot], True, meta=meta)
        self.newest = slot
        return len(data)
