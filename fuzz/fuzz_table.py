"""Fuzz a whole table file: header, footer, index, bloom, properties, then every block (``TableReader``).

Property: any file either opens and reads or raises ``CorruptionError`` (or ``UnsupportedFormatError``);
nothing else escapes and nothing hangs.  Input: a flags byte (``FIX``: recompute every checksum the footer
and index lead to; 2: no block cache), then the file's bytes.
"""

from __future__ import annotations

import contextlib

from harness import ALLOWED, FIX, fix_table, header_number, run

from kvstore.simfs import SimFS
from kvstore.sorted_file import BlockCache, TableReader

NEWEST = 2**64 - 1


def read_all(reader: TableReader) -> None:
    """Read every entry every way a store does: iteration both ways, seeks, point lookups, verify."""
    keys = [key for key, _, _ in reader.entries()]
    reader.verify()
    for snapshot in (0, NEWEST):
        list(reader.items(None, snapshot))
        list(reader.items(None, snapshot, reverse=True))
    for key in [*keys[:: max(1, len(keys) // 8)], b"", b"\xff" * 4]:
        reader.may_contain(len(key))
        reader.get(key, NEWEST)
        for reverse in (False, True):
            for inclusive in (False, True):
                list(reader.items(key, NEWEST, reverse, inclusive))


def check(data: bytes) -> None:
    """The property: opens and reads, or raises an allowed error."""
    if not data:
        return
    flags, body = data[0], data[1:]
    number = header_number(body)
    if flags & FIX:
        body = fix_table(body, number)
    fs = SimFS()
    fs.mkdir("/db")
    file = fs.open("/db/000001.sst", create=True)
    file.append(body)
    file.close()
    with contextlib.suppress(*ALLOWED):
        reader = TableReader(fs, "/db/000001.sst", number, BlockCache(0 if flags & 2 else 1 << 20))
        try:
            read_all(reader)
        finally:
            reader.close()


def main() -> None:
    run(check)


if __name__ == "__main__":
    main()
