"""Building one table file from ordered entries (LevelDB's ``BuildTable``): used by flushes, merges and
backups alike.

The entries must come in table order (keys ascending, sequences
descending), already filtered by the merge rules (``merge.compact_entries``).
The file is created, written, fsynced and closed here; an empty input leaves
no file behind.  The caller fsyncs the directory before any meta names the
table (DESIGN.md, "Directory layout").
"""

from __future__ import annotations

from collections.abc import Iterable

from kvstore.config import Config
from kvstore.fs import FileSystem
from kvstore.table_writer import TableInfo, TableWriter

__all__ = ["build_table"]


def build_table(fs: FileSystem, path: str, number: int, config: Config,
                entries: Iterable[tuple[bytes, int, bytes | None]]) -> TableInfo | None:
    """Write ``entries`` as table ``number`` at ``path``, fsynced; None (and no file) when there are none.

    Raises ``OSError`` from the file system; the half-written file is then left for the next open's
    orphan sweep (no meta names it)."""
    file = fs.open(path, create=True)
    try:
        writer = TableWriter(file, number, config.block_size, config.bloom_bits_per_key)
        writer.add_all(entries)
        info = writer.finish() if writer.num_entries else None
    finally:
        file.close()
    if info is None:
        fs.unlink(path)
    return info
