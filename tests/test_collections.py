"""Collections: key spaces of their own in one KV, in every read and write path and in transactions."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvstore import KV, Config, ConflictError, CorruptionError, InvalidCursorError
from kvstore.keyspace import COLLECTIONS_START

CONFIG = Config(sync=False, background=False)


@pytest.fixture(params=["memtable", "flushed"])
def stage(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _fill(kv: KV, stage: str) -> None:
    for k in (b"a", b"m", b"z", b"\xff", b"\xff\x00", b"\xff\xffz"):
        kv.set(k, b"own " + k)
    users, tags = kv.collection("users"), kv.collection("tags")
    for k in (b"", b"a", b"b", b"\xff\xff"):
        users.set(k, b"user " + k)
    tags.set(b"a", b"tag a")
    kv.collection("u").set(b"sersa", b"not users")  # stored prefix FF 01 'u': never meets 'users'
    if stage == "flushed":
        kv.flush()


def test_spaces_never_meet_and_keep_their_order(tmp_path: Path, stage: str) -> None:
    with KV.open(tmp_path, CONFIG) as kv:
        _fill(kv, stage)
        own = [k for k, _ in kv.scan()]
        assert own == [b"a", b"m", b"z", b"\xff", b"\xff\x00", b"\xff\xffz"]
        assert [k for k, _ in kv.scan(reverse=True)] == own[::-1]
        users = kv.collection("users")
        assert list(users.scan()) == [(k, b"user " + k) for k in (b"", b"a", b"b", b"\xff\xff")]
        assert [k for k, _ in users.scan(reverse=True)] == [b"\xff\xff", b"b", b"a", b""]
        assert list(users.scan(b"a", b"b")) == [(b"a", b"user a")]
        assert list(users.scan(prefix=b"\xff")) == [(b"\xff\xff", b"user \xff\xff")]
        assert users.get(b"a") == b"user a" and kv.get(b"a") == b"own a"
        assert kv.collection("tags").get(b"b") is None and kv.get(b"\xff") == b"own \xff"
        assert list(kv.collection("u").scan()) == [(b"sersa", b"not users")]
        assert list(kv.scan(prefix=b"\xff")) == [(k, b"own " + k) for k in own[3:]]
        assert kv.collections() == ["u", "tags", "users"]


def test_cursors_stop_at_the_ends_of_their_space(tmp_path: Path, stage: str) -> None:
    with KV.open(tmp_path, CONFIG) as kv:
        _fill(kv, stage)
        with kv.seek(b"z") as c:
            assert c.key == b"z"
            c.next()
            assert c.key == b"\xff"
            c.next()
            c.next()
            assert c.key == b"\xff\xffz"
            c.next()
            assert not c.valid  # not into a collection
            with pytest.raises(InvalidCursorError):
                _ = c.key
        users = kv.collection("users")
        with users.seek(b"b") as c:
            assert (c.key, c.value) == (b"b", b"user b")
            c.next()
            assert c.key == b"\xff\xff"
            c.next()
            assert not c.valid
        with users.seek_for_prev(b"a") as c:
            assert c.key == b"a"
            c.prev()
            assert c.key == b""
            c.prev()
            assert not c.valid
        with kv.collection("tags").seek(b"b") as c:
            assert not c.valid
        assert [k for k, _ in kv.collection("users").seek(b"")] == [b"", b"a", b"b", b"\xff\xff"]


def test_deletes_ttls_and_range_deletes_stay_in_their_space(tmp_path: Path, stage: str) -> None:
    clock = [1000.0]
    with KV.open(tmp_path, CONFIG, clock=lambda: clock[0]) as kv:
        _fill(kv, stage)
        users = kv.collection("users")
        assert users.delete(b"a") is True and users.delete(b"a") is False
        assert kv.get(b"a") == b"own a"
        users.delete_range(b"", b"\xff")
        assert [k for k, _ in users.scan()] == [b"\xff\xff"]
        kv.delete_range(b"\xff", b"\xff\xff")
        assert [k for k, _ in kv.scan()] == [b"a", b"m", b"z", b"\xff\xffz"]
        assert [k for k, _ in users.scan()] == [b"\xff\xff"]
        users.set(b"t", b"v", ttl=10)
        left = users.ttl(b"t")
        assert left is not None and 9 < left <= 10 and kv.ttl(b"t") is None
        clock[0] += 10
        assert users.get(b"t") is None


def test_drop_collection_is_one_write_and_a_handle_reads_it_empty(tmp_path: Path, stage: str) -> None:
    with KV.open(tmp_path, CONFIG) as kv:
        _fill(kv, stage)
        users = kv.collection("users")
        before = kv.stats().sequence
        kv.drop_collection("users")
        assert kv.stats().sequence == before + 1
        assert list(users.scan()) == [] and users.get(b"a") is None
        assert kv.collections() == ["u", "tags"]
        assert kv.get(b"a") == b"own a" and list(kv.collection("u").scan())
        users.set(b"new", b"1")
        assert list(users.scan()) == [(b"new", b"1")]
        kv.compact(full=True)
        assert list(users.scan()) == [(b"new", b"1")] and kv.collections() == ["u", "tags", "users"]


def test_a_transaction_changes_several_collections_atomically(tmp_path: Path) -> None:
    with KV.open(tmp_path, CONFIG) as kv:
        kv.collection("accounts").set(b"alice", b"10")
        with kv.new_tx() as tx:
            accounts, log = tx.collection("accounts"), tx.collection("log")
            assert accounts.get(b"alice") == b"10"
            accounts.set(b"alice", b"7")
            accounts.set(b"bob", b"3")
            log.set(b"0001", b"alice->bob 3")
            assert [k for k, _ in accounts.scan()] == [b"alice", b"bob"]
            assert list(log.scan()) == [(b"0001", b"alice->bob 3")]
            assert kv.collection("accounts").get(b"bob") is None  # not before the commit
        assert kv.collection("accounts").get(b"bob") == b"3" and kv.collection("log").get(b"0001")
        with pytest.raises(RuntimeError), kv.new_tx() as tx:
            tx.collection("log").set(b"0002", b"x")
            raise RuntimeError
        assert kv.collection("log").get(b"0002") is None


def test_conflicts_are_per_collection_key(tmp_path: Path) -> None:
    with KV.open(tmp_path, CONFIG) as kv:
        t1 = kv.new_tx()
        t1.collection("a").get(b"k")
        kv.collection("b").set(b"k", b"other collection")  # the same key elsewhere: no conflict
        kv.set(b"k", b"the KV's own")
        t1.collection("a").set(b"x", b"1")
        t1.commit()
        t2 = kv.new_tx()
        list(t2.collection("a").scan())
        kv.collection("a").set(b"new", b"phantom")
        t2.collection("a").set(b"y", b"1")
        with pytest.raises(ConflictError):
            t2.commit()


def test_collections_survive_reopen_and_merges(tmp_path: Path) -> None:
    with KV.open(tmp_path, Config(sync=False, memtable_size=4096)) as kv:
        for i in range(300):
            kv.collection(f"c{i % 3}").set(b"%04d" % i, b"v" * 50)
            kv.set(b"\xff%04d" % i, b"own")
        kv.compact(full=True)
    with KV.open(tmp_path, CONFIG) as kv:
        assert kv.collections() == ["c0", "c1", "c2"]
        assert [k for k, _ in kv.collection("c1").scan()] == [b"%04d" % i for i in range(1, 300, 3)]
        assert sum(1 for _ in kv.scan()) == 300
        assert kv.check() == []


@pytest.mark.parametrize(("name", "error"), [(b"users", TypeError), (None, TypeError), ("", ValueError),
                                             ("n" * 256, ValueError)])
def test_bad_names_raise_and_change_nothing(tmp_path: Path, name: object, error: type[Exception]) -> None:
    with KV.open(tmp_path, CONFIG) as kv:
        with pytest.raises(error):
            kv.collection(name)  # type: ignore[arg-type]
        with pytest.raises(error):
            kv.drop_collection(name)  # type: ignore[arg-type]
        with kv.new_tx() as tx, pytest.raises(error):
            tx.collection(name)  # type: ignore[arg-type]
        assert kv.stats().sequence == 0


def test_a_key_too_long_for_its_space_is_refused(tmp_path: Path) -> None:
    with KV.open(tmp_path, CONFIG) as kv:
        kv.set(b"k" * 65535, b"v")  # the KV's own key, not starting with FF: stored as it is
        with pytest.raises(ValueError, match="stored in 65536 bytes"):
            kv.set(b"\xff" * 65535, b"v")
        with pytest.raises(ValueError, match="stored"):
            kv.collection("c").set(b"k" * 65535, b"v")
        kv.collection("c").set(b"k" * (65535 - 3), b"v")
        assert kv.collection("c").get(b"k" * (65535 - 3)) == b"v"


def test_stats_count_a_small_collection_and_estimate_a_large_one(tmp_path: Path) -> None:
    with KV.open(tmp_path, Config(sync=False, background=False, block_size=1024)) as kv:
        small = kv.collection("small")
        for i in range(10):
            small.set(b"%02d" % i, b"v" * 10)
        large = kv.collection("large")
        with kv.new_tx() as tx:
            for i in range(5000):
                tx.collection("large").set(b"%05d" % i, b"x" * 20)
        kv.set(b"own", b"not counted")
        kv.flush()
        for i in range(100):
            large.set(b"n%04d" % i, b"y" * 20)  # in the memtable
        stats = {c.name: c for c in kv.stats().collections}
        assert set(stats) == {"small", "large"}
        assert stats["small"].exact and stats["small"].keys == 10
        assert stats["small"].bytes == 10 * (len(b"\xff\x05small") + 2 + 10)
        est = stats["large"]
        assert not est.exact and 0.9 * 5100 <= est.keys <= 1.2 * 5100, est
        assert 0.5 * 5100 * 33 <= est.bytes <= 2 * 5100 * 40, est
        kv.drop_collection("small")
        assert [c.name for c in kv.stats().collections] == ["large"]


def test_a_cursor_that_ran_off_its_space_does_not_conflict_with_another_space(tmp_path: Path) -> None:
    with KV.open(tmp_path, CONFIG) as kv:
        kv.set(b"k", b"v")
        tx = kv.new_tx()
        with tx.seek(b"a") as c:  # the KV's own keys from "a" to their end: k, then off the end
            c.next()
            assert not c.valid
        kv.collection("a").set(b"", b"other space")  # stored FF 01 61: above the KV's own space
        tx.set(b"x", b"1")
        tx.commit()
        t2 = kv.new_tx()
        with t2.collection("a").seek(b"") as c:
            c.next()
            assert not c.valid
        kv.collection("b").set(b"", b"the next collection")  # stored FF 01 62: the successor of 'a'
        t2.collection("a").set(b"y", b"1")
        t2.commit()
        t3 = kv.new_tx()
        with t3.seek(b"a") as c:
            while c.valid:  # k, x, then off the end of the KV's own keys
                c.next()
        kv.set(b"\xff\xff", b"own key, escaped: inside the range the cursor covered")
        t3.set(b"z", b"1")
        with pytest.raises(ConflictError):
            t3.commit()


@pytest.mark.parametrize("stray", [b"\xff", b"\xff\x09ab", b"\xff\x02\xc3\x28x"])
def test_check_reports_a_stored_key_no_key_space_stores(tmp_path: Path, stray: bytes) -> None:
    """A key from FF that is neither the KV's own escaped nor a collection's (a length past the key's end, a
    name that is not UTF-8, FF alone) can only come from damage: ``check`` reports it."""
    with KV.open(tmp_path, CONFIG) as kv:
        kv.set(b"\xffown", b"escaped")
        kv.collection("users").set(b"k", b"v")
        kv.flush()
        assert kv.check() == []
        kv._pipeline.set_one([(stray, b"planted")], False)  # under the key spaces, as damage would leave it
        kv.flush()
        problems = kv.check()
        assert len(problems) == 1 and str(tmp_path) in problems[0], problems
        assert "belongs to no key space" in problems[0] and repr(stray)[:6] in problems[0], problems
        if stray > COLLECTIONS_START:  # where collections() looks: it raises rather than skip the damage
            with pytest.raises(CorruptionError, match="belongs to no key space"):
                kv.collections()
