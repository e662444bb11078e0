"""Writes tests/data/format_v3/, a database of table format version 3 and WAL format version 2 every later
kvstore must open (tests/test_format_compat.py).

The checked-in directory was written by kvstore at commit 78a29ee (main): tables of version 3 (with a range
tombstone section), WAL files of version 2 (with range deletes in commit units), meta files of version 1,
and nothing of the expiries that later versions add.  The workload is ``make_format_v1``'s (the same keys,
rounds, held snapshot, deletes, filterless newest table and commits left in the WAL), plus keys outside
its key space (``zz...``) that range deletes remove again, in tables and in the WAL, so ``expected()``
and ``written()`` there say what every key reads here too.  Never regenerate it with a later kvstore; to
rebuild it (only ever from a checkout of a commit that writes table version 3)::

    PYTHONPATH=. python tests/data/make_format_v3.py tests/data/format_v3

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

#: keys outside ``make_format_v1``'s key space, written and then removed by range deletes
EXTRA = [b"zz%03d" % i for i in range(40)]


def build(dest: str) -> None:
    """Write the database and copy it to ``dest`` (which must not exist)."""
    assert record.TABLE_FORMAT_VERSION == 3, "this database must be written by a kvstore of table version 3"
    assert record.WAL_FORMAT_VERSION == 2, "this database must be written by a kvstore of WAL version 2"
    config = Config(background=False, sync=True, memtable_size=2048, block_size=256)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "db")
        batches = list(v1.rounds())
        first = v1.KEYS // 25
        second = first + len([i for i in range(v1.KEYS) if i % 3 == 0 or i % 7 == 0]) // 10 + 1
        with KV.open(path, config) as kv:
            for k in EXTRA:
                kv.set(k, b"extra " + k)
            for writes in batches[:first]:
                v1._commit(kv, writes)
            kv.delete_range(b"zz000", b"zz020")
            held = kv.new_tx()
            assert held.get(v1.key(0)) == v1.value(0, 0)
            for writes in batches[first:second]:
                v1._commit(kv, writes)
            held.abort()
            kv.delete_range(b"zz020", b"zz040")
            for writes in batches[second:-3]:
                v1._commit(kv, writes)
            merges = kv.stats().merges
        kv = KV.open(path, attrs.evolve(config, bloom_bits_per_key=0))
        for writes in batches[-3:]:
            v1._commit(kv, writes)
        kv.flush()
        for k in EXTRA[:5]:
            kv.set(k, b"again " + k)
        kv.delete_range(b"zz", b"zz\xff")  # left in the WAL
        for writes in v1.wal_only():
            v1._commit(kv, writes)
        stats = kv.stats()
        assert len(stats.tables) >= 3, stats.tables
        assert any(t.deletes for t in stats.tables), stats.tables
        assert stats.memtable_entries >= v1.WAL_ONLY and merges + stats.merges >= 1, stats
        assert not list(kv.scan(prefix=b"zz"))
        assert kv.check() == []
        shutil.copytree(path, dest, ignore=shutil.ignore_patterns("LOCK"))
        kv.close()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/data/make_format_v3.py DEST")
    build(sys.argv[1])
