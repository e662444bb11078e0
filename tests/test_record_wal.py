"""The write-ahead log's records in kvstore/record.py: commit units (with range deletes and expiring
values, WAL version 3) and the frames around them; round trips, and the decoder's answer to damaged input.

A commit decoder given truncated or extended bytes raises ``CorruptionError``; given a flipped bit (the
frame's CRC catches it) or random bytes it decodes or raises ``CorruptionError``, never ``struct.error``,
``IndexError`` or ``ValueError``.
"""

from __future__ import annotations

import math
import struct
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st
from recordhelp import EXPIRES, PATH, _decodes_or_corrupt, _flip, expiring_writes_st, mutations, writes_st

from kvstore import record
from kvstore.errors import CorruptionError

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
    _mutated_commit_decodes_or_raises(data, writes)


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
    _mutated_commit_decodes_or_raises(data, writes)


def _mutated_commit_decodes_or_raises(data: st.DataObject, writes: list[tuple[bytes, bytes | None]]) -> None:
    """A commit of ``writes``, damaged by a drawn mutation: a flipped byte (which the frame's CRC catches)
    decodes or raises ``CorruptionError``; a cut or a grown payload raises it."""
    payload = record.encode_commit(3, 20, writes)
    kind, damaged = data.draw(mutations(payload))
    if kind == "flip":
        _decodes_or_corrupt(lambda: record.decode_commit(damaged, PATH, 20))
    else:
        with pytest.raises(CorruptionError):
            record.decode_commit(damaged, PATH, 20)
