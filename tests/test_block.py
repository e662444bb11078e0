"""A table's data blocks (kvstore/block.py): ``encode_block``, ``decode_block`` and ``BlockEntries``, plain
and with the expiring entries of table version 4; round trips, and the decoder's answer to damaged input.

A block decoder given truncated, extended, bit-flipped or random bytes either decodes or raises
``CorruptionError``, never ``struct.error``, ``IndexError`` or ``ValueError``; a block sealed in its checked
chunk always raises on such damage.
"""

from __future__ import annotations

import itertools
import math
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from recordhelp import EXPIRES, PATH, _decodes_or_corrupt, any_values_st, keys_st, mutations, values_st

from kvstore import block, record
from kvstore.errors import CorruptionError, CorruptSSTableError

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
