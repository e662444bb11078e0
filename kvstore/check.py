"""``KV.check()``: every checksum and order of every live table, both meta slots, the live logs, and the
sequence order of tables, read again from disk (DESIGN.md, "Checking a database").

The check leads the write queue and holds the live set while it lists the
files, so no commit, flush or merge changes them meanwhile; it then reads
every table without the block cache, holding a reader so the files stay.
"""

from __future__ import annotations

from kvstore.commit import CommitPipeline
from kvstore.core import Core
from kvstore.errors import CorruptionError, UnsupportedFormatError
from kvstore.filenames import log_name, table_name
from kvstore.keyspace import prefix_of, split
from kvstore.snapshot import Reader
from kvstore.sorted_file import BlockCache, TableReader
from kvstore.versions import VersionSet, sequence_disorder
from kvstore.wal import replay_log

__all__ = ["check"]


def check(kv: Core, versions: VersionSet, pipeline: CommitPipeline) -> list[str]:
    """The problems found in the database of ``kv`` (empty when it is healthy)."""
    problems: list[str] = []
    with pipeline.exclusive(), versions.lock:  # no commit, flush or merge changes the files meanwhile
        pin = Reader(kv, None)  # keeps these tables' files until the check is done
        tables = list(versions.tables)
        meta = versions.meta
        problems.extend(_metas_and_logs(kv, versions))
    try:
        for t in tables:
            try:  # the header, footer, index, bloom and properties, read again from disk
                TableReader(kv._fs, t.reader.path, t.reader.file_number, BlockCache(0)).close()
            except (CorruptionError, UnsupportedFormatError, FileNotFoundError) as exc:
                problems.append(str(exc))
            problems.extend(t.reader.verify())
        if not kv._legacy and not problems:
            problems.extend(_stray_keys(pin, kv._dir))
    finally:
        pin.release()
    problems.extend(sequence_disorder(tables))
    for t in tables:
        if t.reader.max_seq > meta.last_sequence:
            problems.append(f"{table_name(t.reader.file_number)}: sequence {t.reader.max_seq} is past the "
                            f"meta's last sequence {meta.last_sequence}")
    return problems


def _stray_keys(reader: Reader, where: str) -> list[str]:
    """A live key from ``FF`` on that no key space stores (neither the KV's own escaped, nor a collection's:
    DESIGN.md, "Collections"), as a problem: one walk over the live keys from ``FF``, a split of the first
    key under each prefix.  Live keys only: an upgraded database's tables keep the raw keys of meta format
    1 from ``FF`` on until merges drop them, each deleted by the upgrade."""
    prefix: bytes | None = None
    for key, _ in reader.items(b"\xff", False, True):
        if prefix is not None and key.startswith(prefix):
            continue
        try:
            name = split(key, where, -1)[0]
        except CorruptionError as exc:
            return [str(exc)]
        prefix = None if name is None else prefix_of(name)
    return []


def _metas_and_logs(kv: Core, versions: VersionSet) -> list[str]:
    """Problems in the meta slots and the live logs, read again from disk (no commit runs meanwhile)."""
    problems: list[str] = []
    for slot in (0, 1):
        try:
            state = versions.metastore.read_slot(slot)
        except UnsupportedFormatError as exc:
            problems.append(str(exc))
            continue
        if state.error is not None:
            problems.append(str(state.error))
    logs = versions.logs
    for i, number in enumerate(logs):
        path = kv._path(log_name(number))
        last = i == len(logs) - 1
        try:
            result = replay_log(kv._fs, path, number, last=last)
        except (CorruptionError, UnsupportedFormatError, FileNotFoundError) as exc:
            problems.append(str(exc))
            continue
        # a read-only KV leaves the torn tail it found in place; a writable one cut it at open
        if result.damage is not None and not (last and kv._read_only):
            problems.append(f"{path} at offset {result.damage[0]}: {result.damage[1]}")
    return problems
