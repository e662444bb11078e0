"""What the SSTable tests share (tests/test_sorted_file.py, tests/test_table_checks.py): writing a table
of entries and opening it, entries with several versions of each key, and a model of what a table read
returns."""

from __future__ import annotations

import os
import pathlib
from collections.abc import Iterable

from kvstore.fs import OSFileSystem
from kvstore.sorted_file import BlockCache, TableReader
from kvstore.table_writer import TableInfo, TableWriter

Entry = tuple[bytes, int, "bytes | None"]
FS = OSFileSystem()


def _write(dirpath: str | pathlib.Path, number: int, entries: Iterable[Entry], block_size: int = 4096,
           bloom_bits: int = 10) -> tuple[str, TableInfo]:
    path = os.path.join(dirpath, f"{number:06d}.sst")
    file = FS.open(path, create=True)
    try:
        writer = TableWriter(file, number, block_size, bloom_bits)
        writer.add_all(entries)
        info = writer.finish()
    finally:
        file.close()
    return path, info


def _open(path: str, number: int, cache: BlockCache | None = None) -> TableReader:
    return TableReader(FS, path, number, cache if cache is not None else BlockCache(1 << 20))


def _versioned_entries(nkeys: int, value_size: int = 20) -> list[Entry]:
    """Keys k00000.. with 1-3 versions each (some deletes), sequences unique, table order."""
    out: list[Entry] = []
    seq = 10 * nkeys
    for i in range(nkeys):
        key = b"k%05d" % i
        for v in range(1 + i % 3):
            value = None if (i + v) % 7 == 0 else (b"%d.%d:" % (i, v)) * (value_size // 8 + 1)
            out.append((key, seq, value))
            seq -= 1
    return out


_MODELS: dict[int, tuple[list[Entry], dict[bytes, list[tuple[int, bytes | None]]]]] = {}


def _versions(entries: list[Entry]) -> dict[bytes, list[tuple[int, bytes | None]]]:
    """Each key's versions, newest first (memoized per entries list)."""
    cached = _MODELS.get(id(entries))
    if cached is None or cached[0] is not entries:
        by_key: dict[bytes, list[tuple[int, bytes | None]]] = {}
        for k, seq, value in entries:
            by_key.setdefault(k, []).append((seq, value))
        cached = _MODELS[id(entries)] = (entries, by_key)
    return cached[1]


def _model_get(entries: list[Entry], key: bytes, snapshot: int) -> tuple[int, bytes | None] | None:
    for seq, value in _versions(entries).get(key, []):
        if seq <= snapshot:
            return seq, value
    return None


def _model_items(entries: list[Entry], start: bytes | None, snapshot: int, reverse: bool,
                 inclusive: bool) -> list[tuple[bytes, bytes | None]]:
    keys = sorted(_versions(entries), reverse=reverse)
    out = []
    for key in keys:
        if start is not None:
            if not reverse and (key < start or (key == start and not inclusive)):
                continue
            if reverse and (key > start or (key == start and not inclusive)):
                continue
        found = _model_get(entries, key, snapshot)
        if found is not None:
            out.append((key, found[1]))
    return out
