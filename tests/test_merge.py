"""Merging levels (kvstore/merge.py): newest level wins, tombstones hidden, and what a compaction keeps.

The merge of chunks is checked against a reference written one entry at a time (a heap over the sources,
then the retention rule per key), the way the merge itself was written before it took chunks.
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Iterator, Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvstore.chunks import chunks_of
from kvstore.merge import EntryChunk, compact_chunks, entry_chunks_of, merge_chunks, merge_entry_chunks, merge_items

Level = dict[bytes, "bytes | None"]
Entry = tuple[bytes, int, "bytes | None"]


def _items(level: Level, reverse: bool) -> Iterator[tuple[bytes, bytes | None]]:
    for key in sorted(level, reverse=reverse):
        yield key, level[key]


def _merged(levels: list[Level], reverse: bool = False) -> list[tuple[bytes, bytes]]:
    return list(merge_items([_items(level, reverse) for level in levels], reverse))


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "backward"])
def test_merge_items_newest_level_wins(reverse: bool) -> None:
    levels: list[Level] = [{b"b": b"new"}, {b"a": b"mid", b"b": b"mid"}, {b"a": b"old", b"b": b"old", b"c": b"old"}]
    expected = [(b"a", b"mid"), (b"b", b"new"), (b"c", b"old")]
    assert _merged(levels, reverse) == (expected[::-1] if reverse else expected)


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "backward"])
def test_merge_items_tombstone_hides_older_levels(reverse: bool) -> None:
    levels: list[Level] = [{b"a": None, b"d": None}, {b"a": b"1", b"b": b"2"}, {b"b": b"old", b"c": b"3", b"d": b"4"}]
    expected = [(b"b", b"2"), (b"c", b"3")]
    assert _merged(levels, reverse) == (expected[::-1] if reverse else expected)


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "backward"])
def test_merge_items_value_in_a_newer_level_revives_an_older_tombstone(reverse: bool) -> None:
    levels: list[Level] = [{b"a": b"again"}, {b"a": None}, {b"a": b"first"}]
    assert _merged(levels, reverse) == [(b"a", b"again")]


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "backward"])
def test_merge_items_single_level_drops_its_tombstones(reverse: bool) -> None:
    assert _merged([{b"a": None, b"b": b"", b"c": None}], reverse) == [(b"b", b"")]


def test_merge_items_no_levels_or_empty_levels_yield_nothing() -> None:
    assert _merged([]) == []
    assert _merged([{}, {}, {}]) == []
    assert _merged([{}, {}], reverse=True) == []


@given(st.lists(st.dictionaries(st.binary(max_size=2), st.one_of(st.none(), st.binary(max_size=2)), max_size=8),
                max_size=5),
       st.booleans())
def test_merge_items_match_a_dict_model(levels: list[Level], reverse: bool) -> None:
    model: dict[bytes, bytes | None] = {}
    for level in reversed(levels):
        model.update(level)
    expected = sorted(((k, v) for k, v in model.items() if v is not None), reverse=reverse)
    assert _merged(levels, reverse) == expected


@given(st.integers(16, 300), st.data(), st.booleans(), st.booleans(), st.integers(1, 300), st.integers(1, 300))
def test_merge_chunks_of_a_few_rows_into_many_match_a_dict_model(count: int, data: st.DataObject,
                                                                  few_is_newer: bool, reverse: bool,
                                                                  size_many: int, size_few: int) -> None:
    """Rounds whose parts are lopsided (a handful of rows against hundreds) are merged by bisecting the few
    into the many, the newer level's row winning whichever side is smaller."""
    deleted = data.draw(st.sets(st.integers(0, count - 1), max_size=8))
    many: Level = {b"%03d" % (2 * i): (None if i in deleted else b"m") for i in range(count)}
    shared = data.draw(st.lists(st.sampled_from(sorted(many)), max_size=12))
    others = data.draw(st.lists(st.builds(b"%03d".__mod__, st.integers(0, 700)), max_size=4))
    few: Level = {key: data.draw(st.one_of(st.none(), st.binary(min_size=2, max_size=2))) for key in shared + others}
    levels = [few, many] if few_is_newer else [many, few]
    sizes = [size_few, size_many] if few_is_newer else [size_many, size_few]
    model: dict[bytes, bytes | None] = {}
    for level in reversed(levels):
        model.update(level)
    expected = sorted(((k, v) for k, v in model.items() if v is not None), reverse=reverse)
    chunks = [chunks_of(_items(level, reverse), reverse, size, size) for level, size in zip(levels, sizes)]
    assert [row for chunk in merge_chunks(chunks, reverse) for row in chunk] == expected


# ---------------------------------------------------------------- the reference, one entry at a time


def _reference_merge(sources: Sequence[Iterator[Entry]]) -> Iterator[Entry]:
    """Entries of levels (newest first) in table order: a heap of (key, level, entry, iterator)."""
    heap: list[tuple[bytes, int, Entry, Iterator[Entry]]] = []
    for prio, it in enumerate(sources):
        for entry in it:
            heap.append((entry[0], prio, entry, it))
            break
    heapq.heapify(heap)
    while heap:
        _, prio, entry, it = heap[0]
        yield entry
        nxt = next(it, None)
        if nxt is None:
            heapq.heappop(heap)
        else:
            heapq.heapreplace(heap, (nxt[0], prio, nxt, it))


def _reference_retain(versions: list[Entry], snapshots: Sequence[int], bottom: bool) -> list[Entry]:
    """The versions of one key (newest first) that the newest read or some snapshot sees."""
    kept = [versions[0]]
    newer = versions[0][1]
    for entry in versions[1:]:
        i = bisect.bisect_left(snapshots, entry[1])
        if i < len(snapshots) and snapshots[i] < newer:
            kept.append(entry)
        newer = entry[1]
    if bottom:
        while kept and kept[-1][2] is None:
            kept.pop()
    return kept


def _reference_compact(sources: list[list[Entry]], snapshots: list[int], bottom: bool) -> list[Entry]:
    groups: list[list[Entry]] = []
    for entry in _reference_merge([iter(s) for s in sources]):
        if groups and groups[-1][0][0] == entry[0]:
            groups[-1].append(entry)
        else:
            groups.append([entry])
    return [e for group in groups for e in _reference_retain(group, snapshots, bottom)]


def _entries(chunks: Iterator[EntryChunk]) -> list[Entry]:
    return [entry for keys, seqs, values in chunks for entry in zip(keys, seqs, values, strict=True)]


def _compact(sources: list[list[Entry]], snapshots: list[int], bottom: bool, size: int = 512) -> list[Entry]:
    return _entries(compact_chunks([entry_chunks_of(s, size) for s in sources], snapshots, bottom))


def test_merge_entry_chunks_interleaves_levels_in_table_order() -> None:
    newer: list[Entry] = [(b"a", 9, b"a9"), (b"c", 8, None)]
    older: list[Entry] = [(b"a", 5, b"a5"), (b"a", 3, None), (b"b", 4, b"b4"), (b"c", 2, b"c2")]
    for size in (1, 2, 512):
        assert _entries(merge_entry_chunks([entry_chunks_of(newer, size), entry_chunks_of(older, size)])) == [
            (b"a", 9, b"a9"), (b"a", 5, b"a5"), (b"a", 3, None), (b"b", 4, b"b4"), (b"c", 8, None),
            (b"c", 2, b"c2")]


def test_entry_chunks_of_never_splits_the_versions_of_a_key() -> None:
    entries: list[Entry] = [(b"a", 9, b"1"), (b"a", 8, b"2"), (b"a", 7, None), (b"b", 6, b"3"), (b"c", 5, b"4"),
                            (b"c", 4, b"5")]
    chunks = list(entry_chunks_of(entries, 2))
    assert [c[0] for c in chunks] == [[b"a", b"a", b"a"], [b"b"], [b"c", b"c"]]
    assert _entries(iter(chunks)) == entries
    assert list(entry_chunks_of([], 2)) == []


def test_compact_without_snapshots_keeps_only_the_newest_version() -> None:
    newer: list[Entry] = [(b"a", 9, b"a9"), (b"b", 8, None)]
    older: list[Entry] = [(b"a", 5, b"a5"), (b"b", 4, b"b4"), (b"c", 3, b"c3")]
    assert _compact([newer, older], [], bottom=False) == [(b"a", 9, b"a9"), (b"b", 8, None), (b"c", 3, b"c3")]


def test_compact_drops_deletes_only_at_the_bottom() -> None:
    newer: list[Entry] = [(b"a", 9, None), (b"b", 8, b"b8")]
    older: list[Entry] = [(b"a", 5, b"a5"), (b"c", 3, None)]
    assert _compact([newer, older], [], bottom=False) == [(b"a", 9, None), (b"b", 8, b"b8"), (b"c", 3, None)]
    assert _compact([newer, older], [], bottom=True) == [(b"b", 8, b"b8")]


def test_compact_keeps_the_version_each_live_snapshot_reads() -> None:
    versions: list[Entry] = [(b"k", 10, b"v10"), (b"k", 7, b"v7"), (b"k", 5, b"v5"), (b"k", 2, b"v2")]
    # snapshot 8 reads v7, snapshot 5 reads v5; v2 is read by nobody
    assert _compact([versions], [5, 8], bottom=False) == versions[:3]
    # snapshot 6 reads v5 too; snapshot 1 reads nothing
    assert _compact([versions], [1, 6], bottom=False) == [versions[0], versions[2]]
    # a snapshot at or past the newest version reads the newest: nothing older is needed
    assert _compact([versions], [10, 11], bottom=False) == versions[:1]


def test_compact_at_the_bottom_keeps_a_delete_a_snapshot_reads_above_a_value() -> None:
    versions: list[Entry] = [(b"k", 9, b"v9"), (b"k", 6, None), (b"k", 3, b"v3")]
    # snapshot 7 reads the delete at 6 and snapshot 4 reads v3: the delete hides v3 from snapshot 7
    assert _compact([versions], [4, 7], bottom=True) == versions
    # snapshot 7 alone: the delete is the oldest kept version, and at the bottom it reads as absent
    assert _compact([versions], [7], bottom=True) == versions[:1]
    assert _compact([versions], [7], bottom=False) == versions[:2]


def test_compact_at_the_bottom_drops_a_key_whose_newest_version_is_a_delete() -> None:
    versions: list[Entry] = [(b"k", 9, None), (b"k", 6, None), (b"k", 3, b"v3"), (b"z", 1, b"z")]
    assert _compact([versions], [4, 7], bottom=True) == [(b"k", 9, None), (b"k", 6, None), (b"k", 3, b"v3"),
                                                        (b"z", 1, b"z")]
    assert _compact([versions], [], bottom=True) == [(b"z", 1, b"z")]


def _visible(entries: list[Entry], key: bytes, snapshot: int) -> bytes | None:
    for k, seq, value in entries:
        if k == key and seq <= snapshot:
            return value
    return None


def _visible_seq(entries: list[Entry], key: bytes, snapshot: int) -> int | None:
    for k, seq, _ in entries:
        if k == key and seq <= snapshot:
            return seq
    return None


@st.composite
def _levels(draw: st.DrawFn) -> list[list[Entry]]:
    """Levels newest first; each holds sequences above every older level's, versions newest first."""
    count = draw(st.integers(1, 4))
    seq = 0
    levels: list[list[Entry]] = []
    for _ in range(count):
        writes = draw(st.lists(st.tuples(st.sampled_from([b"a", b"b", b"c", b"d"]),
                                         st.one_of(st.none(), st.binary(max_size=2))), max_size=8))
        level = []
        for key, value in writes:
            seq += 1
            level.append((key, seq, value))
        level.sort(key=lambda e: (e[0], -e[1]))
        levels.append(level)
    return levels[::-1]


@given(_levels(), st.lists(st.integers(0, 40), max_size=4, unique=True), st.booleans())
def test_compact_preserves_every_read_of_every_live_snapshot(levels: list[list[Entry]], snaps: list[int],
                                                             bottom: bool) -> None:
    snapshots = sorted(snaps)
    everything = sorted((e for level in levels for e in level), key=lambda e: (e[0], -e[1]))
    out = _compact(levels, snapshots, bottom)
    assert out == sorted(out, key=lambda e: (e[0], -e[1]))
    assert len({(k, s) for k, s, _ in out}) == len(out)
    top = max((s for _, s, _ in everything), default=0)
    for key in {k for k, _, _ in everything}:
        for snapshot in [*snapshots, top]:
            assert _visible(out, key, snapshot) == _visible(everything, key, snapshot), (key, snapshot)
        kept = [e for e in out if e[0] == key]
        if bottom and kept:
            assert kept[-1][2] is not None  # no delete is left with nothing under it
        # no version is kept that neither the newest read nor any snapshot reads
        readers = [*snapshots, top]
        read = {_visible_seq(everything, key, r) for r in readers}
        for entry in kept:
            assert entry[1] in read, entry


@st.composite
def _chunked_levels(draw: st.DrawFn) -> list[list[Entry]]:
    """Levels newest first over a small key space: duplicate keys across levels, several versions of a key
    within one, deletes; sequences above every older level's."""
    count = draw(st.integers(1, 5))
    seq = 0
    levels: list[list[Entry]] = []
    for _ in range(count):
        writes = draw(st.lists(st.tuples(st.integers(0, 30), st.one_of(st.none(), st.binary(max_size=3))),
                               max_size=40))
        level = []
        for key, value in writes:
            seq += draw(st.integers(1, 3))
            level.append((b"k%02d" % key, seq, value))
        level.sort(key=lambda e: (e[0], -e[1]))
        levels.append(level)
    return levels[::-1]


@given(_chunked_levels(), st.lists(st.integers(0, 200), max_size=5, unique=True), st.booleans(),
       st.integers(1, 40))
def test_compact_chunks_match_the_per_entry_reference(levels: list[list[Entry]], snaps: list[int], bottom: bool,
                                                      size: int) -> None:
    snapshots = sorted(snaps)
    expected = _reference_compact(levels, snapshots, bottom)
    assert _compact(levels, snapshots, bottom, size) == expected
    # chunks of different sizes per level, and empty chunks among them
    sources = [_with_empty_chunks(entry_chunks_of(level, size + i)) for i, level in enumerate(levels)]
    chunks = list(compact_chunks(sources, snapshots, bottom))
    assert all(keys for keys, _, _ in chunks)
    assert _entries(iter(chunks)) == expected


@given(_chunked_levels(), st.integers(1, 40))
def test_merge_entry_chunks_match_the_per_entry_reference(levels: list[list[Entry]], size: int) -> None:
    expected = list(_reference_merge([iter(level) for level in levels]))
    assert _entries(merge_entry_chunks([entry_chunks_of(level, size) for level in levels])) == expected


def _with_empty_chunks(chunks: Iterator[EntryChunk]) -> Iterator[EntryChunk]:
    yield [], [], []
    for chunk in chunks:
        yield chunk
        yield [], [], []
