"""Isolation in collections: each anomaly of tests/test_isolation.py played inside one collection is
prevented as it is in the KV's own keys, and writes in one key space never conflict with what a transaction
read in another (the same key in another collection, the KV's own keys, a neighbouring collection whose
stored prefix sorts next to it).  ``drop_collection`` is a write over the whole collection: it conflicts
with any read of it, and with nothing else.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kvstore import KV, KVTX, Config, ConflictError

CONFIG = Config(sync=False, background=False)
#: The spaces a test runs in: the KV's own keys, a collection, and one whose stored prefix is its successor
#: in byte order ("a" is FF 01 61, "b" FF 01 62), so their ranges touch.
SPACES = [None, "a", "b"]


def space(target: KV | KVTX, name: str | None) -> Any:
    """``target`` itself (``name`` None) or its collection ``name``: one read and write API."""
    return target if name is None else target.collection(name)


@pytest.fixture
def kv(tmp_path: Path) -> Iterator[KV]:
    with KV.open(tmp_path, CONFIG) as db:
        yield db


@pytest.fixture(params=["memtable", "flushed"])
def xy(request: pytest.FixtureRequest, kv: KV) -> KV:
    """x = 50 and y = 50 in every space, in the memtable or in a table."""
    for name in SPACES:
        space(kv, name).set(b"x", b"50")
        space(kv, name).set(b"y", b"50")
    if request.param == "flushed":
        kv.flush()
    return kv


def _int(value: bytes | None) -> int:
    assert value is not None
    return int(value)


def _conflicts(tx: KVTX) -> None:
    with pytest.raises(ConflictError):
        tx.commit()


@pytest.mark.parametrize("name", ["a", "b"])
def test_lost_update_in_a_collection_is_a_conflict(xy: KV, name: str) -> None:
    t1, t2 = xy.new_tx(), xy.new_tx()
    for tx, add in ((t1, 1), (t2, 2)):
        coll = tx.collection(name)
        coll.set(b"x", b"%d" % (_int(coll.get(b"x")) + add))
    t1.commit()
    _conflicts(t2)
    assert xy.collection(name).get(b"x") == b"51"


@pytest.mark.parametrize("name", ["a", "b"])
def test_write_skew_in_a_collection_is_a_conflict(xy: KV, name: str) -> None:
    """Each reads both and writes one: serializable only if one of them fails."""
    t1, t2 = xy.new_tx(), xy.new_tx()
    for tx, key in ((t1, b"x"), (t2, b"y")):
        coll = tx.collection(name)
        total = _int(coll.get(b"x")) + _int(coll.get(b"y"))
        coll.set(key, b"%d" % (total - 100))
    t1.commit()
    _conflicts(t2)


@pytest.mark.parametrize("name", ["a", "b"])
def test_read_skew_in_a_collection_reads_one_snapshot(xy: KV, name: str) -> None:
    tx = xy.new_tx()
    assert tx.collection(name).get(b"x") == b"50"
    with xy.new_tx() as other:
        other.collection(name).set(b"x", b"25")
        other.collection(name).set(b"y", b"75")
    assert tx.collection(name).get(b"y") == b"50"  # the snapshot's, not the committed 75
    assert dict(tx.collection(name).scan()) == {b"x": b"50", b"y": b"50"}
    tx.abort()


@pytest.mark.parametrize("how", ["scan", "cursor", "prefix"])
@pytest.mark.parametrize("name", ["a", "b"])
def test_phantom_in_a_collection_range_is_a_conflict(kv: KV, name: str, how: str) -> None:
    tx = kv.new_tx()
    coll = tx.collection(name)
    if how == "scan":
        assert list(coll.scan(b"k", b"l")) == []
    elif how == "prefix":
        assert list(coll.scan(prefix=b"k")) == []
    else:
        with coll.seek(b"k") as cursor:  # runs off the end of the collection
            assert not cursor.valid
    kv.collection(name).set(b"k1", b"phantom")
    tx.set(b"unrelated", b"1")
    _conflicts(tx)


@pytest.mark.parametrize("read_in", SPACES)
@pytest.mark.parametrize("write_in", SPACES)
@pytest.mark.parametrize("how", ["get", "scan", "cursor"])
def test_a_write_conflicts_only_with_reads_of_its_own_space(xy: KV, read_in: str | None, write_in: str | None,
                                                            how: str) -> None:
    """A transaction reads x (a get, a full scan, a cursor run to the end) in one space; another writes x in
    a space: a conflict exactly when the two spaces are the same."""
    tx = xy.new_tx()
    reader = space(tx, read_in)
    if how == "get":
        assert reader.get(b"x") == b"50"
    elif how == "scan":
        assert [k for k, _ in reader.scan()] == [b"x", b"y"]
    else:
        with reader.seek(b"") as cursor:
            while cursor.valid:
                cursor.next()
    space(xy, write_in).set(b"x", b"changed")
    space(tx, read_in).set(b"z", b"1")
    if read_in == write_in:
        _conflicts(tx)
    else:
        tx.commit()
        assert space(xy, read_in).get(b"z") == b"1"


@pytest.mark.parametrize("read_in", SPACES)
def test_drop_collection_conflicts_with_reads_of_that_collection_only(xy: KV, read_in: str | None) -> None:
    tx = xy.new_tx()
    assert space(tx, read_in).get(b"y") == b"50"
    xy.drop_collection("a")
    tx.set(b"w", b"1")
    if read_in == "a":
        _conflicts(tx)
    else:
        tx.commit()
    assert xy.collection("a").get(b"x") is None and xy.collection("b").get(b"x") == b"50"


def test_a_transaction_over_two_collections_conflicts_on_either(xy: KV) -> None:
    for changed in ("a", "b"):
        tx = xy.new_tx()
        a, b = tx.collection("a"), tx.collection("b")
        b.set(b"x", b"%d" % (_int(a.get(b"x")) - 10))
        a.set(b"y", b"%d" % (_int(b.get(b"y")) + 10))
        xy.collection(changed).set(b"x" if changed == "a" else b"y", b"0")
        _conflicts(tx)


@pytest.mark.parametrize("name", ["a", "b"])
def test_blind_writes_in_a_collection_never_conflict_and_the_last_committer_wins(xy: KV, name: str) -> None:
    t1, t2 = xy.new_tx(), xy.new_tx()
    t1.collection(name).set(b"x", b"first")
    t2.collection(name).set(b"x", b"second")
    t2.commit()
    t1.commit()
    assert xy.collection(name).get(b"x") == b"first"


def test_reads_through_a_kv_collection_handle_are_not_a_transactions_reads(xy: KV) -> None:
    """A read through ``kv.collection(...)`` during a transaction is outside it: it never conflicts."""
    tx = xy.new_tx()
    assert xy.collection("a").get(b"x") == b"50"
    xy.collection("a").set(b"x", b"changed")
    tx.collection("a").set(b"y", b"1")
    tx.commit()
    assert xy.collection("a").get(b"y") == b"1"
