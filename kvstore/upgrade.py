"""The upgrade of a version-1 database to meta format 2 (``keyspace``), made by its first writable open.

In a version-1 database the KV's own keys that start with ``FF`` are stored as
they are; format 2 stores them as ``FF 00`` and the rest, so that collections
can live above ``FF 01``.  The upgrade moves them with one meta write:

  1. every memtable is flushed, so the last sequence ``S`` is in tables;
  2. one table is written holding, at sequence ``S + 1``, a delete of each such
     key as stored and its value under the escaped key (a raw key that equals
     another's escaped form keeps the value: both moved);
  3. one meta write names that table as the newest and says format 2.

A crash before step 3 leaves the version-1 meta, which names no new table (the
orphan is deleted at the next open, which upgrades again); after it, the
database is format 2.  A database with no such key is upgraded by the meta
write alone.
"""

from __future__ import annotations

from kvstore import record
from kvstore.config import MAX_KEY_SIZE_CAP
from kvstore.core import Core, log
from kvstore.errors import KeyOrValueTooLargeError
from kvstore.jobs import Jobs
from kvstore.keyspace import stored
from kvstore.snapshot import Reader, get_in
from kvstore.versions import VersionSet

__all__ = ["upgrade"]


def upgrade(kv: Core, versions: VersionSet, jobs: Jobs) -> int:
    """Upgrade the database of a KV just recovered (no background work yet) to the newest meta format;
    returns how many keys moved.  ``KeyOrValueTooLargeError`` when a key starting with ``FF`` is too long
    to store escaped (65,535 bytes): nothing is changed, and the database opens only read-only."""
    jobs.flush_on_close()  # every memtable into a table: the upgrade's table is then the newest level
    moved = _moving(kv)
    with versions.lock:
        if not moved:
            versions.bump(format=record.META_FORMAT_VERSION)
            return 0
        seq = kv._seq + 1
        writes: dict[bytes, bytes | None] = {key: None for key, _ in moved}
        writes.update((stored(key), value) for key, value in moved)
        keys = sorted(writes)
        number = versions.new_number()
    table = jobs._write_table(number, [iter([(keys, [seq] * len(keys), [writes[k] for k in keys])])], False,
                              None, None)
    assert table is not None

    def published() -> None:
        kv._seq = seq

    with versions.lock:
        versions.swap([], table, published, last_sequence=seq, meta_format=record.META_FORMAT_VERSION)
    log.info("kvstore upgraded %s to meta format %d: %d keys starting with FF moved", kv._dir,
             record.META_FORMAT_VERSION, len(moved))
    return len(moved)


def _moving(kv: Core) -> list[tuple[bytes, bytes]]:
    """The live keys starting with ``FF`` and their values as stored (an expiring value with its expiry)."""
    reader = Reader(kv, None)
    try:
        keys = [key for key, _ in reader.items(b"\xff", False, True)]
        moved = []
        for key in keys:
            value = get_in(reader.view, key, reader.snapshot, None)
            if value is None:
                continue
            if len(key) + 1 > MAX_KEY_SIZE_CAP:
                raise KeyOrValueTooLargeError(f"key of {len(key)} bytes starting with FF cannot be stored escaped")
            moved.append((key, value))
        return moved
    finally:
        reader.release()
