"""Fuzz opening a whole database directory whose files are fuzzed bytes (``KV.open``), then reading it all.

Property: any directory either opens, reads and closes or raises ``CorruptionError`` (or
``UnsupportedFormatError``); nothing else escapes and nothing hangs.  Input: a flags byte (``FIX``:
recompute every checksum of every file; 2: open read-only; 4: ``recovery="salvage"``; 8: after reading,
commit and merge every table), then the files in ``harness.pack_files`` form (meta0, meta1, numbered
tables and logs).  The KV's clock stands still at ``NOW``, so an input reads, expires and merges the same
way at every run.
"""

from __future__ import annotations

import contextlib
import logging

from harness import ALLOWED, FIX, KINDS, fix_meta, fix_table, fix_wal, run, unpack_files

from kvstore import KV, Config
from kvstore.simfs import SimFS

DIR = "/db"
#: the KV's clock (seconds): 2026-01-01 00:00 UTC, when some of the seed corpus's values have expired
#: (``make_corpus.BUILT_AT``)
NOW = 1767225600.0


def read_all(kv: KV) -> None:
    """Read everything every way: scans both ways, point reads, a cursor walk, check and stats."""
    items = list(kv.scan())
    list(kv.scan(reverse=True))
    for key, _ in items[:64]:
        kv.get(key)
    with kv.seek(b"") as cursor:
        for _ in range(64):
            if not cursor.valid:
                break
            cursor.next()
    with kv.seek_for_prev(b"\xff" * 8) as cursor:
        for _ in range(64):
            if not cursor.valid:
                break
            cursor.prev()
    kv.check()
    kv.stats()


def make_fs(files: list[tuple[int, int, bytes]], fix: bool) -> SimFS:
    """A file system holding the fuzzed directory (a later file of the same name replaces an earlier one)."""
    fs = SimFS()
    fs.mkdir(DIR)
    for kind, number, content in files:
        name = KINDS[kind] if kind < 2 else f"{number:06d}.{KINDS[kind]}"
        if fix:
            if kind < 2:
                content = fix_meta(content)
            elif KINDS[kind] == "sst":
                content = fix_table(content, number)
            else:
                content = fix_wal(content, number)
        path = f"{DIR}/{name}"
        if fs.exists(path):
            fs.unlink(path)
        file = fs.open(path, create=True)
        file.append(content)
        file.close()
    return fs


def check(data: bytes) -> None:
    """The property: opens, reads and closes, or raises an allowed error."""
    if not data:
        return
    flags = data[0]
    files = unpack_files(data[1:])
    if flags & 2 and not files:
        return  # no database to open read-only: FileNotFoundError, as docs/opening.md says
    fs = make_fs(files, bool(flags & FIX))
    config = Config(background=False, read_only=bool(flags & 2), recovery="salvage" if flags & 4 else "strict")
    with contextlib.suppress(*ALLOWED):
        kv = KV.open(DIR, config, fs=fs, clock=lambda: NOW)
        try:
            read_all(kv)
            if flags & 8 and not config.read_only:  # and write: a commit, then a merge of every table
                kv.set(b"fuzz", b"write")
                kv.compact(full=True)
        finally:
            kv.close()


def main() -> None:
    logging.getLogger("kvstore").setLevel(logging.CRITICAL)  # recovery notes on every other input
    run(check)


if __name__ == "__main__":
    main()
