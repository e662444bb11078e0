"""Range tombstones as fragments (kvstore/rangedel.py): lookups, the merge rules and the table section,
against brute force over the tombstones themselves."""

from __future__ import annotations

import bisect
import contextlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvstore.errors import CorruptSSTableError, UnsupportedFormatError
from kvstore.rangedel import MAX_BOUND, SECTION_VERSION, Fragments, Tombstone, decode, encode

KEYS = st.binary(min_size=0, max_size=3, )
TOMBSTONES = st.lists(st.tuples(KEYS, KEYS, st.integers(1, 40)), max_size=12)
SNAPSHOTS = st.lists(st.integers(1, 45), max_size=5).map(lambda xs: sorted(set(xs)))


def _covering(tombstones: list[Tombstone], key: bytes, snapshot: int) -> int:
    return max((q for s, e, q in tombstones if s <= key < e and q <= snapshot), default=0)


def _probes(tombstones: list[Tombstone], extra: list[bytes]) -> list[bytes]:
    keys = {b for s, e, _ in tombstones for b in (s, e)} | set(extra)
    return sorted(keys | {k + b"\x00" for k in keys})


def _check_invariants(f: Fragments) -> None:
    assert all(s < e for s, e in zip(f.starts, f.ends))
    assert all(e <= s for e, s in zip(f.ends, f.starts[1:]))
    for seqs in f.seqs:
        assert seqs and list(seqs) == sorted(set(seqs), reverse=True) and seqs[-1] >= 1


@given(TOMBSTONES, st.lists(KEYS, max_size=5), st.integers(0, 45))
def test_covering_is_the_newest_tombstone_over_the_key(tombstones: list[Tombstone], keys: list[bytes],
                                                       snapshot: int) -> None:
    f = Fragments.of(tombstones)
    _check_invariants(f)
    for key in _probes(tombstones, keys):
        assert f.covering(key, snapshot) == _covering(tombstones, key, snapshot)
        assert f.covering(key, 1 << 62) == _covering(tombstones, key, 1 << 62)


@given(TOMBSTONES)
def test_fragments_rebuild_from_their_tombstones(tombstones: list[Tombstone]) -> None:
    f = Fragments.of(tombstones)
    assert Fragments.of(f.tombstones()) == f
    live = [t for t in tombstones if t[0] < t[1]]
    assert f.max_seq() == max((q for _, _, q in live), default=0)
    assert f.min_seq() == min((q for _, _, q in live), default=0)
    assert f.span() == ((min(s for s, _, _ in live), max(e for _, e, _ in live)) if live else None)
    assert bool(f) == bool(live)


@given(TOMBSTONES, TOMBSTONES)
def test_merge_is_the_fragments_of_both(a: list[Tombstone], b: list[Tombstone]) -> None:
    assert Fragments.of(a).merge(Fragments.of(b)) == Fragments.of(a + b)


@given(TOMBSTONES, st.lists(KEYS, max_size=8))
def test_piece_finds_the_piece_over_or_after_the_key(tombstones: list[Tombstone], keys: list[bytes]) -> None:
    f = Fragments.of(tombstones)
    for key in _probes(tombstones, keys):
        i = f.piece(key)
        assert 0 <= i <= len(f)
        if i < len(f):
            assert key < f.ends[i]
        if i > 0:
            assert f.ends[i - 1] <= key


@given(TOMBSTONES, SNAPSHOTS, st.booleans())
def test_retained_answers_every_live_snapshot_alike(tombstones: list[Tombstone], snapshots: list[int],
                                                    bottom: bool) -> None:
    f = Fragments.of(tombstones)
    kept = f.retained(snapshots, bottom)
    _check_invariants(kept)
    oldest = snapshots[0] if snapshots else None
    for key in _probes(tombstones, []):
        for reader in [*snapshots, 1 << 62]:
            before = f.covering(key, reader)
            if bottom and (oldest is None or before <= oldest):
                assert kept.covering(key, reader) == 0
            else:
                assert kept.covering(key, reader) == before


@given(TOMBSTONES, st.lists(st.tuples(KEYS, st.integers(1, 40)), max_size=12), SNAPSHOTS)
def test_drops_only_what_no_snapshot_reads(tombstones: list[Tombstone], entries: list[tuple[bytes, int]],
                                           snapshots: list[int]) -> None:
    entries = sorted(set(entries), key=lambda e: (e[0], -e[1]))
    keys, seqs = [k for k, _ in entries], [q for _, q in entries]
    drops = Fragments.of(tombstones).drops(keys, seqs, snapshots)
    for (key, seq), dropped in zip(entries, drops):
        readers = [s for s in [*snapshots, 1 << 62] if s >= seq]
        hidden = all(_covering(tombstones, key, r) > seq for r in readers)
        # a reader that sees the entry is either the latest one or a snapshot below every newer tombstone
        assert dropped == hidden


def test_fragment_example_in_the_docstring_shape() -> None:
    f = Fragments.of([(b"a", b"c", 3), (b"b", b"d", 5), (b"b", b"d", 5), (b"x", b"x", 9)])
    assert list(zip(f.starts, f.ends, f.seqs)) == [(b"a", b"b", (3,)), (b"b", b"c", (5, 3)), (b"c", b"d", (5,))]


def test_adjacent_pieces_with_the_same_sequences_join() -> None:
    f = Fragments.of([(b"a", b"c", 3), (b"c", b"e", 3)])
    assert list(zip(f.starts, f.ends, f.seqs)) == [(b"a", b"e", (3,))]


@given(TOMBSTONES)
def test_section_round_trips(tombstones: list[Tombstone]) -> None:
    f = Fragments.of(tombstones)
    data = encode(f)
    assert data[0] == SECTION_VERSION
    assert decode(data, "t.sst", 100) == f


def test_section_bytes_are_the_documented_ones() -> None:
    data = encode(Fragments.of([(b"a", b"c", 7)]))
    assert data == struct.pack("<BI", 1, 1) + struct.pack("<HHI", 1, 1, 1) + struct.pack("<Q", 7) + b"ac"


@settings(max_examples=300)
@given(st.lists(st.tuples(KEYS, KEYS, st.integers(1, 40)), min_size=1, max_size=4), st.data())
def test_any_damaged_section_decodes_to_valid_fragments_or_a_typed_error(tombstones: list[Tombstone],
                                                                         data: st.DataObject) -> None:
    good = encode(Fragments.of([t for t in tombstones if t[0] < t[1]] or [(b"a", b"b", 1)]))
    pos = data.draw(st.integers(0, len(good) - 1))
    flip = data.draw(st.integers(1, 255))
    damaged = good[:pos] + bytes([good[pos] ^ flip]) + good[pos + 1 :]
    with contextlib.suppress(CorruptSSTableError, UnsupportedFormatError):
        _check_invariants(decode(damaged, "t.sst", 64))
    cut = data.draw(st.integers(0, len(good) - 1))
    with pytest.raises(CorruptSSTableError):
        decode(good[:cut], "t.sst", 64)


def test_a_newer_section_version_is_unsupported() -> None:
    with pytest.raises(UnsupportedFormatError, match="version 2"):
        decode(struct.pack("<BI", 2, 0), "t.sst", 0)


@pytest.mark.parametrize(("body", "why"), [
    (struct.pack("<BI", 0, 0), "version 0"),
    (struct.pack("<BI", 1, 1), "cut short"),
    (struct.pack("<BI", 1, 1) + struct.pack("<HHI", 1, 1, 0) + b"ab", "no sequence"),
    (struct.pack("<BI", 1, 1) + struct.pack("<HHI", 1, 1, 1) + struct.pack("<Q", 3) + b"ba", "order"),
    (struct.pack("<BI", 1, 1) + struct.pack("<HHI", 1, 1, 2) + struct.pack("<2Q", 3, 5) + b"ab", "descending"),
    (struct.pack("<BI", 1, 1) + struct.pack("<HHI", 1, 1, 1) + struct.pack("<Q", 0) + b"ab", "descending"),
    (struct.pack("<BI", 1, 2) + struct.pack("<HHI", 1, 1, 1) + struct.pack("<Q", 3) + b"ac"
     + struct.pack("<HHI", 1, 1, 1) + struct.pack("<Q", 3) + b"bd", "overlapping"),
    (struct.pack("<BI", 1, 0) + b"x", "after the last piece"),
])
def test_sections_breaking_an_invariant_are_corrupt(body: bytes, why: str) -> None:
    with pytest.raises(CorruptSSTableError, match=why):
        decode(body, "t.sst", 0)


def test_a_bound_too_long_for_the_section_is_refused() -> None:
    with pytest.raises(ValueError, match="longer than"):
        encode(Fragments.of([(b"a", b"b" * (MAX_BOUND + 1), 1)]))


def test_covering_past_many_pieces_is_one_bisect() -> None:
    f = Fragments.of([(b"%06d" % i, b"%06d" % i + b"\x00", i + 1) for i in range(0, 100_000, 2)])
    assert len(f) == 50_000
    assert f.covering(b"050000", 1 << 62) == 50_001 and f.covering(b"050001", 1 << 62) == 0
    assert bisect.bisect_right(f.starts, b"050001") - 1 == f.piece(b"050000")
