"""Fuzz one WAL frame and its commit record (``wal._bad_frame``, ``record.decode_commit``).

Property: any bytes either decode or raise ``CorruptionError`` (or ``UnsupportedFormatError``); nothing
else escapes and nothing hangs.  Input: a frame, its 9-byte header then the payload (checksum unchecked
for the payload decode, so mutations reach it).
"""

from __future__ import annotations

import contextlib

from harness import ALLOWED, run

from kvstore import record, wal


def check(data: bytes) -> None:
    """The property: decodes, or raises an allowed error."""
    with contextlib.suppress(*ALLOWED):
        wal._bad_frame(data, 0, 1)  # why the frame is not intact, as text: never raises
        record.decode_commit(data[record.WAL_FRAME.size :], "fuzz.log", record.FILE_HEADER.size)


def main() -> None:
    run(check)


if __name__ == "__main__":
    main()
