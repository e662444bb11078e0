"""Fuzz one table block: its checked chunk and its entries (``record.open_chunk``, ``block.decode_block``).

Property: any bytes either decode or raise ``CorruptionError``; nothing else escapes and nothing hangs.
Input: a flags byte (``FIX``: the rest is a payload, sealed with a good checksum before decoding;
otherwise the rest is a whole chunk, checksum included), then the bytes.
"""

from __future__ import annotations

import contextlib

from harness import ALLOWED, FIX, run

from kvstore import block, record

NUMBER = 7
OFFSET = record.FILE_HEADER.size


def check(data: bytes) -> None:
    """The property: decodes, or raises an allowed error."""
    if not data:
        return
    flags, body = data[0], data[1:]
    chunk = record.seal_chunk(NUMBER, OFFSET, body) if flags & FIX else body
    with contextlib.suppress(*ALLOWED):
        block.decode_block(record.open_chunk(chunk, "fuzz.sst", NUMBER, OFFSET), "fuzz.sst", OFFSET)


def main() -> None:
    run(check)


if __name__ == "__main__":
    main()
