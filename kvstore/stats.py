"""``Stats`` and ``TableStats``: the picture of one open KV that ``KV.stats()`` takes (docs/operations.md,
"stats()"), and the counts ``KV.metrics_text()`` exposes beside its latencies."""

from __future__ import annotations

import builtins

import attrs

from kvstore.spacestats import CollectionStats

__all__ = ["Stats", "TableStats"]


@attrs.frozen
class TableStats:
    """One live table, as ``Stats.tables`` lists them (newest first)."""

    name: str
    """Its file name in the database directory (``NNNNNN.sst``)."""
    file_number: int
    """The number in its name and header."""
    entries: int
    """Versions it holds, deletes included."""
    deletes: int
    """Deletes (tombstones) among them."""
    bytes: int
    """Its size on disk."""
    smallest: builtins.bytes
    """Its smallest key."""
    largest: builtins.bytes
    """Its largest key."""
    min_sequence: int
    """The lowest sequence number of its versions."""
    max_sequence: int
    """The highest sequence number of its versions."""
    expiring: int = 0
    """Versions among them set with a ``ttl`` (expired or not yet)."""


@attrs.frozen
class Stats:
    """A picture of a KV at one moment (``KV.stats()``); counters count since this open."""

    sequence: int
    """The last sequence number published: every commit so far is at or below it."""
    tables: tuple[TableStats, ...]
    """The live tables, newest first."""
    memtable_bytes: int
    """Bytes of keys and values in the memtable and the frozen memtables waiting for their flush."""
    memtable_entries: int
    """Versions in those memtables."""
    immutable_memtables: int
    """Frozen memtables waiting for their flush (at most 2 before commits stall)."""
    wal_bytes: int
    """Bytes of the log commits are appended to (of the logs replayed, for a read-only KV)."""
    live_snapshots: int
    """Readers holding a snapshot: open scans, cursors, transactions and backups."""
    oldest_snapshot: int | None
    """The oldest snapshot's sequence number; None when there is none."""
    oldest_snapshot_age: float | None
    """Seconds since the oldest snapshot was taken; None when there is none."""
    flushes: int
    """Memtables written to tables."""
    merges: int
    """Merges of tables into one."""
    bytes_written: int
    """Bytes the engine wrote: logs, tables and meta slots."""
    user_bytes: int
    """Bytes of keys and values committed."""
    disk_bytes: int
    """Bytes of the database's own files in its directory now."""
    cache_hits: int
    """Block reads the block cache answered."""
    cache_misses: int
    """Block reads that went to the file."""
    recovery: tuple[str, ...]
    """What the open that made this KV found and did: torn tails cut, salvages, meta slots rewritten."""
    failed: str | None
    """Why the KV stopped accepting writes after an error; None while it has not."""
    write_stalls: int = 0
    """Commits that waited because flushing fell behind (immutable memtables at their bound)."""
    stall_seconds: float = 0.0
    """Seconds commits spent waiting so."""
    tracked_writes: int = 0
    """Keys of committed write sets kept because a live transaction may conflict with them."""
    expired: int = 0
    """Expired versions that flushes and merges dropped (each became a delete, or nothing at all)."""
    collections: tuple[CollectionStats, ...] = ()
    """Each collection that holds a key (``kv.collections()``): its keys and bytes, counted or estimated."""
    gets: int = 0
    """Calls of ``KV.get``."""
    commits: int = 0
    """Commits that succeeded: transactions and one-operation writes (a delete of an absent key is none)."""
    conflicts: int = 0
    """Commits refused with ``ConflictError``."""
    bloom_negatives: int = 0
    """Table lookups of a key that a table's bloom filter ruled out (no block read)."""
    bloom_false_positives: int = 0
    """Table lookups of a key that a table's bloom filter passed though the table lacks it."""

    @property
    def write_amplification(self) -> float:
        """Bytes the engine wrote (WAL, tables, meta) per byte of keys and values committed."""
        return self.bytes_written / self.user_bytes if self.user_bytes else 0.0
