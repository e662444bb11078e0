"""The byte layouts of kvstore/record.py: round trips, and every decoder's answer to damaged input.

A decoder given truncated, extended, bit-flipped or random bytes either decodes or raises
``CorruptionError`` (``UnsupportedFormatError`` for an intact newer version); never ``struct.error``,
``IndexError`` or ``ValueError``.  Decoders whose input carries its own checksum or exact length
always raise on such damage.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import struct
import sys
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvstore import block, record
from kvstore.errors import BadChecksumError, CorruptionError, CorruptSSTableError, UnsupportedFormatError

PATH = "/db/000007.sst"

keys_st = st.binary(max_size=24)
values_st = st.one_of(st.none(), st.binary(max_size=40))
#: a transaction's writes as the log holds them: in key order, each key once
writes_st = st.dictionaries(keys_st, values_st, max_size=12).map(lambda d: sorted(d.items()))
#: any finite expiry, the extremes of a float among them
expiries_st = st.floats(allow_nan=False, allow_infinity=False)
expiring_st = st.builds(record.Expiring.of, st.binary(max_size=40), expiries_st)
#: values, deletes and expiring values (``record.Expiring``)
any_values_st = st.one_of(st.none(), st.binary(max_size=40), expiring_st)
expiring_writes_st = st.dictionaries(keys_st, any_values_st, max_size=12).map(lambda d: sorted(d.items()))


def _flip(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


def _decodes_or_corrupt(fn: Callable[[], Any]) -> None:
    """Call ``fn``; only a result, ``CorruptionError`` or ``UnsupportedFormatError`` may come out."""
    with contextlib.suppress(CorruptionError, UnsupportedFormatError):
        fn()


@st.composite
def mutations(draw: st.DrawFn, data: bytes) -> tuple[str, bytes]:
    """One damage done to ``data``: a truncation, an extension or one flipped bit."""
    kind = draw(st.sampled_from(["truncate", "extend", "flip"]))
    if kind == "truncate":
        return kind, data[: draw(st.integers(0, len(data) - 1))]
    if kind == "extend":
        return kind, data + draw(st.binary(min_size=1, max_size=16))
    return kind, _flip(data, draw(st.integers(0, len(data) * 8 - 1)))


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
    """Meta slots are at version 1, logs at 3 and tables at 4; every older log and table version is still read."""
    assert record.newest_version(magic) == {record.META_MAGIC: 1, record.WAL_MAGIC: 3, record.TABLE_MAGIC: 4}[magic]
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


# ---------------------------------------------------------------- WAL commit payload and frame


COMMITS: list[list[tuple[bytes, bytes | None]]] = [
    [],
    [(b"k", b"v")],
    [(b"", b"")],
    [(b"a", None), (b"b", b""), (b"c", b"x" * 1000)],
    [(bytes([i]) * (i + 1), None if i % 3 == 0 else bytes(i)) for i in range(40)],
]


@pytest.mark.parametrize("writes", COMMITS, ids=["empty", "one", "empty-key-value", "mixed", "forty"])
def test_commit_round_trips(writes: list[tuple[bytes, bytes | None]]) -> None:
    payload = record.encode_commit(77, 20, writes)
    assert record.decode_commit(payload, PATH, 100) == (77, 20, writes)


def test_commit_keeps_an_empty_value_apart_from_a_delete() -> None:
    payload = record.encode_commit(1, 20, [(b"a", b""), (b"b", None)])
    _, _, writes = record.decode_commit(payload, PATH, 20)
    assert writes == [(b"a", b""), (b"b", None)]


@given(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1), writes_st)
def test_commit_round_trips_any_writes(seq: int, durable: int, writes: list[tuple[bytes, bytes | None]]) -> None:
    assert record.decode_commit(record.encode_commit(seq, durable, writes), PATH, 0) == (seq, durable, writes)


@pytest.mark.parametrize("writes", COMMITS[1:], ids=["one", "empty-key-value", "mixed", "forty"])
def test_commit_truncated_anywhere_is_corrupt(writes: list[tuple[bytes, bytes | None]]) -> None:
    payload = record.encode_commit(5, 20, writes)
    for cut in range(len(payload)):
        with pytest.raises(CorruptionError) as info:
            record.decode_commit(payload[:cut], PATH, 321)
        assert (info.value.path, info.value.offset) == (PATH, 321)


def test_commit_with_trailing_bytes_is_corrupt() -> None:
    payload = record.encode_commit(5, 20, [(b"k", b"v")])
    with pytest.raises(CorruptionError, match="after its last write"):
        record.decode_commit(payload + b"\0", PATH, 20)


@pytest.mark.parametrize(("kind", "vlen"), [(4, 0), (255, 1), (0, 1)], ids=["kind4", "kind255", "delete-with-value"])
def test_commit_write_of_unknown_kind_is_corrupt(kind: int, vlen: int) -> None:
    payload = (record.COMMIT_HEADER.pack(1, 20, 1) + record.WAL_ENTRY.pack(kind, 1, vlen) + b"k" + b"v" * vlen)
    with pytest.raises(CorruptionError, match="kind"):
        record.decode_commit(payload, PATH, 20)


@pytest.mark.parametrize("keys", [[b"k", b"k"], [b"", b""], [b"b", b"a"], [b"a", b"c", b"b"]],
                         ids=["twice", "empty-key-twice", "descending", "third-out-of-order"])
def test_commit_with_a_key_twice_or_out_of_order_is_corrupt(keys: list[bytes]) -> None:
    # the writer logs a transaction's keys in order, each once: replaying a key twice would put two
    # versions under one sequence in the memtable
    payload = record.COMMIT_HEADER.pack(1, 20, len(keys)) + b"".join(
        record.WAL_ENTRY.pack(1, len(k), 1) + k + b"v" for k in keys)
    with pytest.raises(CorruptionError, match="twice" if keys[0] == keys[1] else "out of order") as info:
        record.decode_commit(payload, PATH, 321)
    assert (info.value.path, info.value.offset) == (PATH, 321)


def test_commit_claiming_more_writes_than_fit_is_corrupt_before_allocating() -> None:
    payload = record.COMMIT_HEADER.pack(1, 20, 0xFFFF_FFFF)
    with pytest.raises(CorruptionError, match="claims"):
        record.decode_commit(payload, PATH, 20)


@given(st.data(), writes_st.filter(bool))
def test_commit_mutated_decodes_or_raises_corruption(data: st.DataObject,
                                                      writes: list[tuple[bytes, bytes | None]]) -> None:
    payload = record.encode_commit(3, 20, writes)
    kind, damaged = data.draw(mutations(payload))
    if kind == "flip":
        # the frame's CRC catches a flipped key byte; the payload decoder only has to stay in bounds
        _decodes_or_corrupt(lambda: record.decode_commit(damaged, PATH, 20))
    else:
        with pytest.raises(CorruptionError):
            record.decode_commit(damaged, PATH, 20)


@given(st.binary(max_size=200))
def test_commit_random_bytes_decode_or_raise_corruption(data: bytes) -> None:
    _decodes_or_corrupt(lambda: record.decode_commit(data, PATH, 20))


def test_frame_layout_is_crc_length_type_payload() -> None:
    payload = record.encode_commit(1, 20, [(b"k", b"v")])
    frame = record.encode_frame(3, record.RecordType.COMMIT, payload)
    stored, length, rtype = record.WAL_FRAME.unpack_from(frame, 0)
    assert (length, rtype) == (len(payload), 1)
    assert frame[record.WAL_FRAME.size :] == payload
    assert stored == record.frame_crc(3, length, rtype, payload)


@pytest.mark.parametrize("field", ["log_number", "length", "type", "payload"], ids=str)
def test_frame_crc_covers_log_number_length_type_and_payload(field: str) -> None:
    payload = record.encode_commit(1, 20, [(b"k", b"v")])
    base = record.frame_crc(3, len(payload), 1, payload)
    changed = {
        "log_number": record.frame_crc(4, len(payload), 1, payload),
        "length": record.frame_crc(3, len(payload) + 1, 1, payload),
        "type": record.frame_crc(3, len(payload), 2, payload),
        "payload": record.frame_crc(3, len(payload), 1, _flip(payload, 0)),
    }[field]
    assert changed != base


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


# ---------------------------------------------------------------- blocks

BLOCKS: list[tuple[list[bytes], list[int], list[bytes | None]]] = [
    ([], [], []),
    ([b"a"], [1], [b"1"]),
    ([b""], [2**64 - 1], [b""]),
    ([b"a", b"a", b"a", b"b"], [9, 5, 2, 3], [b"new", None, b"old", b""]),
    ([b"k%05d" % i for i in range(300)], list(range(300, 0, -1)), [b"v" * (i % 17) for i in range(300)]),
]


@pytest.mark.parametrize("case", BLOCKS, ids=["empty", "one", "empty-key-max-seq", "versions", "300"])
def test_block_round_trips(case: tuple[list[bytes], list[int], list[bytes | None]]) -> None:
    keys, seqs, values = case
    assert block.decode_block(block.encode_block(keys, seqs, values), PATH, 20) == (keys, seqs, values)


@given(st.lists(st.tuples(keys_st, st.integers(0, 2**64 - 1), values_st), max_size=30))
def test_block_round_trips_any_entries(entries: list[tuple[bytes, int, bytes | None]]) -> None:
    keys = [k for k, _, _ in entries]
    seqs = [s for _, s, _ in entries]
    values = [v for _, _, v in entries]
    assert block.decode_block(block.encode_block(keys, seqs, values), PATH, 20) == (keys, seqs, values)


@pytest.mark.parametrize("case", BLOCKS, ids=["empty", "one", "empty-key-max-seq", "versions", "300"])
def test_block_entries_slice_each_value_as_the_whole_decode_does(
        case: tuple[list[bytes], list[int], list[bytes | None]]) -> None:
    keys, seqs, values = case
    payload = block.encode_block(keys, seqs, values)
    for _ in range(3):  # a layout is built the second time its lengths are seen, and used from then on
        entries = block.BlockEntries(payload, PATH, 20)
        assert (list(entries.keys), list(entries.seqs)) == (keys, seqs)
        assert [entries.value(j) for j in range(len(keys))] == values
        assert list(entries.values()) == values
        assert [entries.value(j) for j in range(len(keys))] == values
        assert entries.ascending() == all(a < b for a, b in itertools.pairwise(keys))


def test_block_with_known_lengths_and_lengths_not_adding_up_is_corrupt() -> None:
    payload = block.encode_block([b"a", b"b"], [2, 1], [b"x", b"y"])
    for _ in range(2):
        block.decode_block(payload, PATH, 20)
    with pytest.raises(CorruptSSTableError, match="add up"):
        block.decode_block(b"z" + payload, PATH, 20)  # the same length arrays, one more data byte


def test_block_claiming_more_entries_than_fit_is_corrupt() -> None:
    with pytest.raises(CorruptSSTableError, match="claims"):
        block.decode_block(record.BLOCK_COUNT.pack(0xFFFF_FFFF), PATH, 20)


@pytest.mark.parametrize("cut", range(4), ids=lambda n: f"{n}B")
def test_block_shorter_than_its_count_is_corrupt(cut: int) -> None:
    with pytest.raises(CorruptSSTableError):
        block.decode_block(b"\0" * cut, PATH, 20)


def test_block_entry_of_unknown_kind_is_corrupt() -> None:
    good = block.encode_block([b"a"], [1], [b"v"])
    bad = good[:-5] + b"\x02" + good[-4:]  # the kinds array is the last n bytes before the count
    with pytest.raises(CorruptSSTableError, match="kind"):
        block.decode_block(bad, PATH, 20)


@given(st.data(), st.lists(st.tuples(keys_st, values_st), min_size=1, max_size=20))
def test_block_mutated_decodes_or_raises_corruption(data: st.DataObject,
                                                     entries: list[tuple[bytes, bytes | None]]) -> None:
    payload = block.encode_block([k for k, _ in entries], list(range(len(entries))), [v for _, v in entries])
    _, damaged = data.draw(mutations(payload))
    _decodes_or_corrupt(lambda: block.decode_block(damaged, PATH, 20))


@given(st.data(), st.lists(st.tuples(keys_st, values_st), min_size=1, max_size=20))
def test_block_in_its_chunk_mutated_is_always_corrupt(data: st.DataObject,
                                                       entries: list[tuple[bytes, bytes | None]]) -> None:
    payload = block.encode_block([k for k, _ in entries], list(range(len(entries))), [v for _, v in entries])
    chunk = record.seal_chunk(7, 20, payload)
    _, damaged = data.draw(mutations(chunk))
    with pytest.raises(CorruptionError):
        block.decode_block(record.open_chunk(damaged, PATH, 7, 20), PATH, 20)


@given(st.binary(max_size=300))
def test_block_random_bytes_decode_or_raise_corruption(data: bytes) -> None:
    _decodes_or_corrupt(lambda: block.decode_block(data, PATH, 20))


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
    header = record.encode_file_header(record.META_MAGIC, 0, version=record.FORMAT_VERSION + 1)
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


# ---------------------------------------------------------------- range deletes in a commit unit


def test_commit_with_range_deletes_round_trips_after_the_other_writes() -> None:
    writes: list[tuple[bytes, bytes | None]] = [(b"a", b"1"), (b"q", None), (b"b", record.RangeEnd(b"d")),
                                                (b"d", record.RangeEnd(b"zz"))]
    payload = record.encode_commit(9, 20, writes)
    assert len(payload) == record.commit_size(writes)
    seq, durable, decoded = record.decode_commit(payload, PATH, 20)
    assert (seq, durable, decoded) == (9, 20, writes)
    assert [type(v) for _, v in decoded] == [bytes, type(None), record.RangeEnd, record.RangeEnd]


def test_commit_of_one_range_delete_round_trips() -> None:
    writes: list[tuple[bytes, bytes | None]] = [(b"", record.RangeEnd(b"\xff"))]
    assert record.decode_commit(record.encode_commit(1, 20, writes), PATH, 20)[2] == writes


@pytest.mark.parametrize("writes", [
    [(b"b", record.RangeEnd(b"b"))],  # empty
    [(b"c", record.RangeEnd(b"b"))],  # backwards
    [(b"a", record.RangeEnd(b"c")), (b"b", record.RangeEnd(b"d"))],  # overlapping
    [(b"c", record.RangeEnd(b"d")), (b"a", record.RangeEnd(b"b"))],  # out of order
    [(b"a", record.RangeEnd(b"c")), (b"z", b"v")],  # a write after a range delete
], ids=["empty", "backwards", "overlapping", "out-of-order", "write-after"])
def test_commit_with_bad_range_deletes_is_corrupt(writes: list[tuple[bytes, bytes | None]]) -> None:
    payload = record.encode_commit(1, 20, writes)
    with pytest.raises(CorruptionError, match="range delete") as info:
        record.decode_commit(payload, PATH, 20)
    assert (info.value.path, info.value.offset) == (PATH, 20)


# ---------------------------------------------------------------- expiring values in a commit unit (WAL version 3)

EXPIRES = 1767225600.0


def _expiring_commit(expiry: bytes, data: bytes = b"v", key: bytes = b"k") -> bytes:
    """A commit of one kind-3 write whose value is ``expiry`` (raw bytes) then ``data``."""
    value = expiry + data
    return record.COMMIT_HEADER.pack(1, 20, 1) + record.WAL_ENTRY.pack(3, len(key), len(value)) + key + value


def test_expiring_value_holds_its_expiry_then_its_data() -> None:
    value = record.Expiring.of(b"ripe", EXPIRES)
    assert bytes(value) == struct.pack("<d", EXPIRES) + b"ripe"
    assert (value.expires, value.data, type(value.data)) == (EXPIRES, b"ripe", bytes)
    assert (value.alive(EXPIRES - 1), value.alive(EXPIRES), value.alive(EXPIRES + 1)) == (b"ripe", None, None)


COMMITS_EXPIRING: list[list[tuple[bytes, bytes | None]]] = [
    [(b"fig", record.Expiring.of(b"ripe", EXPIRES))],
    [(b"k", record.Expiring.of(b"", 0.0))],
    [(b"a", b"1"), (b"b", record.Expiring.of(b"x" * 1000, -1.5)), (b"c", None),
     (b"d", record.Expiring.of(b"y", sys.float_info.max)), (b"e", record.RangeEnd(b"f"))],
    [(b"k%02d" % i, record.Expiring.of(bytes(i), float(i))) for i in range(40)],
]
COMMITS_EXPIRING_IDS = ["one", "empty-value-at-0", "mixed-with-range-delete", "forty"]


@pytest.mark.parametrize("writes", COMMITS_EXPIRING, ids=COMMITS_EXPIRING_IDS)
def test_commit_with_expiring_values_round_trips(writes: list[tuple[bytes, bytes | None]]) -> None:
    payload = record.encode_commit(77, 20, writes)
    assert len(payload) == record.commit_size(writes)
    seq, durable, decoded = record.decode_commit(payload, PATH, 100)
    assert (seq, durable, decoded) == (77, 20, writes)
    assert [type(v) for _, v in decoded] == [type(v) for _, v in writes]
    for (_, want), (_, got) in zip(writes, decoded):
        if isinstance(want, record.Expiring):
            assert isinstance(got, record.Expiring) and (got.expires, got.data) == (want.expires, want.data)


def test_commit_writes_an_expiring_value_as_kind_3_with_its_expiry_first() -> None:
    payload = record.encode_commit(1, 20, [(b"fig", record.Expiring.of(b"ripe", EXPIRES))])
    assert payload == _expiring_commit(struct.pack("<d", EXPIRES), b"ripe", b"fig")


@given(st.integers(0, 2**64 - 1), expiring_writes_st)
def test_commit_round_trips_any_writes_with_expiring_values(seq: int, writes: list[tuple[bytes, bytes | None]]) -> None:
    _, _, decoded = record.decode_commit(record.encode_commit(seq, 20, writes), PATH, 0)
    assert decoded == writes
    assert [type(v) for _, v in decoded] == [type(v) for _, v in writes]


@pytest.mark.parametrize("size", range(8), ids=lambda n: f"{n}B")
def test_commit_expiring_value_shorter_than_its_expiry_is_corrupt(size: int) -> None:
    payload = _expiring_commit(b"\0" * size, b"")
    with pytest.raises(CorruptionError, match="expiring value") as info:
        record.decode_commit(payload, PATH, 321)
    assert (info.value.path, info.value.offset) == (PATH, 321)


@pytest.mark.parametrize("expiry", [math.nan, math.inf, -math.inf, struct.unpack("<d", b"\xff" * 8)[0]],
                         ids=["nan", "inf", "-inf", "nan-all-ones"])
def test_commit_expiring_value_without_a_finite_expiry_is_corrupt(expiry: float) -> None:
    payload = _expiring_commit(struct.pack("<d", expiry))
    with pytest.raises(CorruptionError, match="finite") as info:
        record.decode_commit(payload, PATH, 321)
    assert (info.value.path, info.value.offset) == (PATH, 321)


@pytest.mark.parametrize(("writes", "why"), [
    ([(b"b", record.Expiring.of(b"v", 1.0)), (b"a", b"v")], "out of order"),
    ([(b"a", b"v"), (b"a", record.Expiring.of(b"v", 1.0))], "twice"),
    ([(b"a", record.RangeEnd(b"c")), (b"z", record.Expiring.of(b"v", 1.0))], "after a range delete"),
], ids=["out-of-order", "twice", "after-a-range-delete"])
def test_commit_expiring_writes_keep_the_order_of_the_other_writes(writes: list[tuple[bytes, bytes | None]],
                                                                    why: str) -> None:
    with pytest.raises(CorruptionError, match=why) as info:
        record.decode_commit(record.encode_commit(1, 20, writes), PATH, 20)
    assert (info.value.path, info.value.offset) == (PATH, 20)


@given(st.data(), expiring_writes_st.filter(bool))
def test_commit_with_expiring_values_mutated_decodes_or_raises_corruption(
        data: st.DataObject, writes: list[tuple[bytes, bytes | None]]) -> None:
    payload = record.encode_commit(3, 20, writes)
    kind, damaged = data.draw(mutations(payload))
    if kind == "flip":
        _decodes_or_corrupt(lambda: record.decode_commit(damaged, PATH, 20))
    else:
        with pytest.raises(CorruptionError):
            record.decode_commit(damaged, PATH, 20)


# ---------------------------------------------------------------- expiring entries in a block (table version 4)

Block3 = tuple[list[bytes], list[int], list["bytes | None"]]

EXPIRING_BLOCKS: list[Block3] = [
    ([b"fig"], [6], [record.Expiring.of(b"ripe", EXPIRES)]),
    ([b"a", b"b", b"b", b"c", b"d"], [1, 9, 2, 3, 4],
     [b"v", record.Expiring.of(b"", 0.0), None, record.Expiring.of(b"x" * 100, -2.5), b""]),
    # fixed-size keys and values: read through a layout, in place
    ([b"k%05d" % i for i in range(300)], list(range(300, 0, -1)),
     [record.Expiring.of(b"v%03d" % (i % 1000), float(i)) if i % 3 else b"w" * 12 for i in range(300)]),
]
EXPIRING_BLOCK_IDS = ["one", "mixed", "300-fixed-size"]


def _check_values(got: list[bytes | None] | tuple[bytes | None, ...], want: list[bytes | None]) -> None:
    """``got`` equals ``want`` value for value and type for type: an ``Expiring`` where one was written."""
    assert list(got) == want
    assert [type(v) for v in got] == [type(v) for v in want]
    for g, w in zip(got, want):
        if isinstance(w, record.Expiring):
            assert isinstance(g, record.Expiring) and (g.expires, g.data) == (w.expires, w.data)


def _kinds(payload: bytes, n: int) -> bytes:
    return payload[len(payload) - 4 - n : len(payload) - 4]


@pytest.mark.parametrize("case", EXPIRING_BLOCKS, ids=EXPIRING_BLOCK_IDS)
def test_block_with_expiring_entries_round_trips(case: Block3) -> None:
    keys, seqs, values = case
    payload = block.encode_block(keys, seqs, values, expiring=True)
    assert _kinds(payload, len(keys)) == bytes(0 if v is None else 3 if isinstance(v, record.Expiring) else 1
                                               for v in values)
    for _ in range(2):  # the first time without a layout, the second with one
        got_keys, got_seqs, got_values = block.decode_block(payload, PATH, 20)
        assert (got_keys, got_seqs) == (keys, seqs)
        _check_values(got_values, values)


def test_block_with_expiring_entries_is_the_plain_block_when_none_expires() -> None:
    keys, seqs, values = BLOCKS[3]
    assert block.encode_block(keys, seqs, values, expiring=True) == block.encode_block(keys, seqs, values)


@given(st.lists(st.tuples(keys_st, st.integers(0, 2**64 - 1), any_values_st), max_size=30))
def test_block_round_trips_any_entries_with_expiring_values(entries: list[tuple[bytes, int, bytes | None]]) -> None:
    keys = [k for k, _, _ in entries]
    seqs = [s for _, s, _ in entries]
    values = [v for _, _, v in entries]
    got_keys, got_seqs, got_values = block.decode_block(block.encode_block(keys, seqs, values, expiring=True),
                                                        PATH, 20)
    assert (got_keys, got_seqs) == (keys, seqs)
    _check_values(got_values, values)


@pytest.mark.parametrize("case", EXPIRING_BLOCKS, ids=EXPIRING_BLOCK_IDS)
def test_block_entries_return_expiring_values_on_every_path(case: Block3, monkeypatch: pytest.MonkeyPatch) -> None:
    """``value(j)`` (sliced alone, with and without a layout, and after a whole decode), ``take`` (in place
    and from decoded lists) and ``values()`` all give an ``Expiring`` for a kind-3 entry."""
    keys, seqs, values = case
    payload = block.encode_block(keys, seqs, values, expiring=True)
    n = len(keys)
    unique = all(a < b for a, b in itertools.pairwise(keys))
    monkeypatch.setattr(block, "_LAYOUTS", block._Layouts(64))  # these lengths are new: no layout at first
    for sighting in range(3):  # the layout is built at the second sighting and used from then on
        entries = block.BlockEntries(payload, PATH, 20)
        assert entries.decoded() is (sighting == 0)  # without a layout the keys are decoded up front
        _check_values([entries.value(j) for j in range(n)], values)  # each sliced alone from the payload
        if unique:
            out: list[tuple[bytes, bytes | None]] = []
            # in place from the payload while the keys are not decoded (a layout), else from the lists
            assert entries.take(0, None, True, 0, n, out) == (n, keys[-1])
            assert [k for k, _ in out] == keys
            _check_values([v for _, v in out], values)
        _check_values(list(entries.values()), values)  # decoded whole: the payload goes
        _check_values([entries.value(j) for j in range(n)], values)
        if unique:
            out = []
            assert entries.take(0, None, False, 2**64 - 1, n, out) == (n, keys[-1])
            _check_values([v for _, v in out], values)


def _block_of_one(kind: int, value: bytes) -> bytes:
    """A block of one entry ``a`` of ``kind`` whose value bytes are ``value``."""
    payload = bytearray(block.encode_block([b"a"], [1], [value]))
    payload[-5] = kind  # the kinds array is the last n bytes before the count
    return bytes(payload)


@pytest.mark.parametrize("size", range(8), ids=lambda n: f"{n}B")
def test_block_expiring_entry_shorter_than_its_expiry_is_corrupt(size: int) -> None:
    bad = _block_of_one(3, b"\0" * size)
    for _ in range(2):  # without a layout and with one
        with pytest.raises(CorruptSSTableError) as info:
            block.decode_block(bad, PATH, 4096)
        assert (info.value.path, info.value.offset) == (PATH, 4096)


@pytest.mark.parametrize("expiry", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
def test_block_expiring_entry_without_a_finite_expiry_is_corrupt(expiry: float) -> None:
    good = block.encode_block([b"a", b"b"], [2, 1], [b"plain", record.Expiring.of(b"v", 1.0)], expiring=True)
    block.decode_block(good, PATH, 4096)
    bad = bytearray(good)
    bad[7:15] = struct.pack("<d", expiry)  # after key a, value plain and key b: b's expiry
    for _ in range(2):
        with pytest.raises(CorruptSSTableError, match="finite") as info:
            block.decode_block(bytes(bad), PATH, 4096)
        assert (info.value.path, info.value.offset) == (PATH, 4096)
        with pytest.raises(CorruptSSTableError):
            block.BlockEntries(bytes(bad), PATH, 4096)


@pytest.mark.parametrize("kind", [2, 4, 255], ids=["range-delete", "kind4", "kind255"])
def test_block_entry_of_a_kind_no_block_holds_is_corrupt(kind: int) -> None:
    with pytest.raises(CorruptSSTableError, match="kind"):
        block.decode_block(_block_of_one(kind, b"\0" * 8 + b"v"), PATH, 20)


@given(st.data(), st.lists(st.tuples(keys_st, any_values_st), min_size=1, max_size=20))
def test_block_with_expiring_entries_mutated_decodes_or_raises_corruption(
        data: st.DataObject, entries: list[tuple[bytes, bytes | None]]) -> None:
    payload = block.encode_block([k for k, _ in entries], list(range(len(entries))), [v for _, v in entries],
                                 expiring=True)
    _, damaged = data.draw(mutations(payload))
    _decodes_or_corrupt(lambda: block.decode_block(damaged, PATH, 20))


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
