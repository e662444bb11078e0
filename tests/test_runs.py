"""Sorted runs (kvstore/runs.py): tables of disjoint key ranges are one level for reads and for the merge rule.

A load in key order writes tables that overlap nothing before them; they are never merged again, and
every read (get, scans both ways from any start, cursors, snapshots) answers as a dict model does.
"""

from __future__ import annotations

import itertools
import pathlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvstore import KV, Config
from kvstore.runs import group

SMALL = Config(background=False, sync=False, memtable_size=2048, block_size=256)


def _overlap(a: tuple[bytes, bytes], b: tuple[bytes, bytes]) -> bool:
    return not (a[1] < b[0] or b[1] < a[0])


_RANGE = st.tuples(st.binary(min_size=1, max_size=2), st.binary(min_size=1, max_size=2)).map(
    lambda pair: (min(pair), max(pair)))


@given(st.lists(_RANGE, max_size=12))
def test_group_cuts_maximal_runs_of_disjoint_ranges(ranges: list[tuple[bytes, bytes]]) -> None:
    counts = group(ranges)
    assert sum(counts) == len(ranges) and all(counts)
    runs: list[list[tuple[bytes, bytes]]] = []
    pos = 0
    for count in counts:
        runs.append(ranges[pos : pos + count])
        pos += count
    for run in runs:  # no two tables of a run overlap
        assert not any(_overlap(a, b) for a, b in itertools.combinations(run, 2))
    for before, run in itertools.pairwise(runs):  # a run starts where the next table would overlap
        assert any(_overlap(run[0], other) for other in before)


def _sizes_by_run(kv: KV) -> list[int]:
    tables = kv.stats().tables
    counts, pos = group([(t.smallest, t.largest) for t in tables]), 0
    sizes: list[int] = []
    for count in counts:
        sizes.append(sum(t.bytes for t in tables[pos : pos + count]))
        pos += count
    return sizes


def _check_reads(kv: KV, model: dict[bytes, bytes]) -> None:
    keys = sorted(model)
    assert list(kv.scan()) == sorted(model.items())
    assert list(kv.scan(reverse=True)) == sorted(model.items(), reverse=True)
    probes = keys[::7] + [k + b"\x00" for k in keys[::11]] + [b"", b"\xff" * 9]
    for probe in probes:
        assert kv.get(probe) == model.get(probe)
        assert list(itertools.islice(kv.scan(start=probe), 5)) == [(k, model[k]) for k in keys if k >= probe][:5]
        below = [(k, model[k]) for k in reversed(keys) if k < probe][:5]
        assert list(itertools.islice(kv.scan(end=probe, reverse=True), 5)) == below
        with kv.seek(probe) as cursor:
            ahead = [k for k in keys if k >= probe][:3]
            got: list[bytes] = []
            while cursor.valid and len(got) < 3:
                got.append(cursor.key)
                cursor.next()
            assert got == ahead


@pytest.mark.parametrize("descending", [False, True], ids=["ascending", "descending"])
def test_a_load_in_key_order_is_written_once_and_reads_as_one_level(tmp_path: pathlib.Path,
                                                                     descending: bool) -> None:
    order = range(2000)
    with KV.open(tmp_path / "db", SMALL) as kv:
        model: dict[bytes, bytes] = {}
        for i in reversed(order) if descending else order:
            key = b"key%06d" % i
            kv.set(key, b"v%d" % i)
            model[key] = b"v%d" % i
        kv.flush()
        stats = kv.stats()
        assert len(stats.tables) > 20 and stats.merges == 0  # tables of disjoint ranges: one run, never merged
        assert len(_sizes_by_run(kv)) == 1
        _check_reads(kv, model)


def test_writes_over_a_run_shadow_it_and_merge_by_the_rule_over_runs(tmp_path: pathlib.Path) -> None:
    with KV.open(tmp_path / "db", SMALL) as kv:
        model: dict[bytes, bytes] = {}
        for i in range(1500):  # a run of tables in key order
            kv.set(b"key%06d" % i, b"old")
            model[b"key%06d" % i] = b"old"
        kv.flush()
        snapshot_tx = kv.new_tx()
        before = dict(model)
        for i in range(0, 1500, 3):  # overlapping writes and deletes above the run
            if i % 2:
                kv.delete(b"key%06d" % i)
                del model[b"key%06d" % i]
            else:
                kv.set(b"key%06d" % i, b"new")
                model[b"key%06d" % i] = b"new"
            if i % 150 == 0:
                kv.flush()
        kv.flush()
        _check_reads(kv, model)
        sizes = _sizes_by_run(kv)
        assert all(sizes[i] > sum(sizes[:i]) for i in range(1, len(sizes)))  # the rule holds over runs
        assert dict(snapshot_tx.scan()) == before and snapshot_tx.get(b"key000003") == b"old"
        snapshot_tx.abort()
        kv.compact(full=True)
        assert len(kv.stats().tables) == 1
        _check_reads(kv, model)
    with KV.open(tmp_path / "db", SMALL) as kv:
        _check_reads(kv, model)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["run", "random", "delete"]), st.integers(0, 400), st.integers(1, 60)),
                min_size=1, max_size=8))
def test_runs_and_overlapping_tables_read_as_a_dict_model(tmp_path_factory: pytest.TempPathFactory,
                                                          steps: list[tuple[str, int, int]]) -> None:
    path = tmp_path_factory.mktemp("db")
    with KV.open(path, SMALL) as kv:
        model: dict[bytes, bytes] = {}
        for n, (kind, first, count) in enumerate(steps):
            keys = [b"%05d" % (first + i * (1 if kind == "run" else 7)) for i in range(count)]
            for key in keys:
                if kind == "delete":
                    kv.delete(key)
                    model.pop(key, None)
                else:
                    kv.set(key, b"%d" % n)
                    model[key] = b"%d" % n
            kv.flush()
        _check_reads(kv, model)
