"""``KV.backup``: a consistent copy from one snapshot that opens as a database (DESIGN.md, "Backup")."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from kvstore import KV, ClosedError, Config, CorruptionError
from kvstore.fs import OSFileSystem
from kvstore.metadata import MetaStore

CONFIG = Config(background=False, sync=False, memtable_size=4096, block_size=256)


def _fill(kv: KV, n: int, prefix: bytes = b"k") -> dict[bytes, bytes]:
    model = {}
    for i in range(n):
        key, value = prefix + b"%05d" % i, b"v%d" % i * 3
        kv.set(key, value)
        model[key] = value
    return model


def test_backup_opens_with_the_same_pairs_and_links_tables_under_their_numbers(tmp_path: Path) -> None:
    with KV.open(tmp_path / "db", CONFIG) as kv:
        model = _fill(kv, 400)
        kv.delete(b"k00007")
        del model[b"k00007"]
        kv.set(b"\x00binary\xff", b"")
        model[b"\x00binary\xff"] = b""
        source_tables = [t.name for t in kv.stats().tables]
        assert source_tables and kv.stats().memtable_entries > 0
        done = kv.backup(tmp_path / "copy")
    assert [how for _, how in done] == ["written"] + ["linked"] * len(source_tables)
    assert [name for name, _ in done][1:] == source_tables
    for name in source_tables:
        assert os.stat(tmp_path / "copy" / name).st_ino == os.stat(tmp_path / "db" / name).st_ino
    with KV.open(tmp_path / "copy", Config(read_only=True)) as copy:
        assert dict(copy.scan()) == model
        assert copy.check() == []
        assert [t.name for t in copy.stats().tables] == [name for name, _ in done]


def test_backup_meta_is_written_last_and_names_only_the_copy(tmp_path: Path) -> None:
    with KV.open(tmp_path / "db", CONFIG) as kv:
        _fill(kv, 300)
        seq = kv.stats().sequence
        done = kv.backup(tmp_path / "copy")
    store = MetaStore(OSFileSystem(), str(tmp_path / "copy"))
    meta = store.load()
    assert meta is not None and meta.version == 1 and meta.last_sequence == seq
    assert [f"{n:06d}.sst" for n in meta.tables] == [name for name, _ in done]
    assert meta.next_file > meta.log_number > max(meta.tables)
    assert sorted(os.listdir(tmp_path / "copy")) == sorted(["meta0", *(name for name, _ in done)])


def test_backup_interrupted_before_its_meta_does_not_open_as_a_database(tmp_path: Path) -> None:
    with KV.open(tmp_path / "db", CONFIG) as kv:
        _fill(kv, 300)
        kv.backup(tmp_path / "copy")
    os.unlink(tmp_path / "copy" / "meta0")  # what a crash before the meta write leaves
    with pytest.raises(CorruptionError, match="no meta slot"):
        KV.open(tmp_path / "copy", Config(read_only=True))


def test_backup_copies_tables_when_linking_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_links(self: OSFileSystem, src: str, dst: str) -> None:
        raise OSError(18, "Invalid cross-device link")

    with KV.open(tmp_path / "db", CONFIG) as kv:
        model = _fill(kv, 300)
        monkeypatch.setattr(OSFileSystem, "link", no_links)
        done = kv.backup(tmp_path / "copy")
    assert {how for _, how in done[1:]} == {"copied"}
    for name, _ in done[1:]:
        assert (tmp_path / "copy" / name).read_bytes() == (tmp_path / "db" / name).read_bytes()
        assert os.stat(tmp_path / "copy" / name).st_ino != os.stat(tmp_path / "db" / name).st_ino
    with KV.open(tmp_path / "copy", Config(read_only=True)) as copy:
        assert dict(copy.scan()) == model


def test_backup_keeps_deletes_that_hide_older_tables(tmp_path: Path) -> None:
    with KV.open(tmp_path / "db", CONFIG) as kv:
        _fill(kv, 300)
        kv.flush()
        kv.delete(b"k00001")
        kv.set(b"k00002", b"new")
        kv.backup(tmp_path / "copy")
    with KV.open(tmp_path / "copy", Config(read_only=True)) as copy:
        assert copy.get(b"k00001") is None
        assert copy.get(b"k00002") == b"new"
        assert copy.stats().tables[0].deletes == 1


def test_backup_of_an_empty_database_opens_empty_and_accepts_writes(tmp_path: Path) -> None:
    with KV.open(tmp_path / "db", CONFIG) as kv:
        assert kv.backup(tmp_path / "copy") == []
    with KV.open(tmp_path / "copy", CONFIG) as copy:
        assert list(copy.scan()) == []
        copy.set(b"a", b"1")
    with KV.open(tmp_path / "copy", CONFIG) as copy:
        assert copy.get(b"a") == b"1"


def test_backup_opened_writable_goes_on_independently_of_the_source(tmp_path: Path) -> None:
    with KV.open(tmp_path / "db", CONFIG) as kv:
        model = _fill(kv, 300)
        kv.backup(tmp_path / "copy")
        kv.compact(full=True)  # the source drops the tables the copy links
        kv.set(b"source-only", b"1")
    with KV.open(tmp_path / "copy", CONFIG) as copy:
        copy.set(b"copy-only", b"2")
        copy.compact(full=True)
        assert dict(copy.scan()) == {**model, b"copy-only": b"2"}
    with KV.open(tmp_path / "db", Config(read_only=True)) as kv:
        assert kv.get(b"copy-only") is None and kv.get(b"source-only") == b"1"
        assert kv.check() == []


@pytest.mark.parametrize("existing", ["file", "nonempty"], ids=["a-file", "a-non-empty-directory"])
def test_backup_refuses_a_destination_that_is_not_empty(tmp_path: Path, existing: str) -> None:
    dest = tmp_path / "copy"
    if existing == "file":
        dest.write_bytes(b"x")
    else:
        dest.mkdir()
        (dest / "keep").write_bytes(b"x")
    with KV.open(tmp_path / "db", CONFIG) as kv:
        kv.set(b"a", b"1")
        with pytest.raises(FileExistsError):
            kv.backup(dest)
        kv.set(b"b", b"2")  # the source is unaffected
    assert (dest.read_bytes() == b"x") if existing == "file" else os.listdir(dest) == ["keep"]


def test_backup_into_an_empty_directory_and_reports_progress(tmp_path: Path) -> None:
    (tmp_path / "copy").mkdir()
    calls: list[tuple[int, int]] = []
    with KV.open(tmp_path / "db", CONFIG) as kv:
        _fill(kv, 300)
        tables = len(kv.stats().tables)
        kv.backup(tmp_path / "copy", progress=lambda done, total: calls.append((done, total)))
    assert calls == [(i, tables + 1) for i in range(1, tables + 2)]


def test_backup_of_a_read_only_kv_includes_the_replayed_log(tmp_path: Path) -> None:
    # a process killed before close() leaves its last commits only in the log; a read-only open replays them
    script = textwrap.dedent("""
        import os, sys
        from kvstore import KV, Config
        kv = KV.open(sys.argv[1], Config(background=False))
        for i in range(50):
            kv.set(b"k%03d" % i, b"v%d" % i)
        os._exit(0)
    """)
    root = Path(__file__).resolve().parent.parent
    subprocess.run([sys.executable, "-c", script, str(tmp_path / "db")], check=True,
                   env={**os.environ, "PYTHONPATH": str(root)})
    with KV.open(tmp_path / "db", Config(read_only=True)) as ro:
        assert ro.stats().tables == () and ro.stats().memtable_entries == 50
        done = ro.backup(tmp_path / "copy")
    assert [how for _, how in done] == ["written"]
    with KV.open(tmp_path / "copy", Config(read_only=True)) as copy:
        assert dict(copy.scan()) == {b"k%03d" % i: b"v%d" % i for i in range(50)}


def test_backup_after_close_raises_closed_error(tmp_path: Path) -> None:
    kv = KV.open(tmp_path / "db", CONFIG)
    kv.close()
    with pytest.raises(ClosedError):
        kv.backup(tmp_path / "copy")
    assert not (tmp_path / "copy").exists()


def test_backup_while_transactions_commit_in_another_thread_is_one_snapshot(tmp_path: Path) -> None:
    # Each transaction moves one unit between two of ten accounts and bumps a counter: a consistent copy
    # holds exactly the total, a counter equal to the number of moves in it, and every move committed
    # before backup() began.
    accounts = [b"acct%d" % i for i in range(10)]
    stop = threading.Event()
    committed = [0]
    errors: list[BaseException] = []

    def writer(kv: KV) -> None:
        try:
            i = 0
            while not stop.is_set():
                with kv.new_tx() as tx:
                    src, dst = accounts[i % 10], accounts[(i * 7 + 3) % 10]
                    if src != dst:
                        tx.set(src, b"%d" % (int(tx.get(src) or b"0") - 1))
                        tx.set(dst, b"%d" % (int(tx.get(dst) or b"0") + 1))
                    tx.set(b"moves", b"%d" % (i + 1))
                    tx.set(b"pad%06d" % i, b"x" * 40)  # fills memtables so that flushes and merges run
                i += 1
                committed[0] = i
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread, which fails the test
            errors.append(exc)

    with KV.open(tmp_path / "db", CONFIG) as kv:
        for a in accounts:
            kv.set(a, b"100")
        thread = threading.Thread(target=writer, args=(kv,))
        thread.start()
        copies = []
        try:
            for n in range(6):
                while committed[0] < 50 * (n + 1) and thread.is_alive():
                    stop.wait(0.001)
                before = committed[0]
                kv.backup(tmp_path / f"copy{n}")
                copies.append((tmp_path / f"copy{n}", before))
        finally:
            stop.set()
            thread.join()
        assert not errors, errors
    for path, before in copies:
        with KV.open(path, Config(read_only=True)) as copy:
            assert copy.check() == []
            moves = int(copy.get(b"moves") or b"0")
            assert moves >= before
            assert sum(int(copy.get(a) or b"0") for a in accounts) == 1000
            assert len(list(copy.scan(prefix=b"pad"))) == moves
