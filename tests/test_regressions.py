"""Minimal cases of bugs the state machine (tests/test_stateful.py) found, kept as plain tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvstore import KV, KVTX, ClosedError, Config


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


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("how", ["kv", "scan"])
def test_a_scan_closed_between_chunks_reads_nothing_more(tmp_path: Path, reverse: bool, how: str) -> None:
    # A KV scan hands out chunks of rows; closed (itself, or its KV) after the rows of one chunk were all
    # handed out, it used to fetch the next chunk from the closed table files (OSError: bad file
    # descriptor) instead of raising ClosedError.
    kv = KV.open(tmp_path, Config(block_size=256, sync=False, background=False))
    for i in range(2000):
        kv.set(b"%05d" % i, b"v" * 20)
    kv.flush()
    scan = kv.scan(reverse=reverse)
    first = [next(scan) for _ in range(300)]  # past the first chunks (12, then 48, then 192 rows)
    assert first[0][0] == (b"01999" if reverse else b"00000")
    if how == "kv":
        kv.close()
    else:
        scan.close()  # type: ignore[attr-defined]
    for _ in range(2):  # and again: a closed scan keeps raising
        with pytest.raises(ClosedError):
            next(scan)
    kv.close()


@pytest.mark.parametrize("how", ["kv", "scan"])
def test_a_scan_closed_inside_a_chunk_hands_out_none_of_its_rows(tmp_path: Path, how: str) -> None:
    with KV.open(tmp_path, Config(sync=False, background=False)) as kv:
        for i in range(1000):
            kv.set(b"%05d" % i, b"v")
        scan = kv.scan()
        assert next(scan) == (b"00000", b"v")
        if how == "kv":
            kv.close()
        else:
            scan.close()  # type: ignore[attr-defined]
        with pytest.raises(ClosedError):
            next(scan)
