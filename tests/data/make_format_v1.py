"""Writes tests/data/format_v1/, a database every later kvstore must open (tests/test_format_compat.py).

The checked-in directory was written by kvstore at commit 2c7598d (main), whose WAL, table and meta files
are all format version 1 (``record.FORMAT_VERSION == 1``): tables carry the double-hashing bloom filter
that DESIGN.md documents as table version 1.  Never regenerate it with a later kvstore: the point of the
files is that they were written by the old code.  To rebuild it (only ever from a checkout of a commit
that writes format version 1)::

    PYTHONPATH=. python tests/data/make_format_v1.py tests/data/format_v1

What it holds, all deterministic (no clock, no randomness): ``KEYS`` keys written in ``ROUNDS`` of
transactions with ``memtable_size`` 2048 and ``block_size`` 256, so that there are several tables, some of
them merged; a transaction held open across the second round, so tables keep older versions of a key; keys
deleted after their table was written, so a newer table holds tombstones; and, after a last flush, a few
commits only in the WAL, which an open replays.  The directory is copied while the KV is still open (what
a crash right after the last commit leaves), without its ``LOCK`` file: so it also holds the two tables
the last merge replaced (000024.sst, 000027.sst), which the older meta slot still names; they are deleted
once a newer meta is written.  Every value is ``value(i, r)``,
and ``expected()`` says what each key reads, so a test recomputes every answer.

Not collected by pytest as a test (the build runs only under ``if __name__ == "__main__"``).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator

import attrs

from kvstore import KV, Config, record

#: keys key0000 .. key0299
KEYS = 300
#: commits left in the WAL, after the last flush
WAL_ONLY = 6


def key(i: int) -> bytes:
    """Key number ``i``."""
    return b"key%04d" % i


def value(i: int, r: int) -> bytes:
    """The value key ``i`` is given in round ``r``: its length varies with both."""
    return b"v%d.%d:" % (i, r) + bytes([97 + (i + r) % 26]) * ((i * 7 + r * 13) % 29)


def rounds() -> Iterator[list[tuple[bytes, bytes | None]]]:
    """Every transaction in order, as its writes (None deletes).  Rounds: 0 sets every key; 1 (with an
    older snapshot held) rewrites every third key and deletes every seventh; 2 rewrites every fifth key,
    deletes every eleventh and sets again every fourteenth (deleted in round 1)."""
    yield from _batches([(key(i), value(i, 0)) for i in range(KEYS)], 25)
    yield from _batches([(key(i), None if i % 7 == 0 else value(i, 1)) for i in range(KEYS)
                         if i % 3 == 0 or i % 7 == 0], 10)
    yield from _batches([(key(i), None if i % 11 == 0 else value(i, 2)) for i in range(KEYS)
                         if i % 5 == 0 or i % 11 == 0 or i % 14 == 0], 10)


def wal_only() -> list[list[tuple[bytes, bytes | None]]]:
    """The last commits, written after the last flush and found only in the WAL: round 3 rewrites a few
    keys, deletes two, and adds one key past the others."""
    commits: list[list[tuple[bytes, bytes | None]]] = [
        [(key(1), value(1, 3))], [(key(2), None)], [(key(3), value(3, 3)), (key(299), None)],
        [(key(14), value(14, 3))], [(key(KEYS), value(KEYS, 3))], [(key(100), value(100, 3))]]
    return commits[:WAL_ONLY]


def expected() -> dict[bytes, bytes]:
    """What every present key reads after an open replays the WAL."""
    state: dict[bytes, bytes] = {}
    for writes in [*rounds(), *wal_only()]:
        for k, v in writes:
            if v is None:
                state.pop(k, None)
            else:
                state[k] = v
    return state


def written() -> list[bytes]:
    """Every key ever written, present or deleted."""
    return sorted({k for writes in [*rounds(), *wal_only()] for k, _ in writes})


def _batches(writes: list[tuple[bytes, bytes | None]], size: int) -> Iterator[list[tuple[bytes, bytes | None]]]:
    for start in range(0, len(writes), size):
        yield writes[start : start + size]


def _commit(kv: KV, writes: list[tuple[bytes, bytes | None]]) -> None:
    with kv.new_tx() as tx:
        for k, v in writes:
            if v is None:
                tx.delete(k)
            else:
                tx.set(k, v)


def build(dest: str) -> None:
    """Write the database and copy it to ``dest`` (which must not exist)."""
    assert record.FORMAT_VERSION == 1, "this database must be written by a kvstore of format version 1"
    config = Config(background=False, sync=True, memtable_size=2048, block_size=256)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "db")
        batches = list(rounds())
        first = KEYS // 25
        second = first + len([i for i in range(KEYS) if i % 3 == 0 or i % 7 == 0]) // 10 + 1
        with KV.open(path, config) as kv:  # all but the last batches; close flushes and merges what is left
            for writes in batches[:first]:
                _commit(kv, writes)
            held = kv.new_tx()  # its snapshot keeps round 0's versions through round 1's flushes
            assert held.get(key(0)) == value(0, 0)
            for writes in batches[first:second]:
                _commit(kv, writes)
            held.abort()
            for writes in batches[second:-3]:
                _commit(kv, writes)
        kv = KV.open(path, attrs.evolve(config, bloom_bits_per_key=0))  # a newest table without a filter
        for writes in batches[-3:]:
            _commit(kv, writes)
        kv.flush()
        for writes in wal_only():
            _commit(kv, writes)
        stats = kv.stats()
        assert len(stats.tables) >= 3, stats.tables
        assert any(t.deletes for t in stats.tables), stats.tables
        assert stats.memtable_entries >= WAL_ONLY and stats.merges >= 1, stats
        assert kv.check() == []
        shutil.copytree(path, dest, ignore=shutil.ignore_patterns("LOCK"))  # a crash now leaves these bytes
        kv.close()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/data/make_format_v1.py DEST")
    build(sys.argv[1])
