"""What an SSTable's reader checks (kvstore/sorted_file.py): ``verify()`` finding a damaged data block, and
the expiring entries of table version 4 (counted in the properties by kvstore/table_writer.py, read back;
properties that misstate them, and expiries that are not finite under a good checksum)."""

from __future__ import annotations

import pathlib
from collections.abc import Callable

import pytest
from tablehelp import Entry, _model_items, _open, _versioned_entries, _write

from kvstore import record
from kvstore.errors import CorruptionError, CorruptSSTableError
from kvstore.sorted_file import TableReader

# ---------------------------------------------------------------- verify


def test_table_verify_finds_a_flipped_byte_in_a_data_block(tmp_path: pathlib.Path) -> None:
    entries = _versioned_entries(500)
    path, _ = _write(tmp_path, 11, entries, block_size=256)
    reader = _open(path, 11)
    second = reader._offsets[1]
    reader.close()
    with open(path, "r+b") as f:
        f.seek(second + 5)
        byte = f.read(1)
        f.seek(second + 5)
        f.write(bytes([byte[0] ^ 0x01]))
    reader = _open(path, 11)  # the footer, index, bloom and properties are intact
    try:
        problems = reader.verify()
        assert len(problems) == 1
        assert path in problems[0] and str(second) in problems[0]
        with pytest.raises(CorruptionError) as info:
            list(reader.entries())
        assert (info.value.path, info.value.offset) == (path, second)
    finally:
        reader.close()


# ---------------------------------------------------------------- expiring entries (table version 4)


def _expiring_entries(nkeys: int) -> list[Entry]:
    """Keys e00000.. with one or two versions; none expires among the first 50 keys (their blocks are
    written before the table has an expiring entry), then every third version does, at 1000 + i."""
    out: list[Entry] = []
    seq = 10 * nkeys
    for i in range(nkeys):
        for v in range(1 + i % 2):
            value: bytes | None = b"v%05d" % i
            if i >= 50 and (i + v) % 3 == 0:
                value = record.Expiring.of(b"x%d" % i, 1000.0 + i)
            elif (i + v) % 11 == 0:
                value = None
            out.append((b"e%05d" % i, seq, value))
            seq -= 1
    return out


def _reseal_props(path: str, number: int, change: Callable[[record.Props], record.Props]) -> int:
    """Rewrite the table's properties as ``change`` makes them (the same size), under a good checksum;
    returns their offset."""
    data = bytearray(pathlib.Path(path).read_bytes())
    foot_at = len(data) - record.FOOTER.size
    _, _, (at, size) = record.decode_footer(bytes(data[foot_at:]), path, foot_at, number)
    props = change(record.decode_props(bytes(data[at : at + size - 4]), path, at))
    payload = record.encode_props(*props)
    assert len(payload) == size - 4
    data[at : at + size] = record.seal_chunk(number, at, payload)
    pathlib.Path(path).write_bytes(bytes(data))
    return at


def test_table_with_expiring_entries_counts_them_and_reads_them_back(tmp_path: pathlib.Path) -> None:
    entries = _expiring_entries(400)
    expiring = [v for _, _, v in entries if isinstance(v, record.Expiring)]
    path, info = _write(tmp_path, 21, entries, block_size=128)
    assert info.expiring == len(expiring) > 0
    reader = _open(path, 21)
    try:
        assert reader.blocks > 10 and reader.version == 4
        assert (reader.expiring, reader.earliest) == (len(expiring), min(v.expires for v in expiring)) == (
            len(expiring), 1051.0)
        got = list(reader.entries())
        assert got == entries
        assert [type(v) for _, _, v in got] == [type(v) for _, _, v in entries]
        kinds = [_block_kinds(reader, b) for b in range(reader.blocks)]
        assert 3 not in kinds[0] and any(3 in k for k in kinds)  # kind 3 only where an entry expires
        for key, seq, value in entries[::7]:
            found = reader.get(key, seq)
            assert found == (seq, value) and type(found[1]) is type(value)
        items = list(reader.items(None, 2**63))
        assert items == _model_items(entries, None, 2**63, False, True)
        assert [type(v) for _, v in items] == [type(v) for _, v in _model_items(entries, None, 2**63, False, True)]
        assert reader.verify() == []
    finally:
        reader.close()


def _block_kinds(reader: TableReader, b: int) -> bytes:
    data, end = reader._read_chunk(reader._offsets[b], reader._sizes[b])
    (n,) = record.BLOCK_COUNT.unpack_from(data, end - 4)
    return bytes(data[end - 4 - n : end - 4])


def test_table_without_expiring_entries_has_none_in_its_properties(tmp_path: pathlib.Path) -> None:
    path, info = _write(tmp_path, 22, _versioned_entries(100))
    reader = _open(path, 22)
    try:
        assert info.expiring == 0 and (reader.expiring, reader.earliest) == (0, 0.0)
        assert reader.verify() == []
    finally:
        reader.close()


@pytest.mark.parametrize("change", [
    lambda p: p._replace(expiry=(p.expiry[0] - 1, p.expiry[1])),
    lambda p: p._replace(expiry=(p.expiry[0] + 1, p.expiry[1])),
    lambda p: p._replace(expiry=(p.expiry[0], p.expiry[1] + 1)),
    lambda p: p._replace(expiry=(0, 0.0)),
], ids=["count-low", "count-high", "earliest-late", "none"])
def test_table_whose_properties_misstate_its_expiring_entries_fails_verify(
        tmp_path: pathlib.Path, change: Callable[[record.Props], record.Props]) -> None:
    path, _ = _write(tmp_path, 23, _expiring_entries(200), block_size=256)
    _reseal_props(path, 23, change)
    reader = _open(path, 23)  # the properties parse: only the blocks tell them wrong
    try:
        problems = reader.verify()
        assert len(problems) == 1 and "expiring" in problems[0] and path in problems[0]
    finally:
        reader.close()


def test_table_whose_properties_claim_more_expiring_entries_than_entries_fails_open(tmp_path: pathlib.Path) -> None:
    path, _ = _write(tmp_path, 24, _expiring_entries(100))
    at = _reseal_props(path, 24, lambda p: p._replace(expiry=(p.entries + 1, p.expiry[1])))
    with pytest.raises(CorruptSSTableError, match="expiring") as info:
        _open(path, 24)
    assert (info.value.path, info.value.offset) == (path, at)


@pytest.mark.parametrize("expiry", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_table_block_with_an_expiry_that_is_not_finite_under_a_good_checksum_is_corrupt(
        tmp_path: pathlib.Path, expiry: float) -> None:
    path, _ = _write(tmp_path, 25, [(b"k", 3, record.Expiring.of(b"v", 5.0))])
    data = bytearray(pathlib.Path(path).read_bytes())
    at = record.FILE_HEADER.size  # the one data block: key k, then the value's 8-byte expiry
    reader = _open(path, 25)
    size = reader._sizes[0]
    reader.close()
    payload = bytearray(data[at : at + size - 4])
    payload[1:9] = record.EXPIRY.pack(expiry)
    data[at : at + size] = record.seal_chunk(25, at, bytes(payload))
    pathlib.Path(path).write_bytes(bytes(data))
    reader = _open(path, 25)  # the index, bloom and properties are intact
    try:
        problems = reader.verify()
        assert len(problems) == 1 and "finite" in problems[0] and str(at) in problems[0]
        with pytest.raises(CorruptSSTableError, match="finite") as info:
            reader.get(b"k", 10)
        assert (info.value.path, info.value.offset) == (path, at)
    finally:
        reader.close()
