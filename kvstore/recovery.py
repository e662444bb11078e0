"""Opening a database directory: creation, WAL replay, orphan files and salvage (DESIGN.md, "Recovery").

Open takes the directory's lock, loads the newest valid meta slot, opens
every table it names and replays every live log, oldest first, into the
memtable.  A torn tail of the last log is cut; damage anywhere before the
durable point is ``CorruptionError`` (or, with ``Config(recovery="salvage")``,
the valid prefix is kept and said in ``stats().recovery``).  A writable open
then deletes orphans (tables no valid slot names, logs below both slots'
``log_number``, its own meta temp files), restores a meta slot a crash left
half-rewritten, and goes on appending to the last log.  Nothing is deleted
that either valid slot names.

Invariants:
  - a directory with tables or logs but no meta slot never opens (as empty or otherwise);
  - every commit replayed takes the next sequence: a gap is a lost commit, not a crash;
  - after a writable open both meta slots are valid whenever either was written before.
"""

from __future__ import annotations

import os

from kvstore import record
from kvstore.core import Core, log
from kvstore.errors import CorruptionError
from kvstore.filenames import LOCK_NAME, LOG, META_TEMP_NAMES, TABLE, log_name, log_path, parse, table_name
from kvstore.metadata import Meta
from kvstore.sorted_file import TableReader
from kvstore.versions import VersionSet
from kvstore.view import Table
from kvstore.wal import WalWriter, replay_log

__all__ = ["Recovery", "abandon", "recover"]


class Recovery:
    """What open found: notes for ``stats().recovery`` and what replay read of each live log."""

    __slots__ = ("notes", "wal_bytes", "replayed", "dropped_logs")

    def __init__(self) -> None:
        self.notes: list[str] = []
        self.wal_bytes = 0  # bytes of log replayed (``stats().wal_bytes`` of a read-only KV)
        self.replayed: dict[int, tuple[int, bool]] = {}  # log number -> (valid end, header ok)
        self.dropped_logs: list[int] = []  # later logs a salvage gave up


def recover(kv: Core, versions: VersionSet) -> Recovery:
    """Open (or create) the database of ``kv``: see the module's docstring."""
    found = Recovery()
    fs, config = kv._fs, kv._config
    created_dir = _make_dir(kv)
    lock_path = kv._path(LOCK_NAME)
    lock_existed = fs.exists(lock_path)
    if not config.read_only:
        kv._file_lock = fs.lock(lock_path)
    elif lock_existed:
        kv._file_lock = fs.lock(lock_path, shared=True)
    names = fs.listdir(kv._dir)
    tables: set[int] = set()
    logs: set[int] = set()
    for name in names:
        parsed = parse(name)
        if parsed is not None:
            (tables if parsed[1] == TABLE else logs).add(parsed[0])
    meta = versions.metastore.load()
    if meta is None:
        if tables or logs:
            raise CorruptionError(kv._dir, -1, "table or log files but no meta slot: refusing to open as empty")
        if config.read_only or not config.create_if_missing:
            if not lock_existed and not config.read_only:
                fs.unlink(lock_path)  # leave the directory as it was found
            raise FileNotFoundError(f"no database at {kv._dir}")
        _create(kv, versions, created_dir, names)
        return found
    _check_counters(versions, meta)
    for number in meta.tables:
        if number not in tables:
            raise CorruptionError(kv._path(table_name(number)), -1, "table named by the meta is missing")
    opened: list[Table] = []  # filled as tables open, so a failed open closes those it opened
    versions.restore(meta, max([meta.next_file, *(n + 1 for n in tables | logs)]), opened, [])
    for number in meta.tables:
        opened.append(Table(TableReader(fs, kv._path(table_name(number)), number, kv._cache)))
    kv._seq = meta.last_sequence
    _replay(kv, versions, found, sorted(n for n in logs if n >= meta.log_number))
    with kv._lock:
        versions.install_view()
    if not config.read_only:
        _finish(kv, versions, found, names, tables, logs)
    return found


def _make_dir(kv: Core) -> bool:
    """Create the database directory when it is missing and may be; True when it was created."""
    fs, config = kv._fs, kv._config
    if fs.isdir(kv._dir):
        return False
    if fs.exists(kv._dir):
        raise NotADirectoryError(f"{kv._dir} is not a directory")
    if config.read_only or not config.create_if_missing:
        raise FileNotFoundError(f"no database at {kv._dir}")
    fs.mkdir(kv._dir)
    return True


def _check_counters(versions: VersionSet, meta: Meta) -> None:
    if max(meta.version, meta.next_file, meta.log_number, meta.last_sequence, *meta.tables) > record.MAX_COUNTER:
        store = versions.metastore
        assert store.newest is not None
        raise CorruptionError(store.path(store.newest), record.FILE_HEADER.size,
                              f"meta holds a counter past {record.MAX_COUNTER}: counting on would overflow")


def _create(kv: Core, versions: VersionSet, created_dir: bool, names: list[str]) -> None:
    """Write the first meta slot and log of a new database."""
    for name in names:
        if name in META_TEMP_NAMES:
            kv._fs.unlink(kv._path(name))
    if created_dir:
        kv._fs.sync_dir(os.path.dirname(os.path.abspath(kv._dir)))
    meta = Meta(1, 2, 1, 0, ())
    versions.metastore.write(meta)
    versions.restore(meta, 2, [], [1])
    kv._wal = WalWriter.create(kv._fs, kv._dir, log_path(kv._dir, 1), 1)
    kv._wal.fsyncs = kv._metrics.fsync


def _replay(kv: Core, versions: VersionSet, found: Recovery, logs: list[int]) -> None:
    """Apply every commit of the live logs to the memtable, in order."""
    strict = kv._config.recovery == "strict"
    last_sequence = versions.meta.last_sequence
    for i, number in enumerate(logs):
        path = kv._path(log_name(number))
        last = i == len(logs) - 1
        result = replay_log(kv._fs, path, number, last=last, strict=strict)
        found.wal_bytes += result.valid_end
        for seq, writes in result.commits:
            if seq != kv._seq + 1 and seq > last_sequence:
                # every commit takes the next sequence: a gap is a lost commit, not a crash
                raise CorruptionError(path, -1, f"sequence {seq} follows {kv._seq}: a commit is missing")
            if seq <= kv._seq:
                if seq <= last_sequence:
                    continue  # already in a table
                raise CorruptionError(path, -1, f"sequence {seq} does not follow {kv._seq}")
            kv._mem.apply_many([(seq, writes)])
            kv._seq = seq
        found.replayed[number] = (result.valid_end, result.header_ok)
        versions.logs.append(number)
        if result.damage is not None:
            offset, reason = result.damage
            if last and not result.salvaged:
                note = f"{path}: torn tail at offset {offset} ({reason}); {result.size - offset} bytes dropped"
                log.info("%s", note)
            else:
                note = (f"{path}: salvage kept the valid prefix up to offset {offset} ({reason}); "
                        f"dropped {result.size - offset} bytes and later logs {logs[i + 1 :]}")
                log.warning("%s", note)
            found.notes.append(note)
            if not last:
                found.dropped_logs = logs[i + 1 :]
                break


def _finish(kv: Core, versions: VersionSet, found: Recovery, names: list[str], tables: set[int],
            logs: set[int]) -> None:
    """Writable open: drop what salvage gave up, restore a half-written meta slot, delete orphans, keep
    appending to the last log."""
    fs = kv._fs
    for number in found.dropped_logs:
        fs.unlink(kv._path(log_name(number)))
    store = versions.metastore
    invalid = [s.error for s in store.slots if s.error is not None]
    if versions.next_file > versions.meta.next_file or invalid:
        # numbers seen on disk (orphans included) are never handed out again; an invalid slot (a crash
        # between the two writes of a slot rewrite, or damage) is the one written next: valid again
        versions.bump()
    for error in invalid:
        note = f"{error.path}: invalid meta slot ({error.reason}) rewritten from the newest valid one"
        log.warning("%s", note)
        found.notes.append(note)
    meta = versions.meta
    named = store.named_tables()
    min_log = store.min_log_number()
    for name in names:
        parsed = parse(name)
        orphan_table = parsed is not None and parsed[1] == TABLE and parsed[0] not in named
        orphan_log = parsed is not None and parsed[1] == LOG and parsed[0] < min_log
        own_temp = name in META_TEMP_NAMES  # other *.tmp are not ours
        if own_temp and not fs.exists(kv._path(name)):
            continue  # the meta write above already renamed it into place
        if own_temp or orphan_table or orphan_log:
            fs.unlink(kv._path(name))
    # files the other valid slot still names go one meta write later
    for number in tables & named:
        if number not in meta.tables:
            versions.doom(table_name(number), meta.version)
    for number in logs:
        if min_log <= number < meta.log_number:
            versions.doom(log_name(number), meta.version)
    if versions.logs:
        number = versions.logs[-1]
        valid_end, header_ok = found.replayed[number]
        kv._wal = WalWriter.reopen(fs, kv._path(log_name(number)), number, valid_end, header_ok)
        kv._wal.fsyncs = kv._metrics.fsync
    else:
        number, kv._wal = versions.new_log(reserve=1)


def abandon(kv: Core, versions: VersionSet) -> None:
    """Give back what a failed open took."""
    kv._closed = True
    if kv._wal is not None:
        kv._wal.close()
    versions.close_files()
    if kv._file_lock is not None:
        kv._file_lock.release()
