"""The file layouts of kvstore/record.py (file headers, checked chunks, table properties and footers, meta
slots): round trips, and every decoder's answer to damaged input.

A decoder given truncated, extended, bit-flipped or random bytes either decodes or raises
``CorruptionError`` (``UnsupportedFormatError`` for an intact newer version); never ``struct.error``,
``IndexError`` or ``ValueError``.  Decoders whose input carries its own checksum or exact length
always raise on such damage.  The log's commit units and frames are in test_record_wal.py, a table's
blocks in test_block.py.
"""

from __future__ import annotations

import math
import struct
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st
from recordhelp import EXPIRES, PATH, _decodes_or_corrupt, _flip, expiries_st, keys_st, mutations

from kvstore import block, record
from kvstore.errors import BadChecksumError, CorruptionError, CorruptSSTableError, UnsupportedFormatError

# ---------------------------------------------------------------- layouts


def test_record_structs_are_little_endian_with_their_documented_sizes() -> None:
    sizes = {
        record.FILE_HEADER: 20, record.WAL_FRAME: 9, record.WAL_CRC_PREFIX: 13, record.COMMIT_HEADER: 20,
        record.WAL_ENTRY: 7, record.CHUNK_CRC: 4, record.CHUNK_CRC_PREFIX: 16, record.BLOCK_COUNT: 4,
        record.INDEX_VALUE: 12, record.PROPS: 36, record.PROPS_RANGES: 12, record.PROPS_EXPIRY: 16,
        record.EXPIRY: 8, record.FOOTER: 56, record.META_BODY: 36, record.U64: 8,
    }
    for layout, size in sizes.items():
        assert layout.format.startswith("<"), layout.format
        assert layout.size == size, layout.format


def test_on_disk_enums_keep_their_numbers() -> None:
    assert (record.Kind.DELETE, record.Kind.VALUE, record.Kind.RANGE_DELETE, record.Kind.EXPIRING) == (0, 1, 2, 3)
    assert (record.RecordType.RESERVED, record.RecordType.COMMIT) == (0, 1)


def test_key_hash_is_crc32c_and_stable_across_processes() -> None:
    # the standard CRC-32C check value: a bloom filter written by one process is read by another
    assert record.key_hash(b"123456789") == 0xE3069283
    assert record.key_hash(b"") == 0
    assert record.crc(b"6789", record.crc(b"12345")) == 0xE3069283


def test_file_header_layout_is_magic_version_reserved_number_crc() -> None:
    header = record.encode_file_header(record.WAL_MAGIC, 0x0102)
    assert header[:4] == b"KVWL"
    assert header[4:6] == struct.pack("<H", record.WAL_FORMAT_VERSION)
    assert header[6:8] == b"\0\0"
    assert header[8:16] == struct.pack("<Q", 0x0102)
    assert header[16:] == struct.pack("<I", record.crc(header[:16]))


# ---------------------------------------------------------------- file header

MAGICS = [record.WAL_MAGIC, record.TABLE_MAGIC, record.META_MAGIC]


@pytest.mark.parametrize("magic", MAGICS, ids=[m.decode() for m in MAGICS])
def test_file_header_round_trips(magic: bytes) -> None:
    header = record.encode_file_header(magic, 42)
    assert len(header) == record.FILE_HEADER.size
    record.decode_file_header(header, PATH, magic, 42)
    # a reader hands it the file's first bytes: what follows the header is not its business
    record.decode_file_header(header + b"frames follow", PATH, magic, 42)


def test_file_header_with_another_magic_is_corrupt() -> None:
    header = record.encode_file_header(record.WAL_MAGIC, 1)
    with pytest.raises(CorruptionError) as info:
        record.decode_file_header(header, PATH, record.TABLE_MAGIC, 1)
    assert (info.value.path, info.value.offset) == (PATH, 0)


def test_file_header_naming_another_file_number_is_corrupt() -> None:
    header = record.encode_file_header(record.TABLE_MAGIC, 5)
    with pytest.raises(CorruptionError, match="file number"):
        record.decode_file_header(header, PATH, record.TABLE_MAGIC, 6)


@pytest.mark.parametrize("magic", MAGICS, ids=[m.decode() for m in MAGICS])
def test_file_header_newer_version_with_valid_checksum_is_unsupported(magic: bytes) -> None:
    header = record.encode_file_header(magic, 3, version=record.newest_version(magic) + 1)
    with pytest.raises(UnsupportedFormatError):
        record.decode_file_header(header, PATH, magic, 3)


@pytest.mark.parametrize("magic", MAGICS, ids=[m.decode() for m in MAGICS])
def test_file_header_every_version_up_to_the_newest_is_read(magic: bytes) -> None:
    """Meta slots are at version 2, logs at 3 and tables at 4; every older version is still read."""
    assert record.newest_version(magic) == {record.META_MAGIC: 2, record.WAL_MAGIC: 3, record.TABLE_MAGIC: 4}[magic]
    assert record.encode_file_header(magic, 3)[4:6] == record.newest_version(magic).to_bytes(2, "little")
    for version in range(1, record.newest_version(magic) + 1):
        header = record.encode_file_header(magic, 3, version=version)
        assert record.decode_file_header(header, PATH, magic, 3) == version


@pytest.mark.parametrize("cut", range(record.FILE_HEADER.size), ids=lambda n: f"{n}B")
def test_file_header_truncated_is_corrupt(cut: int) -> None:
    header = record.encode_file_header(record.META_MAGIC, 0)
    with pytest.raises(CorruptionError) as info:
        record.decode_file_header(header[:cut], PATH, record.META_MAGIC, 0)
    assert info.value.offset == 0


@pytest.mark.parametrize("bit", range(record.FILE_HEADER.size * 8), ids=lambda b: f"bit{b}")
def test_file_header_any_flipped_bit_is_corrupt(bit: int) -> None:
    header = record.encode_file_header(record.WAL_MAGIC, 9)
    with pytest.raises(CorruptionError):
        record.decode_file_header(_flip(header, bit), PATH, record.WAL_MAGIC, 9)


@given(st.binary(max_size=64))
def test_file_header_random_bytes_decode_or_raise_corruption(data: bytes) -> None:
    _decodes_or_corrupt(lambda: record.decode_file_header(data, PATH, record.WAL_MAGIC, 1))


# ---------------------------------------------------------------- checked chunks


def test_chunk_round_trips() -> None:
    chunk = record.seal_chunk(7, 4096, b"payload")
    assert len(chunk) == len(b"payload") + 4
    assert record.open_chunk(chunk, PATH, 7, 4096) == b"payload"
    assert record.open_chunk(record.seal_chunk(7, 20, b""), PATH, 7, 20) == b""


@given(st.data(), st.binary(max_size=100))
def test_check_chunk_checks_in_place_what_open_chunk_checks(data: st.DataObject, payload: bytes) -> None:
    chunk = record.seal_chunk(7, 4096, payload)
    assert record.check_chunk(chunk, PATH, 7, 4096) == len(payload)  # the payload is chunk[:that]
    _, damaged = data.draw(mutations(chunk))
    with pytest.raises(CorruptionError) as info:
        record.check_chunk(damaged, PATH, 7, 4096)
    assert info.value.offset == 4096


def test_a_block_read_with_its_checksum_behind_it_decodes_as_the_payload_alone() -> None:
    keys, seqs, values = [b"a", b"bb", b"c"], [3, 2, 1], [b"x", None, b"zz"]
    payload = block.encode_block(keys, seqs, values)
    chunk = record.seal_chunk(7, 4096, payload)
    end = record.check_chunk(chunk, PATH, 7, 4096)
    assert block.decode_block(chunk, PATH, 4096, end) == block.decode_block(payload, PATH, 4096) == (
        keys, seqs, values)


@pytest.mark.parametrize(("number", "offset"), [(8, 4096), (7, 4097)], ids=["other-file", "other-offset"])
def test_chunk_read_as_another_file_or_offset_fails_its_checksum(number: int, offset: int) -> None:
    chunk = record.seal_chunk(7, 4096, b"payload")
    with pytest.raises(BadChecksumError) as info:
        record.open_chunk(chunk, PATH, number, offset)
    assert (info.value.path, info.value.offset) == (PATH, offset)


@given(st.data(), st.binary(max_size=100))
def test_chunk_mutated_is_always_corrupt(data: st.DataObject, payload: bytes) -> None:
    chunk = record.seal_chunk(7, 4096, payload)
    _, damaged = data.draw(mutations(chunk))
    with pytest.raises(CorruptionError) as info:
        record.open_chunk(damaged, PATH, 7, 4096)
    assert info.value.offset == 4096


@given(st.binary(max_size=100))
def test_chunk_random_bytes_decode_or_raise_corruption(data: bytes) -> None:
    _decodes_or_corrupt(lambda: record.open_chunk(data, PATH, 7, 4096))


# ---------------------------------------------------------------- properties


PROPS = [(0, 0, 0, 0, b"", b"", (0, 0), (0, 0.0)), (10, 3, 1, 99, b"aaa", b"zzz", (500, 40), (4, 1767225600.5)),
         (2**64 - 1, 0, 5, 2**64 - 1, b"\0" * 300, b"\xff", (2**64 - 1, 2**32 - 1), (2**64 - 1, -sys.float_info.max))]


@pytest.mark.parametrize("props", PROPS, ids=["empty", "small", "extremes"])
def test_props_round_trip(props: tuple[int, int, int, int, bytes, bytes, tuple[int, int], tuple[int, float]]) -> None:
    decoded = record.decode_props(record.encode_props(*props), PATH, 99)
    assert decoded == props and isinstance(decoded, record.Props)
    assert (decoded.ranges, decoded.expiry) == props[6:]


@pytest.mark.parametrize("version", [1, 2])
def test_props_before_version_3_have_no_range_section(version: int) -> None:
    """Versions 1 and 2 end at the largest key: no place for range tombstones or expiries, read as (0, 0)
    and (0, 0.0); the same bytes read as version 3 or 4 are too short for their lengths."""
    payload = record.encode_props(10, 3, 1, 99, b"aaa", b"zzz", None)
    assert record.decode_props(payload, PATH, 99, version) == (10, 3, 1, 99, b"aaa", b"zzz", (0, 0), (0, 0.0))
    for newer in (3, 4):
        with pytest.raises(CorruptSSTableError, match="properties"):
            record.decode_props(payload, PATH, 99, newer)


@given(st.data(), keys_st, keys_st)
def test_props_mutated_decode_or_raise_and_length_damage_always_raises(data: st.DataObject, small: bytes,
                                                                         large: bytes) -> None:
    payload = record.encode_props(4, 1, 2, 9, small, large)
    kind, damaged = data.draw(mutations(payload))
    if kind == "flip":
        _decodes_or_corrupt(lambda: record.decode_props(damaged, PATH, 99))
    else:
        with pytest.raises(CorruptSSTableError) as info:
            record.decode_props(damaged, PATH, 99)
        assert info.value.offset == 99


@given(st.binary(max_size=100))
def test_props_random_bytes_decode_or_raise_corruption(data: bytes) -> None:
    _decodes_or_corrupt(lambda: record.decode_props(data, PATH, 99))


# ---------------------------------------------------------------- footer


def test_footer_round_trips() -> None:
    footer = record.encode_footer((1000, 50), (1050, 30), (1080, 60), 7)
    assert len(footer) == record.FOOTER.size
    assert record.decode_footer(footer, PATH, 1140, 7) == ((1000, 50), (1050, 30), (1080, 60))


def test_footer_of_a_version_1_table_is_read_and_must_agree_with_its_header() -> None:
    footer = record.encode_footer((1000, 50), (1050, 30), (1080, 60), 7, version=1)
    assert record.decode_footer(footer, PATH, 1140, 7, version=1) == ((1000, 50), (1050, 30), (1080, 60))
    with pytest.raises(CorruptSSTableError, match="format version 1, the header 2"):
        record.decode_footer(footer, PATH, 1140, 7, version=2)


def test_footer_naming_another_file_number_is_corrupt() -> None:
    footer = record.encode_footer((1000, 50), (1050, 30), (1080, 60), 7)
    with pytest.raises(CorruptSSTableError, match="file number"):
        record.decode_footer(footer, PATH, 1140, 8)


def test_footer_newer_version_with_valid_checksum_is_unsupported() -> None:
    body = record.FOOTER.pack(1000, 50, 1050, 30, 1080, 60, 7, record.TABLE_MAGIC, record.TABLE_FORMAT_VERSION + 1,
                              0, 0)[:-4]
    footer = body + record.CHUNK_CRC.pack(record.crc(body))
    with pytest.raises(UnsupportedFormatError):
        record.decode_footer(footer, PATH, 1140, 7)


@pytest.mark.parametrize("bit", range(0, record.FOOTER.size * 8, 3), ids=lambda b: f"bit{b}")
def test_footer_any_flipped_bit_is_corrupt(bit: int) -> None:
    footer = record.encode_footer((1000, 50), (1050, 30), (1080, 60), 7)
    with pytest.raises(CorruptSSTableError) as info:
        record.decode_footer(_flip(footer, bit), PATH, 1140, 7)
    assert (info.value.path, info.value.offset) == (PATH, 1140)


@given(st.data())
def test_footer_mutated_is_always_corrupt(data: st.DataObject) -> None:
    footer = record.encode_footer((1000, 50), (1050, 30), (1080, 60), 7)
    _, damaged = data.draw(mutations(footer))
    with pytest.raises(CorruptSSTableError):
        record.decode_footer(damaged, PATH, 1140, 7)


@given(st.binary(min_size=50, max_size=60))
def test_footer_random_bytes_decode_or_raise_corruption(data: bytes) -> None:
    _decodes_or_corrupt(lambda: record.decode_footer(data, PATH, 1140, 7))


# ---------------------------------------------------------------- meta slot

METAS = [(1, 2, 1, 0, []), (9, 40, 33, 12345, [31, 17, 3]), (2**64 - 1, 2**64 - 1, 0, 2**64 - 1, list(range(100)))]


@pytest.mark.parametrize("slot", [0, 1], ids=["meta0", "meta1"])
@pytest.mark.parametrize("meta", METAS, ids=["new", "three-tables", "extremes"])
def test_meta_round_trips(slot: int, meta: tuple[int, int, int, int, list[int]]) -> None:
    data = record.encode_meta(slot, *meta)
    assert record.decode_meta(data, "/db/meta", slot) == meta


def test_meta_read_as_the_other_slot_is_corrupt() -> None:
    data = record.encode_meta(0, *METAS[1])
    with pytest.raises(CorruptionError, match="file number"):
        record.decode_meta(data, "/db/meta1", 1)


def test_meta_newer_version_with_valid_checksum_is_unsupported() -> None:
    header = record.encode_file_header(record.META_MAGIC, 0, version=record.META_FORMAT_VERSION + 1)
    body = header + record.META_BODY.pack(1, 2, 1, 0, 0)
    with pytest.raises(UnsupportedFormatError):
        record.decode_meta(body + record.CHUNK_CRC.pack(record.crc(body)), "/db/meta0", 0)


def test_meta_every_flipped_bit_is_corrupt() -> None:
    data = record.encode_meta(1, *METAS[1])
    for bit in range(len(data) * 8):
        with pytest.raises(CorruptionError) as info:
            record.decode_meta(_flip(data, bit), "/db/meta1", 1)
        assert info.value.path == "/db/meta1" and info.value.offset >= 0


def test_meta_every_truncation_is_corrupt() -> None:
    data = record.encode_meta(1, *METAS[1])
    for cut in range(len(data)):
        with pytest.raises(CorruptionError):
            record.decode_meta(data[:cut], "/db/meta1", 1)


@given(st.data(), st.lists(st.integers(0, 2**64 - 1), max_size=20))
def test_meta_mutated_is_always_corrupt(data: st.DataObject, tables: list[int]) -> None:
    encoded = record.encode_meta(0, 3, 50, 40, 1000, tables)
    _, damaged = data.draw(mutations(encoded))
    with pytest.raises(CorruptionError):
        record.decode_meta(damaged, "/db/meta0", 0)


@given(st.binary(max_size=120))
def test_meta_random_bytes_decode_or_raise_corruption(data: bytes) -> None:
    _decodes_or_corrupt(lambda: record.decode_meta(data, "/db/meta0", 0))


@given(st.binary(max_size=80))
def test_meta_random_body_behind_a_valid_header_decodes_or_raises_corruption(body: bytes) -> None:
    data = record.encode_file_header(record.META_MAGIC, 0) + body
    _decodes_or_corrupt(lambda: record.decode_meta(data, "/db/meta0", 0))


# ---------------------------------------------------------------- the properties' expiry tail (table version 4)


def test_props_of_version_4_end_with_the_expiring_count_and_earliest_expiry() -> None:
    payload = record.encode_props(10, 3, 1, 99, b"aaa", b"zzz", (500, 40), (4, EXPIRES))
    assert payload[-16:] == struct.pack("<Qd", 4, EXPIRES)
    assert payload[-28:-16] == struct.pack("<QI", 500, 40)
    props = record.decode_props(payload, PATH, 99, 4)
    assert (props.entries, props.deletes, props.min_seq, props.max_seq) == (10, 3, 1, 99)
    assert (props.smallest, props.largest, props.ranges, props.expiry) == (b"aaa", b"zzz", (500, 40), (4, EXPIRES))


def test_props_of_version_3_have_no_expiry_tail() -> None:
    """A version 3 payload ends after the range section's place: its expiry reads as (0, 0.0); the same
    bytes read as version 4 are too short for their lengths, and a version 4 payload read as version 3 too
    long."""
    payload = record.encode_props(10, 3, 1, 99, b"aaa", b"zzz", (500, 40), None)
    assert len(payload) == record.PROPS.size + 6 + record.PROPS_RANGES.size
    assert record.decode_props(payload, PATH, 99, 3) == (10, 3, 1, 99, b"aaa", b"zzz", (500, 40), (0, 0.0))
    with pytest.raises(CorruptSSTableError, match="properties") as info:
        record.decode_props(payload, PATH, 99, 4)
    assert info.value.offset == 99
    newer = record.encode_props(10, 3, 1, 99, b"aaa", b"zzz", (500, 40), (2, EXPIRES))
    with pytest.raises(CorruptSSTableError, match="properties"):
        record.decode_props(newer, PATH, 99, 3)


def test_props_claiming_more_expiring_entries_than_entries_are_corrupt() -> None:
    every = record.encode_props(5, 0, 1, 5, b"a", b"e", (0, 0), (5, 1.0))
    assert record.decode_props(every, PATH, 99).expiry == (5, 1.0)
    with pytest.raises(CorruptSSTableError, match="6 expiring entries of 5") as info:
        record.decode_props(record.encode_props(5, 0, 1, 5, b"a", b"e", (0, 0), (6, 1.0)), PATH, 99)
    assert (info.value.path, info.value.offset) == (PATH, 99)


@pytest.mark.parametrize("earliest", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
def test_props_with_an_earliest_expiry_that_is_not_finite_are_corrupt(earliest: float) -> None:
    payload = record.encode_props(5, 0, 1, 5, b"a", b"e", (0, 0), (1, earliest))
    with pytest.raises(CorruptSSTableError, match="earliest") as info:
        record.decode_props(payload, PATH, 99)
    assert (info.value.path, info.value.offset) == (PATH, 99)


@given(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1), expiries_st)
def test_props_round_trip_any_expiry_tail(entries: int, expiring: int, earliest: float) -> None:
    payload = record.encode_props(entries, 0, 1, 2, b"a", b"b", (0, 0), (expiring, earliest))
    if expiring <= entries:
        assert record.decode_props(payload, PATH, 99).expiry == (expiring, earliest)
    else:
        with pytest.raises(CorruptSSTableError):
            record.decode_props(payload, PATH, 99)
