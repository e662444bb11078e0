"""Fuzz the replay of a whole log file (``wal.replay_log``).

Property: any file either replays or raises ``CorruptionError`` (or ``UnsupportedFormatError``); nothing
else escapes and nothing hangs.  Input: a flags byte (``FIX``: recompute every checksum; 2: it is the
last log; 4: salvage instead of strict), then the file's bytes.
"""

from __future__ import annotations

import contextlib

from harness import ALLOWED, FIX, fix_wal, header_number, run

from kvstore import filenames, wal
from kvstore.simfs import SimFS


def check(data: bytes) -> None:
    """The property: replays, or raises an allowed error."""
    if not data:
        return
    flags, body = data[0], data[1:]
    number = header_number(body)
    if flags & FIX:
        body = fix_wal(body, number)
    fs = SimFS()
    fs.mkdir("/db")
    path = filenames.log_path("/db", 1)
    file = fs.open(path, create=True)
    file.append(body)
    file.close()
    with contextlib.suppress(*ALLOWED):
        wal.replay_log(fs, path, number, last=bool(flags & 2), strict=not flags & 4)


def main() -> None:
    run(check)


if __name__ == "__main__":
    main()
