"""DESIGN.md agrees with the code: every worked hex example is what the encoders produce, byte for byte.

Each example in DESIGN.md is marked ``<!-- example: NAME -->`` right before a fenced ``hex`` block.  For
every NAME this file holds the inputs the document states beside the example, builds the bytes with the
encoders of ``kvstore.record`` (and ``kvstore.bloom``), and checks them against the document; it also
decodes the document's bytes back into the stated fields, recomputes each CRC over exactly what the
document says it covers, and replays the merge-policy table on a real KV.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from kvstore import KV, Config, block, bloom, rangedel, record
from kvstore.fs import OSFileSystem
from kvstore.metadata import Meta, MetaStore
from kvstore.sorted_file import BlockCache, TableReader
from kvstore.table_writer import TableWriter
from kvstore.wal import WalWriter, replay_log

DESIGN = Path(__file__).resolve().parent.parent / "DESIGN.md"

_MARKER = re.compile(r"<!-- example: (.*?) -->")
_EXAMPLE = re.compile(r"<!-- example: ([a-z0-9_]+) -->\n```hex\n(.*?)```", re.DOTALL)

# ---------------------------------------------------------------- the inputs DESIGN.md states

# "the first frame of log 7, at offset 20: sequence 42, durable_offset 20, apple = red, fig = ripe expiring at
# 1767225600.0, a delete of kiwi and a range delete of [m, p)"
LOG_NUMBER = 7
COMMIT_SEQUENCE = 42
COMMIT_DURABLE = 20
EXPIRES = 1767225600.0
COMMIT_WRITES: list[tuple[bytes, bytes | None]] = [(b"apple", b"red"), (b"fig", record.Expiring.of(b"ripe", EXPIRES)),
                                                   (b"kiwi", None), (b"m", record.RangeEnd(b"p"))]
# "the log file is then 106 bytes"
LOG_SIZE = 106

# "table 12, block_size 4096, bloom_bits_per_key 10: apple@5 = red, fig@6 = ripe expiring at 1767225600.0,
# kiwi@9 = DELETE, kiwi@4 = green"
TABLE_NUMBER = 12
TABLE_ENTRIES: list[tuple[bytes, int, bytes | None]] = [(b"apple", 5, b"red"),
                                                        (b"fig", 6, record.Expiring.of(b"ripe", EXPIRES)),
                                                        (b"kiwi", 9, None), (b"kiwi", 4, b"green")]
BLOCK_SIZE = 4096
BLOOM_BITS = 10
# "and one range tombstone, [b, d) at sequence 7"
TABLE_RANGES = rangedel.Fragments.of([(b"b", b"d", 7)])
# "header (0..19), one data block (20..123), index (124..162), bloom (163..232), range tombstones
# (233..259), properties (260..336), footer (337..392)"
TABLE_OFFSETS = {"table_header": 0, "table_data_block": 20, "table_index": 124, "table_bloom": 163,
                 "table_ranges": 233, "table_props": 260, "table_footer": 337}
TABLE_SIZE = 393
TABLE_PARTS = tuple(TABLE_OFFSETS)
# "a version 1 table of the entries of apple and kiwi alone ... at offset 133 of that table"
CHUNK_OFFSETS = {**TABLE_OFFSETS, "table_bloom_v1": 133}
BLOOM_V1_KEYS = (b"apple", b"kiwi")
# the hashes, their windows "h >> 19" and "h & 8191" and the bits each window's entry sets
BLOOM_HASHES = {b"apple": 0x95CB3A6A, b"fig": 0x2CD2A7E0, b"kiwi": 0xC7F3686E}
BLOOM_WINDOWS = {b"apple": (4793, 6762), b"fig": (1434, 2016), b"kiwi": (6398, 2158)}
BLOOM_BITS_OF = {b"apple": ({309, 380, 485}, {86, 106, 452}), b"fig": ({80, 458, 501}, {146, 292, 450}),
                 b"kiwi": ({146, 288, 446}, {104, 235, 378})}
# version 1: "CRC32C(b"apple") = 0x95cb3a6a sets bits 42, 15, 52, 25, 62, 35, 8; CRC32C(b"kiwi") = 0xc7f3686e
# sets bits 46, 39, 32, 25, 18, 11, 4"
BLOOM_V1_SET_BITS = {42, 15, 52, 25, 62, 35, 8} | {46, 39, 32, 25, 18, 11, 4}

# "slot 1 at version 5, next_file 15, log_number 13, last_sequence 42, tables 14 (newest) and 12"
META_SLOT = 1
META_FIELDS = (5, 15, 13, 42, [14, 12])


def _table_keys() -> tuple[list[bytes], list[int], list[bytes | None]]:
    return [e[0] for e in TABLE_ENTRIES], [e[1] for e in TABLE_ENTRIES], [e[2] for e in TABLE_ENTRIES]


def _data_payload() -> bytes:
    return block.encode_block(*_table_keys(), expiring=True)


def _index_payload() -> bytes:
    data_size = len(_data_payload()) + record.CHUNK_CRC.size
    last_key, last_seq = TABLE_ENTRIES[-1][0], TABLE_ENTRIES[-1][1]
    return block.encode_block([last_key], [last_seq], [record.INDEX_VALUE.pack(TABLE_OFFSETS["table_data_block"],
                                                                                data_size)])


def _bloom_hashes() -> list[int]:
    return [record.key_hash(k) for k in sorted({e[0] for e in TABLE_ENTRIES})]


def _bloom_payload() -> bytes:
    return bloom.build(_bloom_hashes(), BLOOM_BITS)


def _bloom_v1_payload() -> bytes:
    hashes = [record.key_hash(k) for k in BLOOM_V1_KEYS]
    return bloom.Bloom.build(hashes, len(hashes), BLOOM_BITS)


def _props_payload() -> bytes:
    seqs = [e[1] for e in TABLE_ENTRIES]
    deletes = sum(1 for e in TABLE_ENTRIES if e[2] is None)
    ranges = (TABLE_OFFSETS["table_ranges"], len(_chunk("table_ranges", rangedel.encode(TABLE_RANGES))))
    expiries = [e[2].expires for e in TABLE_ENTRIES if isinstance(e[2], record.Expiring)]
    return record.encode_props(len(TABLE_ENTRIES), deletes, min(seqs), max(seqs), TABLE_ENTRIES[0][0],
                               TABLE_ENTRIES[-1][0], ranges, (len(expiries), min(expiries)))


def _chunk(name: str, payload: bytes) -> bytes:
    return record.seal_chunk(TABLE_NUMBER, CHUNK_OFFSETS[name], payload)


def _footer() -> bytes:
    def place(name: str) -> tuple[int, int]:
        return TABLE_OFFSETS[name], len(BUILDERS[name]())

    return record.encode_footer(place("table_index"), place("table_bloom"), place("table_props"), TABLE_NUMBER)


#: Every example DESIGN.md shows, built from the encoders with the inputs above.
BUILDERS: dict[str, Callable[[], bytes]] = {
    "file_header": lambda: record.encode_file_header(record.WAL_MAGIC, LOG_NUMBER),
    "wal_frame": lambda: record.encode_frame(
        LOG_NUMBER, record.RecordType.COMMIT, record.encode_commit(COMMIT_SEQUENCE, COMMIT_DURABLE, COMMIT_WRITES)),
    "table_header": lambda: record.encode_file_header(record.TABLE_MAGIC, TABLE_NUMBER),
    "table_data_block": lambda: _chunk("table_data_block", _data_payload()),
    "table_index": lambda: _chunk("table_index", _index_payload()),
    "table_bloom": lambda: _chunk("table_bloom", _bloom_payload()),
    "table_bloom_v1": lambda: _chunk("table_bloom_v1", _bloom_v1_payload()),
    "table_ranges": lambda: _chunk("table_ranges", rangedel.encode(TABLE_RANGES)),
    "table_props": lambda: _chunk("table_props", _props_payload()),
    "table_footer": _footer,
    "meta_slot": lambda: record.encode_meta(META_SLOT, *META_FIELDS),
}
NAMES = sorted(BUILDERS)


def _doc_text() -> str:
    return DESIGN.read_text(encoding="utf-8")


def _doc_examples() -> dict[str, bytes]:
    """Name -> bytes of every example block in DESIGN.md."""
    found: dict[str, bytes] = {}
    for match in _EXAMPLE.finditer(_doc_text()):
        name, body = match.group(1), match.group(2)
        assert re.fullmatch(r"[0-9a-f\s]*", body), f"example {name}: only lowercase hex and whitespace allowed"
        assert name not in found, f"example {name} appears twice"
        found[name] = bytes.fromhex("".join(body.split()))
    return found


def _doc(name: str) -> bytes:
    return _doc_examples()[name]


# ---------------------------------------------------------------- the examples and the encoders agree


def test_design_doc_every_example_marker_is_followed_by_a_hex_block() -> None:
    markers = _MARKER.findall(_doc_text())
    assert markers, "DESIGN.md has no worked examples"
    assert sorted(markers) == sorted(_doc_examples()), "a marker is not directly followed by a ```hex block"


def test_design_doc_shows_exactly_the_examples_this_test_builds() -> None:
    assert sorted(_doc_examples()) == NAMES


@pytest.mark.parametrize("name", NAMES, ids=NAMES)
def test_design_doc_example_matches_encoder(name: str) -> None:
    built = BUILDERS[name]()
    shown = _doc(name)
    assert shown == built, f"{name}: DESIGN.md shows\n{shown.hex(' ')}\nthe encoder gives\n{built.hex(' ')}"


# ---------------------------------------------------------------- the examples decode to the stated fields


def _decode_file_header(data: bytes, magic: bytes, number: int) -> None:
    version = record.decode_file_header(data, "example", magic, number)
    assert record.FILE_HEADER.unpack(data)[:4] == (magic, version, 0, number)
    assert version == {record.TABLE_MAGIC: 4, record.WAL_MAGIC: 3}.get(magic, 1) == record.newest_version(magic)


def _decode_wal_frame(data: bytes) -> None:
    stored, length, rtype = record.WAL_FRAME.unpack_from(data, 0)
    payload = data[record.WAL_FRAME.size:]
    assert (length, rtype) == (len(payload), record.RecordType.COMMIT)
    assert record.frame_crc(LOG_NUMBER, length, rtype, payload) == stored
    decoded = record.decode_commit(payload, "example", record.FILE_HEADER.size)
    assert decoded == (COMMIT_SEQUENCE, COMMIT_DURABLE, COMMIT_WRITES)
    assert [type(value) for _, value in decoded[2]] == [bytes, record.Expiring, type(None), record.RangeEnd]
    fig = decoded[2][1][1]
    assert isinstance(fig, record.Expiring) and (fig.expires, fig.data) == (EXPIRES, b"ripe")
    # "kind 3 (EXPIRING), value_len 12: the expiry f64 1767225600.0 (00 00 00 40 6e 55 da 41), then ripe"
    assert payload[record.COMMIT_HEADER.size + 15 :][:7] == record.WAL_ENTRY.pack(3, 3, 12)
    assert record.EXPIRY.pack(EXPIRES) == bytes.fromhex("00 00 00 40 6e 55 da 41")


def _open(name: str, data: bytes) -> bytes:
    return record.open_chunk(data, "example", TABLE_NUMBER, CHUNK_OFFSETS[name])


def _decode_data_block(data: bytes) -> None:
    payload = _open("table_data_block", data)
    keys, seqs, values = _table_keys()
    decoded = block.decode_block(payload, "example", TABLE_OFFSETS["table_data_block"])
    assert decoded == (keys, seqs, values)
    # "kind u8[4]: 1, 3, 0, 1"; fig's value is its expiry, then ripe
    assert payload[-8:-4] == bytes([1, 3, 0, 1]) and record.BLOCK_COUNT.unpack(payload[-4:]) == (4,)
    fig = decoded[2][1]
    assert isinstance(fig, record.Expiring) and (fig.expires, fig.data) == (EXPIRES, b"ripe")


def _decode_index(data: bytes) -> None:
    payload = _open("table_index", data)
    keys, _, values = block.decode_block(payload, "example", TABLE_OFFSETS["table_index"])
    assert keys == [b"kiwi"]
    value = values[0]
    assert value is not None
    # "block offset 20 (u64), block size 104 (u32, crc included)"
    assert record.INDEX_VALUE.unpack(value) == (20, 104)
    assert TABLE_OFFSETS["table_data_block"] + 104 == TABLE_OFFSETS["table_index"]


def _decode_bloom(data: bytes) -> None:
    payload = _open("table_bloom", data)
    # "one line (64 bytes), then k = 6 and kind 1"
    assert len(payload) == 64 + 2 and payload[-2:] == bytes([6, record.BloomKind.BLOCKED])
    assert bloom.num_probes(BLOOM_BITS) == 6 and bloom.lines_for(3, BLOOM_BITS) == 1
    bits = {p for p in range(512) if payload[p >> 3] & (1 << (p & 7))}
    assert bits == set().union(*(a | b for a, b in BLOOM_BITS_OF.values()))
    table_a, table_b = bloom.mask_tables(6)
    for key, h in BLOOM_HASHES.items():
        assert record.key_hash(key) == h
        assert (h >> 19, h & 8191) == BLOOM_WINDOWS[key]
        for table, window, set_bits in zip((table_a, table_b), BLOOM_WINDOWS[key], BLOOM_BITS_OF[key]):
            assert table[window] == sum(1 << p for p in set_bits)
        assert bloom.BlockedBloom(payload, "example", TABLE_OFFSETS["table_bloom"]).may_contain(h)


def _decode_bloom_v1(data: bytes) -> None:
    payload = _open("table_bloom_v1", data)
    assert len(payload) == 64 // 8 + 1 and payload[-1] == 7 == bloom.v1_probes(BLOOM_BITS)
    bits = {p for p in range(64) if payload[p >> 3] & (1 << (p & 7))}
    assert bits == BLOOM_V1_SET_BITS
    v1 = bloom.Bloom(payload)
    for key in BLOOM_V1_KEYS:
        assert v1.may_contain(BLOOM_HASHES[key])


def _decode_props(data: bytes) -> None:
    payload = _open("table_props", data)
    decoded = record.decode_props(payload, "example", TABLE_OFFSETS["table_props"])
    assert decoded == (4, 1, 4, 9, b"apple", b"kiwi", (233, 27), (1, EXPIRES))
    assert decoded.expiry == (1, 1767225600.0) and payload[-8:] == record.EXPIRY.pack(EXPIRES)


def _decode_ranges(data: bytes) -> None:
    payload = _open("table_ranges", data)
    fragments = rangedel.decode(payload, "example", TABLE_OFFSETS["table_ranges"])
    assert fragments == TABLE_RANGES and fragments.tombstones() == [(b"b", b"d", 7)]


def _decode_footer(data: bytes) -> None:
    placed = record.decode_footer(data, "example", TABLE_OFFSETS["table_footer"], TABLE_NUMBER, version=4)
    assert placed == ((124, 39), (163, 70), (260, 77))
    assert record.FOOTER.unpack(data)[8] == 4
    assert TABLE_OFFSETS["table_footer"] + record.FOOTER.size == TABLE_SIZE


def _decode_meta(data: bytes) -> None:
    assert record.decode_meta(data, "meta1", META_SLOT) == META_FIELDS
    assert len(data) == 60 + 8 * len(META_FIELDS[4])


DECODERS: dict[str, Callable[[bytes], None]] = {
    "file_header": lambda data: _decode_file_header(data, record.WAL_MAGIC, LOG_NUMBER),
    "wal_frame": _decode_wal_frame,
    "table_header": lambda data: _decode_file_header(data, record.TABLE_MAGIC, TABLE_NUMBER),
    "table_data_block": _decode_data_block,
    "table_index": _decode_index,
    "table_bloom": _decode_bloom,
    "table_bloom_v1": _decode_bloom_v1,
    "table_ranges": _decode_ranges,
    "table_props": _decode_props,
    "table_footer": _decode_footer,
    "meta_slot": _decode_meta,
}


def test_design_doc_every_example_has_a_decoder_check() -> None:
    assert sorted(DECODERS) == NAMES


@pytest.mark.parametrize("name", NAMES, ids=NAMES)
def test_design_doc_example_decodes_to_the_stated_fields(name: str) -> None:
    DECODERS[name](_doc(name))


# ---------------------------------------------------------------- each CRC covers what DESIGN.md says


def _stored_crc(data: bytes, offset: int) -> int:
    value: int = record.CHUNK_CRC.unpack_from(data, offset)[0]
    return value


def _covered(name: str, data: bytes) -> list[tuple[bytes, int]]:
    """(the bytes DESIGN.md says a CRC covers, the offset of that CRC) for each CRC in an example."""
    u64 = struct.Struct("<Q").pack
    if name in ("file_header", "table_header"):
        return [(data[:16], 16)]  # "CRC32C of bytes 0..15"
    if name == "wal_frame":  # "the log number (u64), length, type, payload"
        return [(u64(LOG_NUMBER) + data[4:], 0)]
    if name.startswith("table_"):
        if name == "table_footer":
            return [(data[:52], 52)]  # "CRC32C of footer bytes 0..51"
        # "CRC32C of: file_number (u64), off (u64), payload"
        return [(u64(TABLE_NUMBER) + u64(CHUNK_OFFSETS[name]) + data[:-4], len(data) - 4)]
    assert name == "meta_slot"  # the header's CRC, and "CRC32C of bytes 0 .. 55 + 8n (header included)"
    return [(data[:16], 16), (data[:-4], len(data) - 4)]


@pytest.mark.parametrize("name", NAMES, ids=NAMES)
def test_design_doc_each_crc_covers_what_the_doc_says(name: str) -> None:
    data = _doc(name)
    for covered, at in _covered(name, data):
        assert record.crc(covered) == _stored_crc(data, at)


def test_design_doc_crc32c_check_value_is_the_standard_one() -> None:
    assert record.crc(b"123456789") == 0xE3069283
    assert record.crc(b"456789", record.crc(b"123")) == record.crc(b"123456789")


# ---------------------------------------------------------------- the examples are what the writers write


def test_design_doc_wal_example_is_what_the_wal_writer_writes(tmp_path: Path) -> None:
    fs = OSFileSystem()
    path = str(tmp_path / "000007.log")
    wal = WalWriter.create(fs, str(tmp_path), path, LOG_NUMBER)
    try:
        assert wal.durable == COMMIT_DURABLE  # the header is fsynced before any frame
        wal.append(COMMIT_SEQUENCE, COMMIT_WRITES, sync=True)
    finally:
        wal.close()
    expected = _doc("file_header") + _doc("wal_frame")
    assert len(expected) == LOG_SIZE
    assert Path(path).read_bytes() == expected
    replay = replay_log(fs, path, LOG_NUMBER, last=True)
    assert replay.commits == [(COMMIT_SEQUENCE, COMMIT_WRITES)]
    assert type(replay.commits[0][1][1][1]) is record.Expiring
    assert (replay.valid_end, replay.damage) == (LOG_SIZE, None)


def test_design_doc_table_example_is_what_the_table_writer_writes(tmp_path: Path) -> None:
    fs = OSFileSystem()
    path = str(tmp_path / "000012.sst")
    file = fs.open(path, create=True)
    try:
        writer = TableWriter(file, TABLE_NUMBER, BLOCK_SIZE, BLOOM_BITS)
        writer.add_all(TABLE_ENTRIES)
        info = writer.finish(TABLE_RANGES)
    finally:
        file.close()
    expected = b"".join(_doc(name) for name in TABLE_PARTS)
    assert Path(path).read_bytes() == expected
    assert info.size == TABLE_SIZE == len(expected)
    offset = 0
    for name in TABLE_PARTS:
        assert TABLE_OFFSETS[name] == offset, name
        offset += len(_doc(name))
    reader = TableReader(fs, path, TABLE_NUMBER, BlockCache(1 << 20))
    try:
        assert reader.get(b"kiwi", 100) == (9, None)  # the newer version of kiwi, a delete, comes first
        assert reader.get(b"kiwi", 8) == (4, b"green")
        assert reader.get(b"apple", 5) == (5, b"red")
        found = reader.get(b"fig", 100)
        assert found is not None and found[0] == 6
        fig = found[1]
        assert type(fig) is record.Expiring and (fig.expires, fig.data) == (EXPIRES, b"ripe")
        assert (reader.version, reader.expiring, reader.earliest) == (4, 1, EXPIRES)
        assert reader.fragments == TABLE_RANGES and (reader.lo, reader.hi) == (b"apple", b"kiwi")
        assert reader.verify() == []
    finally:
        reader.close()


def test_design_doc_meta_example_is_what_the_meta_store_writes(tmp_path: Path) -> None:
    store = MetaStore(OSFileSystem(), str(tmp_path))
    version, next_file, log_number, last_sequence, tables = META_FIELDS
    store.write(Meta(version - 1, next_file, log_number, last_sequence, (12,)))  # a new database's slot 0
    store.write(Meta(version, next_file, log_number, last_sequence, tuple(tables)))  # then the other slot
    assert (tmp_path / "meta1").read_bytes() == _doc("meta_slot")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["meta0", "meta1"]
    loaded = MetaStore(OSFileSystem(), str(tmp_path)).load()
    assert loaded == Meta(version, next_file, log_number, last_sequence, tuple(tables))


def test_design_doc_format_sizes_match_the_drawings() -> None:
    sizes = {"FILE_HEADER": 20, "WAL_FRAME": 9, "WAL_CRC_PREFIX": 13, "COMMIT_HEADER": 20, "WAL_ENTRY": 7,
             "CHUNK_CRC": 4, "CHUNK_CRC_PREFIX": 16, "BLOCK_COUNT": 4, "INDEX_VALUE": 12, "PROPS": 36,
             "PROPS_RANGES": 12, "PROPS_EXPIRY": 16, "EXPIRY": 8, "FOOTER": 56, "META_BODY": 36}
    assert {name: getattr(record, name).size for name in sizes} == sizes
    assert record.BLOCK_ENTRY_ARRAYS == 2 + 4 + 8 + 1
    assert (record.WAL_MAGIC, record.TABLE_MAGIC, record.META_MAGIC) == (b"KVWL", b"KVST", b"KVMT")
    assert (record.FORMAT_VERSION, record.WAL_FORMAT_VERSION, record.TABLE_FORMAT_VERSION) == (1, 3, 4)
    assert {k.name: k.value for k in record.Kind} == {"DELETE": 0, "VALUE": 1, "RANGE_DELETE": 2, "EXPIRING": 3}
    assert (record.PROPS_RANGES.format, record.PROPS_EXPIRY.format, record.EXPIRY.format) == ("<QI", "<Qd", "<d")
    assert {t.name: t.value for t in record.RecordType} == {"RESERVED": 0, "COMMIT": 1}


def test_design_doc_limits_match_the_config_caps() -> None:
    from kvstore.config import MAX_KEY_SIZE_CAP, MAX_VALUE_SIZE_CAP

    text = _doc_text()
    assert MAX_KEY_SIZE_CAP == 65_535 and "65,535 bytes" in text
    assert MAX_VALUE_SIZE_CAP == 2**32 - 1 - 65_535 - 64 == 4_294_901_696 and "4,294,901,696 bytes" in text
    assert record.MAX_RECORD_PAYLOAD == 2**32 - 1


# ---------------------------------------------------------------- the merge-policy table is what a KV does

MERGE_TABLE_HEADER = "| flush | tables after the flush and its merges | tables | why |"


def test_design_doc_merge_policy_example_is_what_a_kv_does(tmp_path: Path) -> None:
    """Replay "Levels and merging": equal flushes with growth_factor 2 count in binary.

    The document's memtable is 4 MiB; the policy compares only ratios of sizes, so equal flushes of any
    size give the same table; sizes are reported in units of one flush, times 4 MiB.
    """
    lines = _doc_text().splitlines()
    start = lines.index(MERGE_TABLE_HEADER) + 2  # past the header and the |---| line
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append(line)
    assert len(rows) == 8, "the worked example shows eight flushes"
    config = Config(memtable_size=1 << 30, growth_factor=2.0, sync=False, background=False)
    with KV.open(tmp_path / "db", config) as kv:
        unit = 0
        for flush in range(1, 9):
            for i in range(200):  # equal flushes of 200 new keys of one length, values of one length, each
                kv.set(b"%08d" % (i * 1000 + flush), b"v" * 100)  # flush over the same key range
            kv.flush()
            sizes = [t.bytes for t in kv.stats().tables]
            unit = unit or sizes[0]
            mib = ", ".join(str(4 * round(size / unit)) for size in sizes)
            row = f"| {flush} | {mib} | {len(sizes)} |"
            assert rows[flush - 1].startswith(row), f"DESIGN.md shows {rows[flush - 1]!r}, a KV gives {row!r}"
