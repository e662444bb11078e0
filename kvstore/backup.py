"""``KV.backup()``: a consistent copy of a database as of one snapshot, made while it stays in use
(DESIGN.md, "Backup").

Each table of the snapshot's view is hard-linked into the destination under
its own number (copied when linking fails, e.g. across file systems); the
memtables' entries and range tombstones up to the snapshot become one new
table (what the tombstones cover there dropped, the tombstones kept for
the tables below); a fresh meta
naming them is written last, after the directory is fsynced, so a backup cut
short leaves a directory that refuses to open, never a partial database.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

from kvstore import record
from kvstore.builder import build_table
from kvstore.core import Core
from kvstore.covered import visible
from kvstore.filenames import table_name, table_path
from kvstore.fs import FileSystem
from kvstore.merge import compact_chunks, entry_chunks_of
from kvstore.metadata import Meta, MetaStore
from kvstore.rangedel import Fragments
from kvstore.snapshot import Reader
from kvstore.sorted_array import Memtable

__all__ = ["backup"]

Progress = Callable[[int, int], None]


def backup(kv: Core, dest: str | os.PathLike[str], progress: Progress | None) -> list[tuple[str, str]]:
    """Copy the database of ``kv`` into ``dest``; see ``KV.backup``."""
    fs = kv._fs
    dirpath = os.fspath(dest)
    if fs.exists(dirpath) and (not fs.isdir(dirpath) or fs.listdir(dirpath)):
        raise FileExistsError(f"{dirpath} exists and is not an empty directory")
    reader = Reader(kv, None)
    try:
        view, snapshot = reader.view, reader.snapshot
        fs.mkdir(dirpath)
        fs.sync_dir(os.path.dirname(os.path.abspath(dirpath)))
        total = len(view.readers) + 1
        done: list[tuple[str, str]] = []
        numbers: list[int] = []
        for table in view.readers:  # immutable, and alive while the view is held
            assert table.max_seq <= snapshot, (table.path, table.max_seq, snapshot)
            name = table_name(table.file_number)
            numbers.append(table.file_number)
            try:
                fs.link(table.path, os.path.join(dirpath, name))
                done.append((name, "linked"))
            except OSError:  # another file system, no hard links, too many links: a copy surfaces real errors
                _copy_file(fs, table.path, os.path.join(dirpath, name))
                done.append((name, "copied"))
            if progress is not None:
                progress(len(done), total)
        number = max((t.file_number for t in view.readers), default=0) + 1
        bottom = not view.readers
        ranges = Fragments([], [], []).merge(*(f for m in view.mems if m.ranges
                                               if (f := visible(m.fragments(), snapshot)) is not None))
        chunks = compact_chunks([entry_chunks_of(_visible(m, snapshot)) for m in view.mems], [], bottom, ranges or None)
        kept = ranges.retained([], bottom) if ranges else None
        if build_table(fs, table_path(dirpath, number), number, kv._config, chunks, kept) is not None:
            done.insert(0, (table_name(number), "written"))
            numbers.insert(0, number)
        if progress is not None:
            progress(total, total)
        fs.sync_dir(dirpath)  # every table's entry is durable before the meta names it
        meta_format = record.META_FORMAT_VERSION if not kv._legacy else 1  # a copy keeps its keys' format
        MetaStore(fs, dirpath).write(Meta(1, number + 2, number + 1, snapshot, tuple(numbers), meta_format))
        return done
    finally:
        reader.release()


def _visible(mem: Memtable, snapshot: int) -> Iterator[tuple[bytes, int, bytes | None]]:
    """The version of each key of ``mem`` that ``snapshot`` sees, as table entries."""
    for key, _ in mem.items(None, snapshot):
        found = mem.get(key, snapshot)  # kept: the reader's snapshot holds it
        assert found is not None
        yield key, found[0], found[1]


def _copy_file(fs: FileSystem, src: str, dst: str) -> None:
    """Copy file ``src`` to a new file ``dst`` and fsync it."""
    source = fs.open(src)
    try:
        target = fs.open(dst, create=True)
        try:
            size = source.size()
            offset = 0
            while offset < size:
                chunk = source.pread(min(1 << 20, size - offset), offset)
                if not chunk:
                    raise OSError(f"{src} ended at {offset} of {size} bytes while it was copied")
                target.append(chunk)
                offset += len(chunk)
            target.fsync()
        finally:
            target.close()
    finally:
        source.close()
