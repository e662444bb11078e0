"""``KV.trace(key)``, ``kvstore trace`` and the shell's ``trace``: each field of a trace checked on a database
with a memtable, a frozen one, several tables, a range tombstone and an expired key; and the trace's answer
is ``get``'s on every key of randomly built databases."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cliproc import out, run
from hypothesis import given, settings
from hypothesis import strategies as st

from kvstore import KV, Config
from kvstore.expiry import Clock

CONFIG = Config(sync=False, background=False, memtable_size=1 << 20, bloom_bits_per_key=10)


class Manual:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def layered(tmp_path: Path) -> tuple[KV, Manual]:
    """Oldest table: a..z set (v1); newer: m..p range-deleted, 'e' set again (v2), 't' set with a ttl;
    memtable: 'c' (v3).  Keys of two bytes: a0 .. z0."""
    clock = Manual()
    kv = KV.open(tmp_path, CONFIG, clock=Clock(clock))
    for c in b"abcdefghijklmnopqrstuvwxyz":
        kv.set(bytes([c, 0x30]), b"v1")
    kv.flush()
    kv.delete_range(b"m", b"q")
    kv.set(b"e0", b"v2")
    kv.set(b"t0", b"short", ttl=5)
    kv.flush()
    kv.set(b"c0", b"v3")
    return kv, clock


def test_a_key_in_the_memtable_stops_there(layered: tuple[KV, Manual]) -> None:
    kv, _ = layered
    t = kv.trace(b"c0")
    assert (t.answer, t.value, t.key, t.stored_key) == ("value", b"v3", b"c0", b"c0")
    assert [(s.level, s.outcome, s.bloom) for s in t.steps] == [("memtable", "value", None)]
    assert t.steps[0].sequence == t.sequence == kv.stats().sequence
    assert t.snapshot == kv.stats().sequence and t.seconds > 0


def test_a_key_found_in_a_newer_table_reads_one_block(layered: tuple[KV, Manual]) -> None:
    kv, _ = layered
    newest = kv.stats().tables[0].name
    t = kv.trace(b"e0")
    assert [(s.name, s.outcome) for s in t.steps] == [("memtable", "none"), (newest, "value")]
    step = t.steps[1]
    assert step.bloom == "positive" and step.in_range and (step.smallest, step.largest) == (b"e0", b"t0")
    assert len(step.blocks) == 1 and step.blocks[0].index == 0 and step.blocks[0].offset > 0
    assert t.value == b"v2" and t.sequence == step.sequence


def test_the_block_cache_answer_is_reported(layered: tuple[KV, Manual], tmp_path: Path) -> None:
    kv, _ = layered
    kv.close()
    kv = KV.open(tmp_path, CONFIG)  # a cold cache
    try:
        first, second = kv.trace(b"b0"), kv.trace(b"b0")
        assert [b.cached for s in first.steps for b in s.blocks] == [False]
        assert [b.cached for s in second.steps for b in s.blocks] == [True]
        assert first.value == second.value == b"v1"
    finally:
        kv.close()


def test_a_key_the_newer_filter_rules_out_is_found_in_the_older_table(layered: tuple[KV, Manual]) -> None:
    kv, _ = layered
    newest, oldest = (s.name for s in kv.stats().tables)
    t = kv.trace(b"b0")
    assert [(s.name, s.bloom, s.outcome) for s in t.steps] == [
        ("memtable", None, "none"), (newest, "negative", "skipped"), (oldest, "positive", "value")]
    assert t.steps[1].blocks == () and not t.steps[1].in_range  # b0 is below the newer table's e0
    assert t.value == b"v1"


def test_a_range_tombstone_answers_absent(layered: tuple[KV, Manual]) -> None:
    kv, _ = layered
    newest = kv.stats().tables[0].name
    t = kv.trace(b"n0")
    assert t.answer == "range-deleted" and t.value is None and t.sequence is None
    last = t.steps[-1]
    assert last.name == newest and last.outcome == "range-deleted" and last.range_tombstone is not None
    assert kv.get(b"n0") is None


def test_an_expired_key_is_reported_with_its_expiry(layered: tuple[KV, Manual]) -> None:
    kv, clock = layered
    live = kv.trace(b"t0")
    assert (live.answer, live.value, live.expires) == ("value", b"short", 1005.0)
    clock.now = 1010.0
    t = kv.trace(b"t0")
    assert (t.answer, t.value, t.expires) == ("expired", None, 1005.0)
    assert t.steps[-1].outcome == "expired" and t.sequence == live.sequence
    assert kv.get(b"t0") is None


def test_an_absent_key_passes_every_level(layered: tuple[KV, Manual]) -> None:
    kv, _ = layered
    t = kv.trace(b"zz")
    assert t.answer == "absent" and t.value is None and t.sequence is None
    assert t.steps[0].outcome == "none"
    assert all(s.outcome in ("none", "skipped") for s in t.steps)


def test_a_collection_key_is_traced_by_its_stored_key(tmp_path: Path) -> None:
    with KV.open(tmp_path, CONFIG) as kv:
        kv.collection("users").set(b"bob", b"1")
        kv.set(b"bob", b"own")
        t = kv.trace(b"bob", collection="users")
        assert (t.key, t.stored_key, t.value) == (b"bob", b"\xff\x05usersbob", b"1")
        assert kv.trace(b"bob").value == b"own"
        with pytest.raises(ValueError):
            kv.trace(b"bob", collection="")


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["set", "delete", "range", "flush", "ttl", "tick"]),
                          st.integers(0, 30), st.integers(0, 30)), max_size=60))
def test_the_trace_answers_what_get_answers(tmp_path_factory: pytest.TempPathFactory,
                                            ops: list[tuple[str, int, int]]) -> None:
    clock = Manual()
    with KV.open(tmp_path_factory.mktemp("db"), Config(sync=False, background=False, memtable_size=1 << 20),
                 clock=Clock(clock)) as kv:
        for n, (op, a, b) in enumerate(ops):
            key = b"k%02d" % a
            if op == "set":
                kv.set(key, b"v%d" % n)
            elif op == "ttl":
                kv.set(key, b"t%d" % n, ttl=1 + b % 3)
            elif op == "delete":
                kv.delete(key)
            elif op == "range":
                kv.delete_range(key, b"k%02d" % max(a, b))
            elif op == "flush":
                kv.flush()
            else:
                clock.now += 1
        for a in range(31):
            key = b"k%02d" % a
            t = kv.trace(key)
            assert t.value == kv.get(key), (key, t)
            assert (t.answer == "value") == (t.value is not None)


def test_the_command_line_prints_a_trace_as_text_and_as_json(layered: tuple[KV, Manual], tmp_path: Path) -> None:
    kv, _ = layered
    kv.close()
    text = out(run("trace", tmp_path, "f0"))  # in the newer table's range, not in it: found in the oldest
    assert text.startswith("trace of f0 at sequence ")
    assert "bloom negative" in text and "bloom positive" in text and "cache miss" in text
    assert "answer    value at sequence 6 = v1" in text  # f0, the sixth key set
    tree = json.loads(out(run("trace", "--json", tmp_path, "n0")))
    assert tree["answer"] == "range-deleted" and tree["key"] == "bjA="  # base64 of n0
    assert [s["outcome"] for s in tree["steps"]][-1] == "range-deleted"
    missing = run("trace", tmp_path / "nope", "k")
    assert missing.returncode == 4


def test_the_shell_traces_a_key(layered: tuple[KV, Manual], tmp_path: Path) -> None:
    kv, _ = layered
    kv.close()
    result = run("shell", tmp_path, stdin=b"trace c0\n")
    assert "trace of c0" in out(result) and "answer    value" in out(result)
