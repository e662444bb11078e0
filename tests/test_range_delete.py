"""Range deletes: ``kv.delete_range`` and ``tx.delete_range`` (docs/api.md; DESIGN.md, "Range tombstones").

One range tombstone hides every older version of every key in ``[start, end)`` from every read, in the
memtable, in tables (a newer table's tombstone over an older table's key, whatever that table's bloom
filter says), after merges and after a reopen or a crash; writes after it show; snapshots taken before it
still read what it covers.  Merges drop what it covers and, at the bottom, the tombstone itself.  Reads
stay cheap: a scan past a deleted range reads a bounded number of blocks however many keys it covered.
Conflicts: a range delete writes its whole range.
"""

from __future__ import annotations

import pathlib
from collections.abc import Iterator

import pytest

from kvstore import KV, Config, ConflictError, KeyOrValueTooLargeError, ReadOnlyError, sorted_file
from kvstore.simfs import CrashMode, SimFS


def _key(i: int) -> bytes:
    return b"key%06d" % i


def _open(path: pathlib.Path, **options: object) -> KV:
    config = Config(background=False, **options)  # type: ignore[arg-type]
    return KV.open(path / "db", config)


def _fill(kv: KV, n: int, value: bytes = b"v") -> None:
    for start in range(0, n, 500):
        with kv.new_tx() as tx:
            for i in range(start, min(n, start + 500)):
                tx.set(_key(i), value + b"%d" % i)


def _keys(rows: Iterator[tuple[bytes, bytes]]) -> list[bytes]:
    return [k for k, _ in rows]


STAGES = ["memtable", "flushed", "merged", "reopened"]


def _stage(kv: KV, path: pathlib.Path, stage: str, merge_process: bool = True) -> KV:
    if stage in ("flushed", "merged"):
        kv.flush()
    if stage == "merged":
        kv.compact(full=True)
    if stage == "reopened":
        kv.close()
        kv = _open(path, merge_process=merge_process)
    return kv


@pytest.mark.parametrize("merge_process", [True, False], ids=["helper", "in-process"])
@pytest.mark.parametrize("stage", STAGES)
def test_delete_range_hides_covered_keys_and_shows_later_writes(tmp_path: pathlib.Path, stage: str,
                                                                 merge_process: bool) -> None:
    kv = _open(tmp_path, merge_process=merge_process)
    _fill(kv, 100)
    kv.flush()  # the keys in a table, the tombstone newer
    kv.delete_range(_key(10), _key(20))
    kv.set(_key(15), b"again")  # after the range delete: shows
    kv = _stage(kv, tmp_path, stage, merge_process)
    try:
        expected = [_key(i) for i in range(100) if not 10 <= i < 20 or i == 15]
        assert _keys(kv.scan()) == expected
        assert _keys(kv.scan(reverse=True)) == expected[::-1]
        assert _keys(kv.scan(_key(5), _key(25))) == [k for k in expected if _key(5) <= k < _key(25)]
        assert _keys(kv.scan(_key(5), _key(25), reverse=True)) == [k for k in expected[::-1]
                                                                   if _key(5) <= k < _key(25)]
        assert kv.get(_key(9)) == b"v9" and kv.get(_key(20)) == b"v20"
        assert kv.get(_key(10)) is None and kv.get(_key(19)) is None
        assert kv.get(_key(15)) == b"again"
        with kv.seek(_key(10)) as cursor:
            assert cursor.key == _key(15)
            cursor.next()
            assert cursor.key == _key(20)
        with kv.seek_for_prev(_key(14)) as cursor:
            assert cursor.key == _key(9)
        assert kv.check() == []
    finally:
        kv.close()


def test_a_newer_tables_range_tombstone_hides_a_key_the_older_tables_filter_holds(tmp_path: pathlib.Path) -> None:
    with _open(tmp_path, bloom_bits_per_key=10) as kv:
        _fill(kv, 50)
        kv.flush()
        kv.delete_range(_key(0), _key(40))
        kv.flush()  # a table of one range tombstone and no entry, newer than the one with the keys
        tables = kv.stats().tables
        assert len(tables) == 2 and tables[0].entries == 0
        assert kv.get(_key(3)) is None and kv.get(_key(45)) == b"v45"
        assert len(list(kv.scan())) == 10


def test_a_snapshot_from_before_the_range_delete_still_reads_what_it_covers(tmp_path: pathlib.Path) -> None:
    with _open(tmp_path) as kv:
        _fill(kv, 30)
        tx = kv.new_tx()
        kv.delete_range(_key(0), _key(30))
        kv.flush()
        kv.compact(full=True)  # the snapshot keeps the covered versions and the tombstone
        assert tx.get(_key(7)) == b"v7" and len(list(tx.scan())) == 30
        assert kv.get(_key(7)) is None and list(kv.scan()) == []
        assert kv.stats().tables[0].entries == 30
        tx.abort()
        kv.compact(full=True)  # nothing sees them now: the merge drops them, and the tombstone with them
        assert kv.stats().tables == ()


def test_a_merge_above_the_bottom_keeps_the_tombstone_for_the_tables_below(tmp_path: pathlib.Path) -> None:
    with _open(tmp_path) as kv:
        _fill(kv, 200)
        kv.flush()
        kv.set(b"a", b"1")
        kv.delete_range(_key(0), _key(100))
        seq = kv.stats().sequence
        kv.flush()
        kv.set(b"b", b"2")
        kv.flush()
        assert len(kv._versions.tables) == 3  # each newer table smaller than the one below: no merge yet
        with kv._jobs.merge_lock:
            kv._jobs._merge(list(kv._versions.tables[:2]))  # the two newest, not the bottom table
        assert len(kv.stats().tables) == 2
        newest = kv._versions.tables[0].reader
        assert newest.fragments.tombstones() == [(_key(0), _key(100), seq)]
        assert kv.get(_key(50)) is None and kv.get(_key(150)) == b"v150"
        assert len(list(kv.scan())) == 102


def test_a_scan_past_a_deleted_range_reads_few_blocks_however_many_keys_it_covered(
        tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The level under the tombstone is positioned past it: the blocks read are the same for 2,000 and
    20,000 covered keys."""
    reads: list[int] = []
    block = sorted_file.TableReader.block

    def counting(self: sorted_file.TableReader, i: int) -> sorted_file.Block:
        reads.append(i)
        return block(self, i)

    monkeypatch.setattr(sorted_file.TableReader, "block", counting)
    counts = []
    for n in (2_000, 20_000):
        kv = _open(tmp_path / str(n), cache_size=0, block_size=512)
        try:
            _fill(kv, n + 10)
            kv.compact(full=True)
            kv.delete_range(_key(0), _key(n))
            reads.clear()
            assert _keys(kv.scan()) == [_key(i) for i in range(n, n + 10)]
            assert _keys(kv.scan(reverse=True)) == [_key(i) for i in range(n + 9, n - 1, -1)]
            counts.append(len(reads))
        finally:
            kv.close()
    assert counts[0] == counts[1] and counts[0] <= 8, counts


def test_a_get_reads_one_block_among_many_range_tombstones(tmp_path: pathlib.Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    with _open(tmp_path, cache_size=0) as kv:
        _fill(kv, 3000)
        kv.flush()
        for i in range(0, 3000, 3):  # 1,000 tombstones, each over one key
            kv.delete_range(_key(i), _key(i) + b"\0")
        kv.flush()
        reads: list[int] = []
        block = sorted_file.TableReader.block

        def counting(self: sorted_file.TableReader, i: int) -> sorted_file.Block:
            reads.append(i)
            return block(self, i)

        monkeypatch.setattr(sorted_file.TableReader, "block", counting)
        assert kv.get(_key(1500)) is None and kv.get(_key(1501)) == b"v1501"
        assert len(reads) == 1  # the covered key is answered by the tombstone, the other by one block
        fragments = kv._versions.tables[0].reader.fragments
        assert len(fragments) == 1000 and fragments.tombstones()[:2] == [
            (_key(0), _key(0) + b"\0", 7), (_key(3), _key(3) + b"\0", 8)]  # after the six commits of _fill


@pytest.mark.parametrize("held", [False, True], ids=["no-snapshot", "snapshot"])
def test_a_merge_drops_a_table_its_range_tombstones_hide_whole_unread(tmp_path: pathlib.Path,
                                                                     monkeypatch: pytest.MonkeyPatch,
                                                                     held: bool) -> None:
    """The properties' key range and sequences against the tombstone: a hidden table is never read (unless
    a snapshot still reads it)."""
    read: list[int] = []
    entry_chunks = sorted_file.TableReader.entry_chunks

    def counting(self: sorted_file.TableReader, size: int = 256) -> Iterator[tuple[list[bytes], list[int],
                                                                                   list[bytes | None]]]:
        read.append(self.file_number)
        return entry_chunks(self, size)

    monkeypatch.setattr(sorted_file.TableReader, "entry_chunks", counting)
    with _open(tmp_path, merge_process=False) as kv:
        _fill(kv, 100)
        kv.flush()
        hidden = kv._versions.tables[0].reader.file_number
        tx = kv.new_tx() if held else None
        kv.delete_range(_key(0), _key(1000))
        kv.set(_key(2000), b"kept")
        kv.flush()
        read.clear()
        kv.compact(full=True)
        assert (hidden in read) is held
        assert list(kv.scan()) == [(_key(2000), b"kept")]
        if tx is not None:
            assert len(list(tx.scan())) == 100
            tx.abort()


def test_empty_or_backward_ranges_write_nothing(tmp_path: pathlib.Path) -> None:
    with _open(tmp_path) as kv:
        kv.set(b"k", b"v")
        before = kv.stats()
        kv.delete_range(b"k", b"k")
        kv.delete_range(b"z", b"a")
        after = kv.stats()
        assert after.sequence == before.sequence and after.wal_bytes == before.wal_bytes
        with kv.new_tx() as tx:
            tx.delete_range(b"z", b"a")
            assert tx.get(b"k") == b"v"
        assert kv.stats().sequence == before.sequence


def test_bad_bounds_raise_naming_the_bound_and_write_nothing(tmp_path: pathlib.Path) -> None:
    with _open(tmp_path, max_key_size=8) as kv:
        seq = kv.stats().sequence
        with pytest.raises(TypeError, match="start"):
            kv.delete_range("a", b"b")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="end"):
            kv.delete_range(b"a", None)  # type: ignore[arg-type]
        with pytest.raises(KeyOrValueTooLargeError, match="end"):
            kv.delete_range(b"a", b"x" * 9)
        with kv.new_tx() as tx:
            with pytest.raises(TypeError, match="start"):
                tx.delete_range(1, b"b")  # type: ignore[arg-type]
            with pytest.raises(KeyOrValueTooLargeError, match="start"):
                tx.delete_range(b"x" * 9, b"y")
        assert kv.stats().sequence == seq
        kv.delete_range(bytearray(b"a"), memoryview(b"b"))  # bytes-like bounds are taken
        assert kv.stats().sequence == seq + 1
    with KV.open(tmp_path / "db", Config(read_only=True)) as ro, pytest.raises(ReadOnlyError):
        ro.delete_range(b"a", b"b")


@pytest.mark.parametrize("mode", [CrashMode.DROP, CrashMode.TORN])
def test_a_durable_range_delete_survives_a_crash(mode: CrashMode) -> None:
    fs = SimFS()
    kv = KV.open("/db", Config(background=False, sync=True), fs=fs)
    _fill(kv, 40)
    kv.flush()
    kv.delete_range(_key(5), _key(25))  # in the WAL only
    image = fs.crash_image(mode, seed=3)
    kv.close()
    with KV.open("/db", Config(background=False), fs=image) as again:
        assert _keys(again.scan()) == [_key(i) for i in range(40) if not 5 <= i < 25]
        assert again.check() == []


# ---------------------------------------------------------------- transactions


def test_a_transactions_range_delete_drops_its_earlier_writes_and_keeps_later_ones(tmp_path: pathlib.Path) -> None:
    with _open(tmp_path) as kv:
        _fill(kv, 10)
        with kv.new_tx() as tx:
            tx.set(_key(3), b"mine")
            tx.delete_range(_key(2), _key(6))
            assert tx.get(_key(3)) is None and tx.get(_key(4)) is None
            tx.set(_key(4), b"after")
            assert tx.get(_key(4)) == b"after"
            assert _keys(tx.scan()) == [_key(i) for i in (0, 1, 4, 6, 7, 8, 9)]
            assert _keys(tx.scan(reverse=True)) == [_key(i) for i in (9, 8, 7, 6, 4, 1, 0)]
            assert kv.get(_key(3)) == b"v3"  # nothing visible before commit
        assert kv.get(_key(3)) is None and kv.get(_key(4)) == b"after" and kv.get(_key(2)) is None
        assert len(list(kv.scan())) == 7


def test_a_transactions_scan_or_cursor_under_way_misses_the_keys_of_its_later_range_delete(
        tmp_path: pathlib.Path) -> None:
    with _open(tmp_path) as kv:
        _fill(kv, 6)
        with kv.new_tx() as tx:
            started = tx.scan()
            assert next(started)[0] == _key(0)
            unstarted = tx.scan()
            backward = tx.scan(reverse=True)
            assert next(backward)[0] == _key(5)
            cursor = tx.seek(_key(1))
            tx.delete_range(_key(2), _key(4))
            assert _keys(started) == [_key(i) for i in (1, 4, 5)]  # as documented: from its next row on
            assert _keys(unstarted) == [_key(i) for i in (0, 1, 4, 5)]
            assert _keys(backward) == [_key(i) for i in (4, 1, 0)]
            cursor.next()
            assert cursor.key == _key(4)
            cursor.prev()
            assert cursor.key == _key(1)
            assert _keys(tx.scan()) == [_key(i) for i in (0, 1, 4, 5)]
        assert _keys(kv.scan()) == [_key(i) for i in (0, 1, 4, 5)]


def test_a_range_delete_conflicts_with_a_transaction_that_read_a_key_in_it(tmp_path: pathlib.Path) -> None:
    with _open(tmp_path) as kv:
        kv.set(b"m", b"1")
        tx = kv.new_tx()
        assert tx.get(b"m") == b"1"
        tx.set(b"out", b"x")
        kv.delete_range(b"a", b"z")
        with pytest.raises(ConflictError):
            tx.commit()


@pytest.mark.parametrize(("scanned", "deleted", "clash"), [
    ((b"a", b"c"), (b"b", b"z"), True),
    ((b"a", b"b"), (b"b", b"z"), False),  # the scan's end is excluded
    ((b"p", None), (b"a", b"q"), True),
    ((b"q", None), (b"a", b"q"), False),  # the range delete's end is excluded
], ids=["overlap", "touching", "open-scan", "past-the-end"])
def test_a_range_delete_conflicts_with_a_scan_it_meets(tmp_path: pathlib.Path, scanned: tuple[bytes, bytes | None],
                                                      deleted: tuple[bytes, bytes], clash: bool) -> None:
    with _open(tmp_path) as kv:
        tx = kv.new_tx()
        list(tx.scan(*scanned))  # an empty database: the scan covered its whole range
        tx.set(b"w", b"1")
        kv.delete_range(*deleted)
        if clash:
            with pytest.raises(ConflictError):
                tx.commit()
        else:
            tx.commit()
            assert kv.get(b"w") == b"1"


def test_blind_range_deletes_never_conflict_and_are_one_tracked_write_each(tmp_path: pathlib.Path) -> None:
    with _open(tmp_path) as kv:
        _fill(kv, 100)
        one, two = kv.new_tx(), kv.new_tx()
        one.delete_range(_key(0), _key(60))
        two.delete_range(_key(40), _key(100))
        keep = kv.new_tx()  # a live transaction keeps the committed write sets
        one.commit()
        two.commit()
        assert kv.stats().tracked_writes == 2  # a range is one entry, not its 60 keys
        keep.abort()
        assert list(kv.scan()) == []


def test_a_transactions_range_delete_hides_keys_committed_after_its_snapshot(tmp_path: pathlib.Path) -> None:
    """A range delete commits at its transaction's commit, so it hides what others committed in the range
    meanwhile (it read nothing, so nothing conflicts)."""
    with _open(tmp_path) as kv:
        tx = kv.new_tx()
        tx.delete_range(b"a", b"m")
        kv.set(b"c", b"later")
        tx.commit()
        assert kv.get(b"c") is None


def test_a_backup_carries_range_tombstones_in_its_tables_and_log(tmp_path: pathlib.Path) -> None:
    with _open(tmp_path) as kv:
        _fill(kv, 40)
        kv.flush()
        held = kv.new_tx()  # the flushed tombstone stays in the table while a snapshot reads under it
        kv.delete_range(_key(0), _key(10))
        kv.flush()
        kv.delete_range(_key(30), _key(35))  # in the memtable and the log only
        kv.backup(tmp_path / "copy")
        held.abort()
    with KV.open(tmp_path / "copy", Config(read_only=True)) as copy:
        assert _keys(copy.scan()) == [_key(i) for i in range(40) if not (i < 10 or 30 <= i < 35)]
        assert copy.check() == []
