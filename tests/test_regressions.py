"""Minimal cases of bugs the state machine (tests/test_stateful.py) found, kept as plain tests."""

from __future__ import annotations

from pathlib import Path

from kvstore import KV, KVTX, Config


def test_cursor_turning_around_skips_a_key_whose_versions_span_blocks(tmp_path: Path) -> None:
    # Fixed in sorted_file (an exclusive start skips every version of the key): the cursor turning
    # around re-seeks past its key, and used to land on an older version of that same key.
    with KV.open(tmp_path, Config(block_size=64, sync=False, background=False)) as kv:
        snapshots: list[KVTX] = []  # each keeps its version of b"k" alive through the flush
        for i in range(20):
            kv.set(b"k", b"v%02d" % i)
            snapshots.append(kv.new_tx())
        kv.set(b"a", b"A")
        kv.set(b"z", b"Z")
        kv.flush()
        assert kv.stats().tables[0].entries == 22
        with kv.seek_for_prev(b"k") as c:
            assert (c.key, c.value) == (b"k", b"v19")
            c.next()
            assert (c.key, c.value) == (b"z", b"Z")
            c.prev()
            assert (c.key, c.value) == (b"k", b"v19")
            c.prev()
            assert (c.key, c.value) == (b"a", b"A")
            c.next()
            assert (c.key, c.value) == (b"k", b"v19")
        for tx in snapshots:
            tx.abort()
