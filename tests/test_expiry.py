"""Expiring keys: ``kv.set(..., ttl=)``, ``tx.set(..., ttl=)``, ``kv.ttl`` and ``tx.ttl`` (DESIGN.md,
"Expiring keys").

A key set with a ttl reads as present until the KV's clock reaches commit time + ttl and as absent from
that instant on, on every read path (get, scans both ways, cursors, transactions), in the memtable, in
tables, after merges and after a reopen; an expired newer value never lets an older one show through.
Merges drop expired entries (and what they shadow) and count them.  An expiry is not a write: it causes
no conflict.  Bad ttls raise and write nothing.
"""

from __future__ import annotations

import math
import pathlib

import pytest

from kvstore import KV, Config, ConflictError, CorruptionError, ReadOnlyError
from kvstore.simfs import CrashMode, SimFS


class Clock:
    """A clock the test moves."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _open(path: pathlib.Path, clock: Clock, **options: object) -> KV:
    config = Config(background=False, **options)  # type: ignore[arg-type]
    return KV.open(path / "db", config, clock=clock)


STAGES = ["memtable", "flushed", "merged", "reopened"]


def _stage(kv: KV, path: pathlib.Path, clock: Clock, stage: str, merge_process: bool = True) -> KV:
    if stage in ("flushed", "merged"):
        kv.flush()
    if stage == "merged":
        kv.compact(full=True)
    if stage == "reopened":
        kv.close()
        kv = _open(path, clock, merge_process=merge_process)
    return kv


def _everything(kv: KV) -> dict[str, object]:
    """What every read path says of the database."""
    with kv.seek(b"") as cursor:
        forward_cursor = list(cursor)
    with kv.new_tx() as tx:
        in_tx = list(tx.scan())
        tx_gets = {k: tx.get(k) for k in (b"a", b"b", b"c", b"d")}
    return {
        "gets": {k: kv.get(k) for k in (b"a", b"b", b"c", b"d")},
        "scan": list(kv.scan()),
        "reverse": list(kv.scan(reverse=True))[::-1],
        "cursor": forward_cursor,
        "tx_scan": in_tx,
        "tx_gets": tx_gets,
    }


def _expect(kv: KV, live: dict[bytes, bytes]) -> None:
    found = _everything(kv)
    rows = sorted(live.items())
    assert found["gets"] == {k: live.get(k) for k in (b"a", b"b", b"c", b"d")}
    assert found["tx_gets"] == found["gets"]
    assert found["scan"] == rows and found["reverse"] == rows and found["cursor"] == rows
    assert found["tx_scan"] == rows


@pytest.mark.parametrize("merge_process", [True, False], ids=["helper", "in-process"])
@pytest.mark.parametrize("stage", STAGES)
def test_a_key_reads_until_its_expiry_and_is_absent_from_that_instant(tmp_path: pathlib.Path, stage: str,
                                                                       merge_process: bool) -> None:
    clock = Clock()
    kv = _open(tmp_path, clock, merge_process=merge_process)
    kv.set(b"a", b"old a")
    kv.flush()  # an older, live version of a in a table below
    kv.set(b"a", b"new a", ttl=10)
    kv.set(b"b", b"b forever")
    kv.set(b"c", b"c", ttl=20.5)
    kv = _stage(kv, tmp_path, clock, stage, merge_process)
    _expect(kv, {b"a": b"new a", b"b": b"b forever", b"c": b"c"})
    assert kv.ttl(b"a") == 10 and kv.ttl(b"c") == 20.5 and kv.ttl(b"b") is None and kv.ttl(b"d") is None
    clock.now = 1009.999
    _expect(kv, {b"a": b"new a", b"b": b"b forever", b"c": b"c"})
    assert kv.ttl(b"a") == pytest.approx(0.001)
    clock.now = 1010.0  # a's expiry: absent from this instant, and old a stays hidden
    _expect(kv, {b"b": b"b forever", b"c": b"c"})
    assert kv.ttl(b"a") is None
    clock.now = 1020.5
    _expect(kv, {b"b": b"b forever"})
    kv = _stage(kv, tmp_path, clock, "merged")
    _expect(kv, {b"b": b"b forever"})
    kv = _stage(kv, tmp_path, clock, "reopened", merge_process)
    _expect(kv, {b"b": b"b forever"})
    assert kv.check() == []
    kv.close()


def test_a_write_after_an_expiry_reads_and_a_set_without_ttl_lasts(tmp_path: pathlib.Path) -> None:
    clock = Clock()
    with _open(tmp_path, clock) as kv:
        kv.set(b"a", b"1", ttl=5)
        clock.now += 6
        assert kv.get(b"a") is None
        kv.set(b"a", b"2")
        assert kv.get(b"a") == b"2" and kv.ttl(b"a") is None
        kv.set(b"a", b"3", ttl=5)
        kv.set(b"a", b"4")  # a plain set removes the expiry
        clock.now += 100
        assert kv.get(b"a") == b"4"
        kv.set(b"b", b"1", ttl=5)
        kv.set(b"b", b"2", ttl=50)  # a new ttl replaces the old one
        clock.now += 10
        assert kv.get(b"b") == b"2" and kv.ttl(b"b") == 40


def test_delete_of_an_expired_key_reports_it_absent(tmp_path: pathlib.Path) -> None:
    clock = Clock()
    with _open(tmp_path, clock) as kv:
        kv.set(b"a", b"1", ttl=5)
        assert kv.delete(b"a") is True
        kv.set(b"a", b"1", ttl=5)
        clock.now += 5
        assert kv.delete(b"a") is False
        tx = kv.new_tx()
        kv.set(b"b", b"1", ttl=5)
        assert tx.delete(b"b") is False  # not in its snapshot
        tx.abort()
        assert kv.get(b"b") == b"1"


def test_a_transaction_ttl_counts_from_its_commit(tmp_path: pathlib.Path) -> None:
    clock = Clock()
    with _open(tmp_path, clock) as kv:
        tx = kv.new_tx()
        tx.set(b"a", b"1", ttl=10)
        tx.set(b"b", b"2")
        clock.now += 100  # the ttl has not started: the key lives in the transaction
        assert tx.get(b"a") == b"1" and tx.ttl(b"a") == 10 and tx.ttl(b"b") is None
        assert list(tx.scan()) == [(b"a", b"1"), (b"b", b"2")]
        assert list(tx.scan(reverse=True)) == [(b"b", b"2"), (b"a", b"1")]
        with tx.seek(b"a") as cursor:
            assert cursor.value == b"1"
        tx.commit()
        assert kv.ttl(b"a") == 10  # from the commit at 1100
        clock.now += 9.5
        assert kv.get(b"a") == b"1"
        clock.now += 0.5
        assert kv.get(b"a") is None and kv.get(b"b") == b"2"


def test_a_scan_already_under_way_shows_a_value_set_with_a_ttl_when_it_reaches_it(tmp_path: pathlib.Path) -> None:
    clock = Clock()
    with _open(tmp_path, clock) as kv:
        kv.set(b"a", b"1")
        with kv.new_tx() as tx:
            tx.set(b"c", b"3")
            rows = tx.scan()
            assert next(rows) == (b"a", b"1")
            tx.set(b"d", b"4", ttl=5)
            assert list(rows) == [(b"c", b"3"), (b"d", b"4")] and all(type(v) is bytes for _, v in tx.scan())


def test_a_backup_carries_expiries(tmp_path: pathlib.Path) -> None:
    clock = Clock()
    with _open(tmp_path, clock) as kv:
        kv.set(b"a", b"1", ttl=5)
        kv.flush()
        kv.set(b"b", b"2", ttl=50)
        kv.set(b"c", b"3")
        kv.backup(tmp_path / "copy")
    with KV.open(tmp_path / "copy", Config(background=False), clock=clock) as copy:
        assert copy.ttl(b"a") == 5 and copy.ttl(b"b") == 50 and copy.ttl(b"c") is None
        clock.now += 5
        assert list(copy.scan()) == [(b"b", b"2"), (b"c", b"3")]
        assert copy.check() == []


def test_a_transaction_reads_expiry_by_the_clock_at_each_read(tmp_path: pathlib.Path) -> None:
    """Its snapshot decides which versions it sees; the clock at each read decides whether the version it
    sees has expired.  A key that expires under an open transaction reads absent from then on, yet its
    read never causes a conflict: an expiry is not a write."""
    clock = Clock()
    with _open(tmp_path, clock) as kv:
        kv.set(b"a", b"1", ttl=10)
        kv.set(b"b", b"2", ttl=10)
        tx = kv.new_tx()
        assert tx.get(b"a") == b"1"
        assert list(tx.scan()) == [(b"a", b"1"), (b"b", b"2")]
        clock.now += 10
        assert tx.get(b"a") is None and tx.ttl(b"b") is None
        assert list(tx.scan()) == []
        tx.set(b"c", b"3")
        tx.commit()  # no ConflictError: nothing was written over what it read
        assert kv.get(b"c") == b"3"


def test_an_expiry_is_not_a_write_for_conflicts_but_a_ttl_set_is(tmp_path: pathlib.Path) -> None:
    clock = Clock()
    with _open(tmp_path, clock) as kv:
        kv.set(b"a", b"1", ttl=10)
        tx = kv.new_tx()
        assert tx.get(b"a") == b"1"
        clock.now += 20
        tx.set(b"x", b"1")
        tx.commit()
        tx = kv.new_tx()
        assert tx.get(b"k") is None
        kv.set(b"k", b"v", ttl=1)  # a write, with a ttl or not
        tx.set(b"y", b"1")
        with pytest.raises(ConflictError):
            tx.commit()


def test_merges_drop_expired_entries_and_what_they_shadow_and_count_them(tmp_path: pathlib.Path) -> None:
    clock = Clock()
    with _open(tmp_path, clock) as kv:
        for i in range(100):
            kv.set(b"k%03d" % i, b"old")
        kv.flush()
        for i in range(100):
            kv.set(b"k%03d" % i, b"new", ttl=10 if i % 2 else 1000)
        kv.flush()
        assert kv.stats().expired == 0
        assert sum(t.expiring for t in kv.stats().tables) == 100
        clock.now += 10
        kv.compact(full=True)
        stats = kv.stats()
        assert stats.expired == 50
        (table,) = stats.tables
        assert table.entries == 50 and table.expiring == 50 and table.deletes == 0
        assert [k for k, _ in kv.scan()] == [b"k%03d" % i for i in range(0, 100, 2)]
        clock.now += 1000
        kv.compact(full=True)  # one table, holding expired entries: merged alone
        assert kv.stats().tables == () and kv.stats().expired == 100
        assert list(kv.scan()) == []


def test_a_flush_drops_what_expired_in_the_memtable(tmp_path: pathlib.Path) -> None:
    clock = Clock()
    with _open(tmp_path, clock) as kv:
        kv.set(b"a", b"1", ttl=5)
        kv.set(b"b", b"2", ttl=50)
        clock.now += 5
        kv.flush()
        stats = kv.stats()
        assert stats.expired == 1 and stats.tables[0].entries == 1 and stats.tables[0].expiring == 1


def test_a_snapshot_older_than_an_expired_version_still_reads_the_version_before(tmp_path: pathlib.Path) -> None:
    """Expiry hides a version from every reader, but a snapshot taken before an expiring version was
    written reads the older version it saw, before and after a merge."""
    clock = Clock()
    with _open(tmp_path, clock) as kv:
        kv.set(b"a", b"old")
        tx = kv.new_tx()
        kv.set(b"a", b"new", ttl=5)
        clock.now += 5
        kv.flush()
        kv.compact(full=True)
        assert kv.get(b"a") is None
        assert tx.get(b"a") == b"old"
        tx.abort()
        kv.compact(full=True)
        assert kv.get(b"a") is None and kv.stats().tables == ()


def test_the_clock_never_goes_back(tmp_path: pathlib.Path) -> None:
    clock = Clock()
    with _open(tmp_path, clock) as kv:
        kv.set(b"a", b"1", ttl=5)
        clock.now += 5
        assert kv.get(b"a") is None
        clock.now -= 100  # a clock set back: what expired stays expired
        assert kv.get(b"a") is None and list(kv.scan()) == []
        kv.set(b"b", b"1", ttl=5)
        assert kv.ttl(b"b") == 5  # counted from the highest reading, 1005


@pytest.mark.parametrize("ttl, error", [
    (0, ValueError), (-1, ValueError), (-0.5, ValueError), (math.inf, ValueError), (math.nan, ValueError),
    (10**400, ValueError), ("5", TypeError), (True, TypeError), (b"1", TypeError),
    ([5], TypeError),
])
def test_bad_ttl_raises_naming_it_and_writes_nothing(tmp_path: pathlib.Path, ttl: object,
                                                       error: type[Exception]) -> None:
    clock = Clock(1e300)
    with _open(tmp_path, clock) as kv:
        seq = kv.stats().sequence
        with pytest.raises(error, match="ttl"):
            kv.set(b"a", b"1", ttl=ttl)  # type: ignore[arg-type]
        with kv.new_tx() as tx:
            with pytest.raises(error, match="ttl"):
                tx.set(b"a", b"1", ttl=ttl)  # type: ignore[arg-type]
            assert tx.get(b"a") is None
        assert kv.get(b"a") is None and kv.stats().sequence == seq


def test_a_ttl_past_the_largest_time_raises_and_writes_nothing(tmp_path: pathlib.Path) -> None:
    clock = Clock(1e307)
    with _open(tmp_path, clock) as kv:
        with pytest.raises(ValueError, match="ttl"):
            kv.set(b"a", b"1", ttl=1.79e308)
        tx = kv.new_tx()
        tx.set(b"a", b"1", ttl=1.79e308)  # valid alone: the expiry is taken at the commit
        with pytest.raises(ValueError, match="ttl"):
            tx.commit()
        assert kv.get(b"a") is None and kv.stats().sequence == 0


def test_a_clock_that_is_not_callable_or_gives_no_number_is_refused(tmp_path: pathlib.Path) -> None:
    with pytest.raises(TypeError, match="clock"):
        KV.open(tmp_path / "db", Config(background=False), clock=5)  # type: ignore[arg-type]
    with KV.open(tmp_path / "db", Config(background=False), clock=lambda: "noon") as kv:  # type: ignore[arg-type,return-value]
        with pytest.raises(TypeError, match="clock"):
            kv.set(b"a", b"1", ttl=5)
        assert kv.get(b"a") is None


def test_ttl_on_a_read_only_or_closed_kv(tmp_path: pathlib.Path) -> None:
    clock = Clock()
    with _open(tmp_path, clock) as kv:
        kv.set(b"a", b"1", ttl=5)
    with KV.open(tmp_path / "db", Config(read_only=True), clock=clock) as kv:
        assert kv.ttl(b"a") == 5 and kv.get(b"a") == b"1"
        with pytest.raises(ReadOnlyError):
            kv.set(b"b", b"1", ttl=5)
        clock.now += 5
        assert kv.get(b"a") is None
    with pytest.raises(Exception, match="closed"):
        kv.ttl(b"a")


def test_expiring_values_survive_a_crash_once_acknowledged(tmp_path: pathlib.Path) -> None:
    clock = Clock()
    fs = SimFS()
    path = "/db"
    kv = KV.open(path, Config(background=False, sync=True), fs=fs, clock=clock)
    kv.set(b"a", b"1", ttl=50)
    kv.set(b"b", b"2", ttl=5)
    image = fs.crash_image(CrashMode.DROP)
    kv = KV.open(path, Config(background=False, sync=True), fs=image, clock=clock)
    assert kv.get(b"a") == b"1" and kv.ttl(b"a") == 50 and kv.get(b"b") == b"2"
    clock.now += 5
    assert kv.get(b"b") is None and [k for k, _ in kv.scan()] == [b"a"]
    kv.close()


def test_reads_return_plain_bytes(tmp_path: pathlib.Path) -> None:
    clock = Clock()
    with _open(tmp_path, clock) as kv:
        kv.set(b"a", b"1", ttl=5)
        assert type(kv.get(b"a")) is bytes
        kv.flush()
        assert type(kv.get(b"a")) is bytes
        assert all(type(v) is bytes for _, v in kv.scan())
        with kv.new_tx() as tx:
            tx.set(b"b", b"2", ttl=5)
            assert type(tx.get(b"b")) is bytes and all(type(v) is bytes for _, v in tx.scan())


def test_a_table_whose_blocks_hold_expiring_entries_its_properties_do_not_count_is_corrupt(
        tmp_path: pathlib.Path) -> None:
    """Reads look at expiries only in tables whose properties count expiring entries: a table that says
    none but holds some (damage under intact checksums) must not hand out the stored form as a value."""
    clock = Clock()
    with _open(tmp_path, clock) as kv:
        kv.set(b"a", b"live", ttl=100)
        kv.flush()
        (table,) = kv._versions.tables
        table.reader.expiring = 0  # as a table whose properties said so would read
        with pytest.raises(CorruptionError, match="do not count"):
            list(kv.scan())
