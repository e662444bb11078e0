"""The memtable (kvstore/sorted_array.py): versions, snapshots, iteration both ways, inserts while reading, _check()."""

from __future__ import annotations

import bisect
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvstore.sorted_array import ENTRY_OVERHEAD, Memtable


def _filled(pairs: list[tuple[bytes, bytes | None]]) -> Memtable:
    mem = Memtable()
    for seq, (key, value) in enumerate(pairs, start=1):
        mem.put(key, seq, value)
        mem._check()
    return mem


def test_memtable_empty_has_nothing() -> None:
    mem = Memtable()
    mem._check()
    assert len(mem) == 0 and mem.num_entries == 0 and mem.bytes == 0 and mem.max_seq == 0
    assert mem.get(b"a", 100) is None
    assert list(mem.items(None, 100)) == []
    assert list(mem.items(None, 100, reverse=True)) == []
    assert list(mem.entries()) == []


def test_memtable_get_sees_the_newest_version_at_or_before_the_snapshot() -> None:
    mem = _filled([(b"k", b"v1"), (b"k", b"v2"), (b"k", None), (b"k", b"v4")])
    assert mem.get(b"k", 0) is None
    assert mem.get(b"k", 1) == (1, b"v1")
    assert mem.get(b"k", 2) == (2, b"v2")
    assert mem.get(b"k", 3) == (3, None)  # a delete is a version: it hides older ones
    assert mem.get(b"k", 4) == (4, b"v4")
    assert mem.get(b"k", 10**9) == (4, b"v4")
    assert mem.get(b"other", 10) is None


def test_memtable_keeps_an_empty_value_apart_from_a_delete() -> None:
    mem = _filled([(b"a", b""), (b"b", None)])
    assert mem.get(b"a", 2) == (1, b"")
    assert mem.get(b"b", 2) == (2, None)


def test_memtable_writes_of_one_transaction_share_a_sequence() -> None:
    mem = Memtable()
    for key in (b"c", b"a", b"b"):
        mem.put(key, 7, key * 2)
    mem._check()
    assert mem.max_seq == 7 and mem.min_seq == 7
    assert list(mem.items(None, 7)) == [(b"a", b"aa"), (b"b", b"bb"), (b"c", b"cc")]
    assert list(mem.items(None, 6)) == []


def test_memtable_keeps_every_version_until_it_is_flushed() -> None:
    # a one-shot read that did not register its snapshot may still need any of them
    mem = _filled([(b"k", b"v1"), (b"k", b"v2"), (b"k", b"v3")])
    assert mem.num_entries == 3 and len(mem) == 1
    assert list(mem.entries()) == [(b"k", 3, b"v3"), (b"k", 2, b"v2"), (b"k", 1, b"v1")]
    assert [mem.get(b"k", s) for s in (1, 2, 3)] == [(1, b"v1"), (2, b"v2"), (3, b"v3")]
    assert mem.bytes == 3 * (len(b"k") + 2 + ENTRY_OVERHEAD)


def test_memtable_apply_many_adds_each_commit_under_its_sequence() -> None:
    mem = Memtable()
    added = mem.apply_many([(4, [(b"b", b"2"), (b"a", None)]), (5, [(b"b", b"33")])])
    mem._check()
    assert added == len(b"b2") + len(b"a") + len(b"b33")
    assert list(mem.entries()) == [(b"a", 4, None), (b"b", 5, b"33"), (b"b", 4, b"2")]
    assert mem.min_seq == 4 and mem.max_seq == 5 and mem.num_entries == 3


def test_memtable_bytes_count_keys_values_and_overhead_of_each_version() -> None:
    mem = _filled([(b"ab", b"xyz"), (b"ab", None), (b"c", b"")])
    assert mem.bytes == (2 + 3 + ENTRY_OVERHEAD) + (2 + ENTRY_OVERHEAD) + (1 + ENTRY_OVERHEAD)
    assert mem.num_entries == 3 and len(mem) == 2


def test_memtable_entries_are_keys_ascending_sequences_descending() -> None:
    mem = _filled([(b"b", b"1"), (b"a", b"2"), (b"b", b"3"), (b"c", None), (b"a", b"5")])
    assert list(mem.entries()) == [(b"a", 5, b"5"), (b"a", 2, b"2"), (b"b", 3, b"3"), (b"b", 1, b"1"),
                                   (b"c", 4, None)]


@pytest.mark.parametrize("size", [1, 2, 256], ids=lambda n: f"{n}keys")
def test_memtable_entry_chunks_are_its_entries_with_every_version_of_a_key_in_one_chunk(size: int) -> None:
    mem = _filled([(b"b", b"1"), (b"a", b"2"), (b"b", b"3"), (b"c", None), (b"a", b"5"), (b"d", b"6")])
    chunks = list(mem.entry_chunks(size))
    assert [e for keys, seqs, values in chunks for e in zip(keys, seqs, values, strict=True)] == list(mem.entries())
    assert all(a[0][-1] < b[0][0] for a, b in itertools.pairwise(chunks))
    assert all(len(set(keys)) <= size for keys, _, _ in chunks)
    assert list(Memtable().entry_chunks()) == []


KEYS = [b"a", b"b", b"bb", b"c", b"e"]
STARTS: list[tuple[bytes | None, bool, bool]] = [
    (start, reverse, inclusive)
    for start in (None, b"", b"a", b"b", b"ba", b"c", b"d", b"e", b"f")
    for reverse in (False, True)
    for inclusive in (True, False)
]


def _expected(keys: list[bytes], start: bytes | None, reverse: bool, inclusive: bool) -> list[bytes]:
    if not reverse:
        return [k for k in keys if start is None or k > start or (inclusive and k == start)]
    return [k for k in reversed(keys) if start is None or k < start or (inclusive and k == start)]


@pytest.mark.parametrize(("start", "reverse", "inclusive"), STARTS,
                         ids=[f"{s!r}-{'rev' if r else 'fwd'}-{'incl' if i else 'excl'}" for s, r, i in STARTS])
def test_memtable_items_start_where_asked_in_both_directions(start: bytes | None, reverse: bool,
                                                             inclusive: bool) -> None:
    mem = _filled([(k, k.upper()) for k in KEYS])
    got = list(mem.items(start, 100, reverse=reverse, inclusive=inclusive))
    assert got == [(k, k.upper()) for k in _expected(KEYS, start, reverse, inclusive)]


def test_memtable_items_yield_deletes_and_skip_keys_born_after_the_snapshot() -> None:
    mem = _filled([(b"a", b"1"), (b"b", b"2"), (b"a", None), (b"c", b"4")])
    assert list(mem.items(None, 3)) == [(b"a", None), (b"b", b"2")]
    assert list(mem.items(None, 1)) == [(b"a", b"1")]
    assert list(mem.items(None, 3, reverse=True)) == [(b"b", b"2"), (b"a", None)]


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "backward"])
def test_memtable_items_span_many_chunks(reverse: bool) -> None:
    keys = [b"%05d" % i for i in range(1000)]
    mem = Memtable()
    for i, key in enumerate(keys):
        mem.put(key, i + 1, key)
    got = [k for k, _ in mem.items(None, 10**6, reverse=reverse)]
    assert got == (keys[::-1] if reverse else keys)


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "backward"])
def test_memtable_items_survive_inserts_while_iterating(reverse: bool) -> None:
    mem = Memtable()
    seq = 0
    for i in range(0, 2000, 2):
        seq += 1
        mem.put(b"%05d" % i, seq, b"old")
    snapshot = seq
    got = []
    for key, _ in mem.items(None, snapshot, reverse=reverse):
        got.append(key)
        if len(got) % 50 == 0:
            for j in range(5):
                seq += 1
                mem.put(b"%05d" % (int(key) + (1 if j % 2 else -1) * (j * 97 + 1)) + b"x" * j, seq, b"new")
    mem._check()
    # the snapshot's keys, each once, in order; keys written after the snapshot are not seen
    assert got == sorted(got, reverse=reverse)
    assert sorted(got) == [b"%05d" % i for i in range(0, 2000, 2)]


@st.composite
def _ops(draw: st.DrawFn) -> list[tuple[str, bytes, bytes | None]]:
    keys = st.sampled_from([b"", b"a", b"ab", b"b", b"c", b"d\xff"])
    op = st.one_of(
        st.tuples(st.just("put"), keys, st.one_of(st.none(), st.binary(max_size=4))),
        st.tuples(st.just("snap"), st.just(b""), st.none()),
    )
    return draw(st.lists(op, max_size=60))


@given(_ops())
def test_memtable_matches_a_full_history_model_at_every_snapshot(ops: list[tuple[str, bytes, bytes | None]]) -> None:
    mem = Memtable()
    history: dict[bytes, list[tuple[int, bytes | None]]] = {}
    snaps: list[int] = []
    seq = 0
    for op, key, value in ops:
        if op == "put":
            seq += 1
            mem.put(key, seq, value)
            history.setdefault(key, []).insert(0, (seq, value))
        else:
            bisect.insort(snaps, seq)
        mem._check()
    for snap in [*snaps, seq]:
        model = {}
        for key, versions in history.items():
            visible = next((v for v in versions if v[0] <= snap), None)
            if visible is not None:
                model[key] = visible
        for key in history:
            assert mem.get(key, snap) == model.get(key)
        ordered = sorted(model)
        assert list(mem.items(None, snap)) == [(k, model[k][1]) for k in ordered]
        assert list(mem.items(None, snap, reverse=True)) == [(k, model[k][1]) for k in reversed(ordered)]
    for key, versions in history.items():
        assert [(s, v) for k, s, v in mem.entries() if k == key] == versions, key
    chunked = [e for keys, seqs, values in mem.entry_chunks(3) for e in zip(keys, seqs, values, strict=True)]
    assert chunked == list(mem.entries())


def test_memtable_check_catches_a_broken_invariant() -> None:
    mem = _filled([(b"a", b"1"), (b"b", b"2")])
    mem.bytes += 1
    with pytest.raises(AssertionError):
        mem._check()


@given(st.integers(0, 15_000), st.booleans(), st.booleans(), st.sampled_from([1, 7, 16, 256, 3000]))
@settings(max_examples=60, deadline=None)
def test_memtable_chunks_cross_the_sorted_lists_sublists(start: int, reverse: bool, inclusive: bool,
                                                         first: int) -> None:
    # 5,000 keys: the sorted key list holds them in several sublists, which positioning reads directly
    keys = _MANY_KEYS
    mem = _MANY
    at = b"%05d" % start
    want = _expected(keys, at, reverse, inclusive)
    assert [k for k, _ in mem.items(at, 10**6, reverse=reverse, inclusive=inclusive)] == want
    chunks = list(mem.chunks(at, 10**6, reverse=reverse, inclusive=inclusive, first=first))
    assert all(chunk and chunk == sorted(chunk) for chunk in chunks)
    assert [k for chunk in chunks for k, _ in (reversed(chunk) if reverse else chunk)] == want
    if chunks:
        assert len(chunks[0]) == min(first, len(want))


_MANY_KEYS = [b"%05d" % i for i in range(0, 15_000, 3)]
_MANY = Memtable()
for _i, _key in enumerate(_MANY_KEYS):
    _MANY.put(_key, _i + 1, _key)
assert len(_MANY._keys._lists) > 2  # type: ignore[attr-defined]


_COMMIT = st.one_of(
    st.tuples(st.just("up"), st.integers(0, 5000), st.integers(1, 300)),  # a run of keys in order
    st.tuples(st.just("down"), st.integers(0, 5000), st.integers(1, 300)),
    st.tuples(st.just("spread"), st.integers(0, 5000), st.integers(1, 300)),  # keys among the others
)


@settings(max_examples=60)
@given(st.lists(_COMMIT, min_size=1, max_size=12))
def test_apply_many_lays_runs_of_new_keys_on_the_key_index_and_keeps_it_sorted(
        commits: list[tuple[str, int, int]]) -> None:
    """Commits of many new keys past either end of the index are laid on as whole sublists; the index
    stays a valid sorted list (sortedcontainers' own check) holding exactly the memtable's keys."""
    mem = Memtable()
    model: dict[bytes, bytes] = {}
    for seq, (kind, first, count) in enumerate(commits, start=1):
        if kind == "up":
            keys = [b"%06d" % (first * 100 + i) for i in range(count)]
        elif kind == "down":
            keys = [b"%06d" % (first * 100 - i) for i in range(count) if first * 100 - i >= 0]
        else:
            keys = [b"%06d" % (first + i * 37) for i in range(count)]
        writes = sorted({key: b"%d" % seq for key in keys}.items())
        mem.apply_many([(seq, writes)])
        model.update(writes)
        mem._keys._check()  # type: ignore[attr-defined]  # sortedcontainers' own invariants
        assert list(mem._keys) == sorted(model)
    assert [(k, v) for k, v in mem.items(None, len(commits))] == sorted(model.items())
    assert all(mem.get(k, len(commits)) is not None for k in model)
