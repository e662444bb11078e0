"""Writes tests/data/format_v2/, a database of table format version 2 every later kvstore must open
(tests/test_format_compat.py).

The checked-in directory was written by kvstore at commit 0a9a453 (main): tables of version 2 (the
cache-line-blocked bloom filter), WAL and meta files of version 1, and nothing of the range tombstones or
expiries that later versions add.  The workload is ``make_format_v1``'s, unchanged (the same keys, rounds,
held snapshot, deletes, filterless newest table and commits left in the WAL), so ``expected()`` and
``written()`` there say what every key reads here too.  Never regenerate it with a later kvstore; to
rebuild it (only ever from a checkout of a commit that writes table version 2)::

    PYTHONPATH=. python tests/data/make_format_v2.py tests/data/format_v2

Not collected by pytest as a test (the build runs only under ``if __name__ == "__main__"``).
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import shutil
import tempfile

import attrs
import make_format_v1 as v1

from kvstore import KV, Config, record


def build(dest: str) -> None:
    """Write the database and copy it to ``dest`` (which must not exist): ``make_format_v1.build``'s steps,
    the merges counted over both opens (the second open's counter starts again at zero)."""
    assert record.TABLE_FORMAT_VERSION == 2, "this database must be written by a kvstore of table version 2"
    config = Config(background=False, sync=True, memtable_size=2048, block_size=256)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "db")
        batches = list(v1.rounds())
        first = v1.KEYS // 25
        second = first + len([i for i in range(v1.KEYS) if i % 3 == 0 or i % 7 == 0]) // 10 + 1
        with KV.open(path, config) as kv:
            for writes in batches[:first]:
                v1._commit(kv, writes)
            held = kv.new_tx()
            assert held.get(v1.key(0)) == v1.value(0, 0)
            for writes in batches[first:second]:
                v1._commit(kv, writes)
            held.abort()
            for writes in batches[second:-3]:
                v1._commit(kv, writes)
            merges = kv.stats().merges
        kv = KV.open(path, attrs.evolve(config, bloom_bits_per_key=0))
        for writes in batches[-3:]:
            v1._commit(kv, writes)
        kv.flush()
        for writes in v1.wal_only():
            v1._commit(kv, writes)
        stats = kv.stats()
        assert len(stats.tables) >= 3, stats.tables
        assert any(t.deletes for t in stats.tables), stats.tables
        assert stats.memtable_entries >= v1.WAL_ONLY and merges + stats.merges >= 1, stats
        assert kv.check() == []
        shutil.copytree(path, dest, ignore=shutil.ignore_patterns("LOCK"))
        kv.close()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/data/make_format_v2.py DEST")
    build(sys.argv[1])
