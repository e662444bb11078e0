"""Writes tests/data/format_v4/, a database of meta format version 1 whose keys start with ``FF``, which every
later kvstore must open, upgrading it to meta format 2 on its first writable open (tests/test_upgrade.py).

The checked-in directory was written by kvstore at commit 708bddc (main): tables of version 4, WAL files of
version 3, meta files of version 1, which stored every key as it is.  Its keys include ``FF`` alone, keys
whose escaped form (``FF 00`` and the rest) is another key of the database, a key that reads like a
collection's (``FF 05 'users' ...``), a key set with a ttl, a deleted key, and a range delete over keys
starting with ``FF``; the last commits are left in the WAL (the directory is copied while the KV is open,
as after a crash).  ``EXPECTED`` is what every key reads.  Never regenerate it with a later kvstore; to
rebuild it (only ever from a checkout of a commit whose meta format is 1)::

    PYTHONPATH=. python tests/data/make_format_v4.py tests/data/format_v4

Not collected by pytest as a test (the build runs only under ``if __name__ == "__main__"``).
"""

from __future__ import annotations

import shutil
import sys
import tempfile

#: The seconds from the clock's start that the key set with a ttl expires at.
TTL = 10_000.0
CLOCK_START = 1_000_000.0

#: key -> value of every live key once the directory is opened (at a clock before the expiry).
EXPECTED: dict[bytes, bytes] = {
    b"a": b"plain",
    b"\xff": b"FF alone",
    b"\xffx": b"escapes to the stored form of the next key",
    b"\xff\x00x": b"newer, in the WAL",
    b"\xff\x05usersk": b"reads like a collection's key",
    b"\xffttl": b"expires",
    b"\xff\xfe": b"in the WAL",
    b"\xff\xff\xff": b"after the range",
    b"z": b"last",
}
#: keys written and then deleted (one by a delete, two by a range delete): absent.
GONE = [b"\xff\xff", b"\xff\xfd1", b"\xff\xfd2"]


def build(dest: str) -> None:
    from kvstore import KV, Config

    clock = [CLOCK_START]
    work = tempfile.mkdtemp()
    kv = KV.open(work, Config(sync=True, background=False), clock=lambda: clock[0])
    for key in (b"a", b"\xff", b"\xffx", b"\xff\x05usersk", b"\xff\xff\xff", b"z", b"\xff\xff", b"\xff\xfd1",
                b"\xff\xfd2"):
        kv.set(key, EXPECTED.get(key, b"gone"))
    kv.set(b"\xff\x00x", b"older, in a table")
    kv.set(b"\xffttl", EXPECTED[b"\xffttl"], ttl=TTL)
    kv.flush()
    kv.delete(b"\xff\xff")
    kv.delete_range(b"\xff\xfd", b"\xff\xfe")
    kv.set(b"\xff\x00x", EXPECTED[b"\xff\x00x"])
    kv.set(b"\xff\xfe", EXPECTED[b"\xff\xfe"])
    shutil.copytree(work, dest)  # as after a crash: the last commits only in the WAL
    kv.close()
    shutil.rmtree(work)


if __name__ == "__main__":
    build(sys.argv[1])
