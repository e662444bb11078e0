"""Fuzz the meta slots: one slot's bytes (``record.decode_meta``) and a pair of them (``MetaStore.load``).

Property: any slots either load or raise ``CorruptionError`` (or ``UnsupportedFormatError``); nothing else
escapes and nothing hangs.  Input: a flags byte (``FIX``: recompute both checksums of each slot; 2: meta0
exists; 4: meta1 exists), meta0's length u16, meta0's bytes, then meta1's bytes.
"""

from __future__ import annotations

import contextlib
import struct

from harness import ALLOWED, FIX, fix_meta, run

from kvstore import record
from kvstore.metadata import META_NAMES, MetaStore
from kvstore.simfs import SimFS

HEAD = struct.Struct("<BH")


def check(data: bytes) -> None:
    """The property: loads, or raises an allowed error."""
    if len(data) < HEAD.size:
        return
    flags, len0 = HEAD.unpack_from(data, 0)
    rest = data[HEAD.size :]
    slots = [rest[:len0], rest[len0:]]
    if flags & FIX:
        slots = [fix_meta(s) for s in slots]
    fs = SimFS()
    fs.mkdir("/db")
    for i, slot in enumerate(slots):
        with contextlib.suppress(*ALLOWED):
            record.decode_meta(slot, META_NAMES[i], i)
        if flags & (2 << i):
            file = fs.open(f"/db/{META_NAMES[i]}", create=True)
            file.append(slot)
            file.close()
    with contextlib.suppress(*ALLOWED):
        store = MetaStore(fs, "/db")
        store.load()
        store.named_tables()
        store.min_log_number()


def main() -> None:
    run(check)


if __name__ == "__main__":
    main()
