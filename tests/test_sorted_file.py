"""The SSTable (kvstore/sorted_file.py, kvstore/table_writer.py): writer/reader round trips, snapshots, iteration,
bloom, cache, the writer's counts and blocks.  ``verify()``, damage and expiring entries are in test_table_checks.py."""

from __future__ import annotations

import bisect
import itertools
import os
import pathlib
import tempfile
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tablehelp import FS, Entry, _model_get, _model_items, _open, _versioned_entries, _write

from kvstore import block, bloom, record, table_writer
from kvstore.errors import CorruptSSTableError
from kvstore.fs import OSFileSystem
from kvstore.sorted_file import Block, BlockCache, TableReader
from kvstore.table_writer import TableInfo, TableWriter


@pytest.fixture(scope="module")
def big_table(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[Entry], TableInfo]:
    entries = _versioned_entries(3000)
    path, info = _write(tmp_path_factory.mktemp("big"), 5, entries, block_size=512)
    return path, entries, info


def test_table_round_trips_every_entry_across_many_blocks(big_table: tuple[str, list[Entry], TableInfo]) -> None:
    path, entries, info = big_table
    reader = _open(path, 5)
    try:
        assert reader.blocks > 50
        assert list(reader.entries()) == entries
        assert (info.entries, reader.num_entries) == (len(entries), len(entries))
        assert info.deletes == reader.deletes == sum(1 for e in entries if e[2] is None)
        assert (info.smallest, info.largest) == (reader.smallest, reader.largest) == (entries[0][0], entries[-1][0])
        assert (reader.min_seq, reader.max_seq) == (min(e[1] for e in entries), max(e[1] for e in entries))
        assert info.size == reader.size == os.path.getsize(path)
        assert reader.verify() == []
    finally:
        reader.close()


def test_table_get_at_snapshots_matches_the_versions(big_table: tuple[str, list[Entry], TableInfo]) -> None:
    path, entries, _ = big_table
    reader = _open(path, 5)
    try:
        seqs = sorted({s for _, s, _ in entries})
        snapshots = [0, seqs[0] - 1, seqs[0], seqs[len(seqs) // 3], seqs[len(seqs) // 2] + 1, seqs[-1], 2**63]
        for i in range(0, 3000, 37):
            key = b"k%05d" % i
            for snapshot in snapshots:
                assert reader.get(key, snapshot) == _model_get(entries, key, snapshot), (key, snapshot)
        assert reader.get(b"k", 2**63) is None
        assert reader.get(b"k99999", 2**63) is None
        assert reader.get(b"k00001x", 2**63) is None
    finally:
        reader.close()


STARTS: list[tuple[bytes | None, bool, bool]] = [
    (start, reverse, inclusive)
    for start in (None, b"", b"k00000", b"k01234", b"k01234x", b"k02999", b"k3")
    for reverse in (False, True)
    for inclusive in (True, False)
]


@pytest.mark.parametrize(("start", "reverse", "inclusive"), STARTS,
                         ids=[f"{s!r}-{'rev' if r else 'fwd'}-{'incl' if i else 'excl'}" for s, r, i in STARTS])
def test_table_items_from_a_start_both_ways(big_table: tuple[str, list[Entry], TableInfo], start: bytes | None,
                                            reverse: bool, inclusive: bool) -> None:
    path, entries, _ = big_table
    reader = _open(path, 5)
    try:
        snapshot = sorted({s for _, s, _ in entries})[len(entries) // 2]
        for snap in (snapshot, 2**63):
            got = list(reader.items(start, snap, reverse=reverse, inclusive=inclusive))
            assert got == _model_items(entries, start, snap, reverse, inclusive)
    finally:
        reader.close()


@pytest.fixture(scope="module")
def spanning_table(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[Entry]]:
    """Key b"m" has 60 versions spread over many 64-byte blocks, between neighbours b"a".. and b"z"."""
    entries: list[Entry] = [(b"a", 1000, b"A"), (b"b", 999, None)]
    entries += [(b"m", 900 - i, None if i % 10 == 5 else b"m%03d" % (900 - i)) for i in range(60)]
    entries += [(b"y", 10, b"Y"), (b"z", 5, b"Z")]
    path, _ = _write(tmp_path_factory.mktemp("span"), 9, entries, block_size=64)
    return path, entries


def test_table_versions_of_one_key_span_blocks(spanning_table: tuple[str, list[Entry]]) -> None:
    path, _ = spanning_table
    reader = _open(path, 9)
    try:
        assert reader._index_keys.count(b"m") >= 5
    finally:
        reader.close()


SPAN_SNAPSHOTS = [0, 4, 5, 9, 841, 850, 855, 856, 878, 895, 899, 900, 901, 999, 10**6]


@pytest.mark.parametrize("snapshot", SPAN_SNAPSHOTS, ids=[f"snap{s}" for s in SPAN_SNAPSHOTS])
def test_table_get_finds_the_version_in_a_later_block(spanning_table: tuple[str, list[Entry]], snapshot: int) -> None:
    path, entries = spanning_table
    reader = _open(path, 9)
    try:
        for key in (b"a", b"b", b"m", b"y", b"z", b"c", b"n"):
            assert reader.get(key, snapshot) == _model_get(entries, key, snapshot), key
    finally:
        reader.close()


@pytest.mark.parametrize("snapshot", SPAN_SNAPSHOTS, ids=[f"snap{s}" for s in SPAN_SNAPSHOTS])
def test_table_items_over_a_key_spanning_blocks_both_ways(spanning_table: tuple[str, list[Entry]],
                                                          snapshot: int) -> None:
    path, entries = spanning_table
    reader = _open(path, 9)
    try:
        for start in (None, b"a", b"b", b"c", b"m", b"n", b"y", b"z"):
            for reverse in (False, True):
                for inclusive in (True, False):
                    got = list(reader.items(start, snapshot, reverse=reverse, inclusive=inclusive))
                    assert got == _model_items(entries, start, snapshot, reverse, inclusive), (start, reverse,
                                                                                             inclusive)
    finally:
        reader.close()


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "backward"])
def test_table_items_exclusive_start_skips_every_version_of_a_key_spanning_blocks(tmp_path: pathlib.Path,
                                                                                  reverse: bool) -> None:
    # regression: the versions of an excluded start that ran on into the next (forward) or previous
    # (backward) block were yielded as if they were another key
    entries: list[Entry] = [(b"a", 10, b"A"), *((b"m", 9 - i, b"x" * 40) for i in range(4)), (b"z", 1, b"Z")]
    path, _ = _write(tmp_path, 2, entries, block_size=64)
    reader = _open(path, 2)
    try:
        assert reader._index_keys.count(b"m") >= 2
        got = list(reader.items(b"m", 100, reverse=reverse, inclusive=False))
        assert got == ([(b"a", b"A")] if reverse else [(b"z", b"Z")])
    finally:
        reader.close()


@st.composite
def _tables(draw: st.DrawFn) -> list[Entry]:
    keys = sorted(set(draw(st.lists(st.binary(max_size=3), min_size=1, max_size=25))))
    seq = 1000
    entries: list[Entry] = []
    for key in keys:
        for _ in range(draw(st.integers(1, 12))):
            entries.append((key, seq, draw(st.one_of(st.none(), st.binary(max_size=30)))))
            seq -= draw(st.integers(1, 3))
    return entries


@given(_tables(), st.integers(64, 200), st.data())
def test_table_reads_match_a_model(entries: list[Entry], block_size: int, data: st.DataObject) -> None:
    seqs = [s for _, s, _ in entries]
    snapshot = data.draw(st.one_of(st.sampled_from(seqs), st.integers(0, 1001)))
    keys = sorted({k for k, _, _ in entries})
    starts = [None, *keys, *(k + b"\x00" for k in keys), b"", b"\xff\xff\xff\xff"]
    with tempfile.TemporaryDirectory() as tmp:
        path, _ = _write(tmp, 3, entries, block_size=block_size, bloom_bits=4)
        reader = _open(path, 3)
        try:
            assert list(reader.entries()) == entries
            chunk_size = data.draw(st.integers(1, 50))
            chunks = list(reader.entry_chunks(chunk_size))
            assert [e for keys_, seqs_, values_ in chunks for e in zip(keys_, seqs_, values_)] == entries
            assert all(a[0][-1] < b[0][0] for a, b in itertools.pairwise(chunks))  # a key's versions in one chunk
            for key in [*keys, b"\x00", b"zz"]:
                for snap in (snapshot, 2**63):
                    assert reader.get(key, snap) == _model_get(entries, key, snap)
            for start in starts:
                for reverse in (False, True):
                    for inclusive in (True, False):
                        got = list(reader.items(start, snapshot, reverse=reverse, inclusive=inclusive))
                        assert got == _model_items(entries, start, snapshot, reverse, inclusive), (start, reverse,
                                                                                                 inclusive)
        finally:
            reader.close()


def test_table_with_no_entries_reads_as_empty(tmp_path: pathlib.Path) -> None:
    path, info = _write(tmp_path, 4, [])
    reader = _open(path, 4)
    try:
        assert info.entries == 0 and reader.blocks == 0
        assert reader.get(b"", 10) is None
        assert list(reader.items(None, 10)) == [] and list(reader.items(None, 10, reverse=True)) == []
        assert reader.verify() == []
    finally:
        reader.close()


def test_table_with_bloom_disabled_still_answers_gets(tmp_path: pathlib.Path) -> None:
    entries = _versioned_entries(200)
    path, _ = _write(tmp_path, 6, entries, block_size=256, bloom_bits=0)
    reader = _open(path, 6)
    try:
        assert reader._bloom is None
        assert reader.may_contain(record.key_hash(b"absent"))
        for i in range(200):
            assert reader.get(b"k%05d" % i, 2**63) == _model_get(entries, b"k%05d" % i, 2**63)
    finally:
        reader.close()


def test_table_opened_under_another_file_number_is_corrupt(tmp_path: pathlib.Path) -> None:
    path, _ = _write(tmp_path, 6, _versioned_entries(50))
    with pytest.raises(CorruptSSTableError) as info:
        _open(path, 7)
    assert info.value.path == path


# ---------------------------------------------------------------- bloom filter (the filters themselves: test_bloom.py)


def test_table_bloom_has_no_false_negatives_and_filters_absent_keys(tmp_path: pathlib.Path) -> None:
    n = 20_000
    path, _ = _write(tmp_path, 8, ((b"key%06d" % i, i + 1, b"") for i in range(n)), block_size=1 << 16)
    reader = _open(path, 8)
    try:
        assert reader.version == record.TABLE_FORMAT_VERSION == 4 and reader.bloom_k == 6
        assert all(reader.may_contain(record.key_hash(b"key%06d" % i)) for i in range(n))
        assert all(reader.get(b"key%06d" % i, n) == (i + 1, b"") for i in range(0, n, 7))
        rate = sum(reader.may_contain(record.key_hash(b"nokey%06d" % i)) for i in range(n)) / n
        assert 0.003 <= rate <= 0.02, rate
        assert sum(reader.get(b"nokey%06d" % i, n) is not None for i in range(n)) == 0
    finally:
        reader.close()


def _reseal_bloom(path: str, number: int, change: Callable[[bytearray], None]) -> None:
    data = bytearray(pathlib.Path(path).read_bytes())
    foot_at = len(data) - record.FOOTER.size
    _, (at, size), _ = record.decode_footer(bytes(data[foot_at:]), path, foot_at, number)
    payload = bytearray(data[at : at + size - 4])
    change(payload)
    data[at : at + size] = record.seal_chunk(number, at, bytes(payload))
    pathlib.Path(path).write_bytes(bytes(data))


def test_table_with_a_damaged_bloom_trailer_under_a_good_checksum_is_corrupt(tmp_path: pathlib.Path) -> None:
    path, _ = _write(tmp_path, 10, _versioned_entries(300))

    def k_past_range(payload: bytearray) -> None:
        payload[-2] = 99

    _reseal_bloom(path, 10, k_past_range)
    with pytest.raises(CorruptSSTableError, match="99 probes") as info:
        _open(path, 10)
    assert info.value.path == path


def test_table_with_a_bloom_filter_of_an_unknown_kind_filters_nothing(tmp_path: pathlib.Path) -> None:
    """A later kvstore may add a filter kind without a new table version: this one reads such a table,
    searching it for every key."""
    entries = _versioned_entries(300)
    path, _ = _write(tmp_path, 11, entries)

    def later_kind(payload: bytearray) -> None:
        payload[-1] = 2

    _reseal_bloom(path, 11, later_kind)
    reader = _open(path, 11)
    try:
        assert reader._bloom is None and reader.may_contain(record.key_hash(b"absent"))
        for i in range(300):
            assert reader.get(b"k%05d" % i, 2**63) == _model_get(entries, b"k%05d" % i, 2**63)
        assert reader.get(b"absent", 2**63) is None
    finally:
        reader.close()


@pytest.mark.parametrize("bits", [1, 4, 20, 64], ids=lambda b: f"{b}bits")
def test_table_get_with_a_probe_made_for_another_filter_still_finds_every_key(tmp_path: pathlib.Path,
                                                                              bits: int) -> None:
    """A get makes one probe for every table, for the newest table's k: a table whose filter has
    another k (written with another ``bloom_bits_per_key``) makes its own mask from the probe's hash."""
    n = 2000
    path, _ = _write(tmp_path, 9, ((b"key%06d" % i, 1, b"v") for i in range(n)), bloom_bits=bits)
    reader = _open(path, 9)
    try:
        assert reader.bloom_k == bloom.num_probes(bits)
        for i in range(n):
            key = b"key%06d" % i
            assert reader.get(key, 1, bloom.probe(record.key_hash(key), bloom.num_probes(10))) == (1, b"v")
            assert reader.get(key, 1, bloom.probe(record.key_hash(key), reader.bloom_k)) == (1, b"v")
            assert reader.get(key, 1) == (1, b"v")
    finally:
        reader.close()


# ---------------------------------------------------------------- block cache


def _block(n: int) -> Block:
    return Block(block.encode_block([b"k%d" % n], [n], [b"v"]), "block", 20)


def test_block_cache_counts_hits_and_misses() -> None:
    cache = BlockCache(1000)
    assert cache.get((1, 20)) is None
    block = _block(1)
    cache.put((1, 20), block, 100)
    assert cache.get((1, 20)) is block
    assert cache.get((2, 20)) is None
    assert (cache.hits, cache.misses) == (1, 2)


def test_block_cache_stays_within_capacity_evicting_least_recently_used() -> None:
    cache = BlockCache(300)
    for i in range(3):
        cache.put((1, i), _block(i), 100)
    assert cache.get((1, 0)) is not None  # 0 is now the most recently used
    cache.put((1, 3), _block(3), 100)
    assert cache.used <= cache.capacity
    assert cache.get((1, 1)) is None  # the least recently used went
    assert cache.get((1, 0)) is not None and cache.get((1, 3)) is not None
    for i in range(4, 100):
        cache.put((2, i), _block(i), 70)
        assert cache.used <= cache.capacity


def test_block_cache_ignores_a_block_larger_than_its_capacity() -> None:
    cache = BlockCache(100)
    cache.put((1, 0), _block(0), 101)
    assert cache.used == 0 and cache.get((1, 0)) is None


def test_block_cache_of_zero_bytes_caches_nothing() -> None:
    cache = BlockCache(0)
    cache.put((1, 0), _block(0), 1)
    assert cache.get((1, 0)) is None and cache.used == 0


def test_block_cache_evicts_one_file() -> None:
    cache = BlockCache(1000)
    cache.put((1, 0), _block(0), 100)
    cache.put((2, 0), _block(1), 100)
    cache.evict_file(1)
    assert cache.used == 100
    assert cache.get((1, 0)) is None and cache.get((2, 0)) is not None


def test_table_reads_go_through_the_cache_and_stay_bounded(big_table: tuple[str, list[Entry], TableInfo]) -> None:
    path, _, _ = big_table
    cache = BlockCache(4096)
    reader = _open(path, 5, cache)
    try:
        assert reader.get(b"k00010", 2**63) is not None
        misses = cache.misses
        assert reader.get(b"k00010", 2**63) is not None
        assert cache.misses == misses and cache.hits >= 1
        list(reader.items(None, 2**63))
        assert 0 < cache.used <= cache.capacity
    finally:
        reader.close()


# ---------------------------------------------------------------- the writer: its counts and the blocks it cuts


def test_table_writer_counts_entries_and_deletes_before_finish(tmp_path: pathlib.Path) -> None:
    path = str(tmp_path / "000009.sst")
    file = FS.open(path, create=True)
    try:
        writer = TableWriter(file, 9, 64, 10)
        assert (writer.num_entries, writer.deletes) == (0, 0)
        writer.add(b"a", 5, b"x")
        writer.add_all([(b"a", 3, None), (b"b", 4, b"y" * 100), (b"c", 2, None)])
        assert (writer.num_entries, writer.deletes) == (4, 2)
        info = writer.finish()
        assert (info.entries, info.deletes, info.min_seq, info.max_seq) == (4, 2, 2, 5)
        assert (info.smallest, info.largest) == (b"a", b"c")
    finally:
        file.close()


def test_table_writer_starts_a_new_block_before_an_entry_that_would_overflow_the_u32_size(
        tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A near-4-GiB value after other entries would make a block whose size the index cannot hold;
    # the limit is lowered here so that the rule shows on small data.
    monkeypatch.setattr(table_writer, "_MAX_BLOCK_BYTES", 100)
    fs = OSFileSystem()
    path = str(tmp_path / "000001.sst")
    file = fs.open(path, create=True)
    writer = TableWriter(file, 1, block_size=1 << 20, bloom_bits_per_key=10)
    writer.add(b"a", 1, b"x" * 10)
    writer.add(b"b", 2, b"y" * 90)
    writer.finish()
    file.close()
    reader = TableReader(fs, path, 1, BlockCache(1 << 20))
    assert reader.blocks == 2
    assert reader.get(b"b", 5) == (2, b"y" * 90)
    reader.close()


def _reference_blocks(entries: list[Entry], block_size: int, max_block_bytes: int) -> list[list[Entry]]:
    """The data blocks of a table as the writer cut them one entry at a time: a block closes once the bytes
    charged to it reach ``block_size``, and before an entry that would take it past ``max_block_bytes``."""
    blocks: list[list[Entry]] = []
    block: list[Entry] = []
    nbytes = 0
    for key, seq, value in entries:
        size = len(key) + (0 if value is None else len(value)) + record.BLOCK_ENTRY_ARRAYS
        if nbytes + size > max_block_bytes and block:
            blocks.append(block)
            block, nbytes = [], 0
        block.append((key, seq, value))
        nbytes += size
        if nbytes >= block_size:
            blocks.append(block)
            block, nbytes = [], 0
    if block:
        blocks.append(block)
    return blocks


@st.composite
def _writer_entries(draw: st.DrawFn) -> list[Entry]:
    """Table-order entries with deletes, several versions of a key, and values of up to twice 300 bytes."""
    keys = sorted(draw(st.lists(st.binary(min_size=1, max_size=6), max_size=60, unique=True)))
    entries: list[Entry] = []
    seq = 10_000
    for key in keys:
        for _ in range(draw(st.integers(1, 3))):
            value = draw(st.one_of(st.none(), st.binary(max_size=4),
                                   st.integers(0, 600).map(lambda n: b"v" * n)))
            entries.append((key, seq, value))
            seq -= 1
    return entries


@given(_writer_entries(), st.integers(64, 300), st.sampled_from([None, 40, 100, 200, 320]),
       st.lists(st.integers(1, 50), min_size=1, max_size=5), st.data())
def test_table_writer_chunks_write_the_blocks_of_the_per_entry_rule(entries: list[Entry], block_size: int,
                                                                   max_block_bytes: int | None, cuts: list[int],
                                                                   data: st.DataObject) -> None:
    # whatever chunks the entries come in, the blocks are the ones the per-entry rule cuts, byte for byte;
    # a lowered u32 limit (max_block_bytes) makes the rule for near-4-GiB values show on small data
    limit = table_writer._MAX_BLOCK_BYTES if max_block_bytes is None else max_block_bytes
    expected = [block.encode_block([k for k, _, _ in part], [q for _, q, _ in part], [v for _, _, v in part])
                for part in _reference_blocks(entries, block_size, limit)]
    files = []
    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as patch:
        patch.setattr(table_writer, "_MAX_BLOCK_BYTES", limit)
        for way in ("chunks", "one by one"):
            path = os.path.join(tmp, f"{way}.sst")
            file = FS.open(path, create=True)
            try:
                writer = TableWriter(file, 7, block_size, 10)
                if way == "chunks":
                    at = 0
                    while at < len(entries):
                        end = at + data.draw(st.sampled_from(cuts))
                        writer.add_chunk(*map(list, zip(*entries[at:end])))
                        at = end
                else:
                    for entry in entries:
                        writer.add(*entry)
                info = writer.finish()
            finally:
                file.close()
            assert (info.entries, info.deletes) == (len(entries), sum(v is None for _, _, v in entries))
            if entries:
                assert (info.min_seq, info.max_seq) == (min(s for _, s, _ in entries), max(s for _, s, _ in entries))
                assert (info.smallest, info.largest) == (entries[0][0], entries[-1][0])
            reader = _open(path, 7)
            try:
                assert [reader._chunk(off, size) for off, size in zip(reader._offsets, reader._sizes)] == expected
                assert list(reader.entries()) == entries
            finally:
                reader.close()
            with open(path, "rb") as f:
                files.append(f.read())
    assert files[0] == files[1]


# ---------------------------------------------------------------- chunks, and keys found in place


@pytest.mark.parametrize("snapshot", SPAN_SNAPSHOTS, ids=[f"snap{s}" for s in SPAN_SNAPSHOTS])
@pytest.mark.parametrize("cached", [False, True], ids=["fresh-blocks", "decoded-blocks"])
def test_table_chunks_are_the_items_in_ascending_chunks(spanning_table: tuple[str, list[Entry]], snapshot: int,
                                                        cached: bool) -> None:
    # a seek's first rows are sliced one by one from blocks not yet decoded; later ones come from decoded
    # blocks; either way the chunks, turned back into rows, are what items() yields
    path, entries = spanning_table
    reader = _open(path, 9, BlockCache(1 << 20 if cached else 0))
    try:
        if cached:
            list(reader.items(None, snapshot))
        for start in (None, b"a", b"b", b"c", b"m", b"n", b"y", b"z"):
            for reverse in (False, True):
                for inclusive in (True, False):
                    for first in (1, 3, 12):
                        chunks = list(reader.chunks(start, snapshot, reverse, inclusive, first))
                        assert all(chunk == sorted(chunk) and chunk for chunk in chunks)
                        rows = [row for chunk in chunks for row in (reversed(chunk) if reverse else chunk)]
                        assert rows == _model_items(entries, start, snapshot, reverse, inclusive), (
                            start, reverse, inclusive, first)
    finally:
        reader.close()


@given(st.lists(st.tuples(st.binary(min_size=4, max_size=4), st.integers(1, 50)), max_size=120),
       st.binary(min_size=4, max_size=4), st.booleans())
def test_a_block_finds_keys_in_place_as_bisect_does(pairs: list[tuple[bytes, int]], probe: bytes,
                                                    after: bool) -> None:
    # fixed-size keys and values: the block's layout finds entries in the payload without decoding it
    entries = sorted({(k, -s): None for k, s in pairs})
    keys = [k for k, _ in entries]
    seqs = [-s for _, s in entries]
    payload = block.encode_block(keys, seqs, [b"v" * 8] * len(keys))
    for _ in range(2):  # the second time its lengths are seen, the layout exists
        fresh = block.BlockEntries(payload, "t", 0)
    want = bisect.bisect_right(keys, probe) if after else bisect.bisect_left(keys, probe)
    assert fresh.find(probe, after) == want
    assert [fresh.key_at(j) for j in range(fresh.count)] == keys
    assert [fresh.seq(j) for j in range(fresh.count)] == seqs
    assert not keys or fresh.decoded() is False
    assert list(fresh.keys) == keys and fresh.find(probe, after) == want
