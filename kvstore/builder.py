"""Building one table file from ordered entries (LevelDB's ``BuildTable``): used by flushes, merges and
backups alike.

The entries come in chunks of parallel lists (keys, sequences, values), in
table order (keys ascending, sequences descending), already filtered by the
merge rules (``merge.compact_chunks``).
The file is created, written, fsynced and closed here; an empty input leaves
no file behind.  The caller fsyncs the directory before any meta names the
table (DESIGN.md, "Directory layout").
"""

from __future__ import annotations

from collections.abc import Iterable

from kvstore.config import Config
from kvstore.fs import FileSystem
from kvstore.rangedel import Fragments
from kvstore.table_writer import TableInfo, TableWriter

__all__ = ["build_table"]


def build_table(fs: FileSystem, path: str, number: int, config: Config,
                chunks: Iterable[tuple[list[bytes], list[int], list[bytes | None]]],
                fragments: Fragments | None = None) -> TableInfo | None:
    """Write the entries of ``chunks`` and the range tombstones ``fragments`` as table ``number`` at
    ``path``, fsynced; None (and no file) when there are neither.

    Raises ``OSError`` from the file system; the half-written file is then left for the next open's
    orphan sweep (no meta names it)."""
    file = fs.open(path, create=True)
    try:
        writer = TableWriter(file, number, config.block_size, config.bloom_bits_per_key)
        for keys, seqs, values in chunks:
            writer.add_chunk(keys, seqs, values)
        info = writer.finish(fragments) if writer.num_entries or fragments else None
    finally:
        file.close()
    if info is None:
        fs.unlink(path)
    return info
