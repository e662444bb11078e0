"""The KV and KVTX API (docs/: opening, reads and writes, transactions, errors, tuning) on real directories."""

from __future__ import annotations

import errno
import gc
import math
import os
import pathlib
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import pytest

from kvstore import (
    KV,
    KVTX,
    ClosedError,
    Config,
    ConflictError,
    CorruptionError,
    Cursor,
    FailedError,
    InvalidCursorError,
    KeyOrValueTooLargeError,
    LockedError,
    ReadOnlyError,
    TxClosedError,
)
from kvstore.fs import OSFile, OSFileSystem

# sync=False: these tests are about the API, not durability (tests/test_recovery.py checks fsync)
CONFIG = Config(background=False, sync=False)
SMALL = Config(background=False, sync=False, memtable_size=2048, block_size=256)


def _open(path: str | os.PathLike[str], config: Config = CONFIG, **changes: Any) -> KV:
    return KV.open(path, attrs.evolve(config, **changes) if changes else config)


@pytest.fixture
def kv(tmp_path: pathlib.Path) -> Iterator[KV]:
    db = _open(tmp_path / "db")
    yield db
    db.close()


def _fill(db: KV, n: int, prefix: bytes = b"k", value: bytes = b"v") -> dict[bytes, bytes]:
    data = {}
    for i in range(n):
        key = prefix + b"%05d" % i
        db.set(key, value + b"%d" % i)
        data[key] = value + b"%d" % i
    return data


def _listing(path: pathlib.Path) -> dict[str, tuple[int, int, bytes]]:
    """Every file in ``path`` with its mtime, size and bytes."""
    out = {}
    for name in sorted(os.listdir(path)):
        st = os.stat(path / name)
        out[name] = (st.st_mtime_ns, st.st_size, (path / name).read_bytes())
    return out


def _numbers(path: pathlib.Path) -> set[int]:
    """The numbers of the tables and logs in ``path``."""
    return {int(m.group(1)) for m in map(re.compile(r"^(\d{6,})\.(sst|log)$").match, os.listdir(path)) if m}


def _crash_copy(db_path: pathlib.Path, dest: pathlib.Path) -> pathlib.Path:
    """What a crash now would leave on disk: a byte copy of the directory taken while the KV is open."""
    dest.mkdir()
    for name in os.listdir(db_path):
        if name != "LOCK":
            (dest / name).write_bytes((db_path / name).read_bytes())
    return dest


# ---------------------------------------------------------------- open and close


def test_open_creates_a_missing_directory(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "a" / "b" / "db"
    with _open(path) as db:
        assert db.get(b"k") is None
        db.set(b"k", b"v")
    assert path.is_dir()
    assert {"meta0", "LOCK"} <= set(os.listdir(path))


def test_open_accepts_a_str_and_a_path_like(tmp_path: pathlib.Path) -> None:
    with _open(str(tmp_path / "db")) as db:
        db.set(b"k", b"v")
    with _open(tmp_path / "db") as db:
        assert db.get(b"k") == b"v"


@pytest.mark.parametrize("exists", [False, True], ids=["no-directory", "empty-directory"])
def test_open_without_create_if_missing_raises_file_not_found(tmp_path: pathlib.Path, exists: bool) -> None:
    path = tmp_path / "db"
    if exists:
        path.mkdir()
    with pytest.raises(FileNotFoundError):
        _open(path, create_if_missing=False)
    assert path.exists() == exists
    if exists:
        assert os.listdir(path) in ([], ["LOCK"])


def test_open_without_create_if_missing_opens_an_existing_database(tmp_path: pathlib.Path) -> None:
    with _open(tmp_path / "db") as db:
        db.set(b"k", b"v")
    with _open(tmp_path / "db", create_if_missing=False) as db:
        assert db.get(b"k") == b"v"


def test_open_on_a_file_is_not_a_directory(tmp_path: pathlib.Path) -> None:
    (tmp_path / "file").write_bytes(b"x")
    with pytest.raises(NotADirectoryError):
        _open(tmp_path / "file")


def test_open_rejects_a_config_that_is_not_a_config(tmp_path: pathlib.Path) -> None:
    with pytest.raises(TypeError):
        KV.open(tmp_path / "db", {"sync": False})  # type: ignore[arg-type]


def test_kv_cannot_be_constructed_directly() -> None:
    with pytest.raises(TypeError):
        KV()


def test_data_survives_close_and_reopen(tmp_path: pathlib.Path) -> None:
    with _open(tmp_path / "db", SMALL) as db:
        data = _fill(db, 500)
        db.delete(b"k00007")
        del data[b"k00007"]
    with _open(tmp_path / "db", SMALL) as db:
        assert dict(db.scan()) == data
        assert db.check() == []


def test_close_is_idempotent_and_flushes_the_memtable(tmp_path: pathlib.Path) -> None:
    db = _open(tmp_path / "db")
    _fill(db, 10)
    assert db.stats().memtable_entries == 10
    db.close()
    db.close()
    with _open(tmp_path / "db") as again:
        stats = again.stats()
        assert stats.memtable_entries == 0  # nothing left to replay
        assert sum(t.entries for t in stats.tables) == 10


def test_context_manager_closes_on_error(tmp_path: pathlib.Path) -> None:
    with pytest.raises(RuntimeError), _open(tmp_path / "db") as db:
        db.set(b"k", b"v")
        raise RuntimeError("boom")
    with pytest.raises(ClosedError):
        db.get(b"k")
    with _open(tmp_path / "db") as again:
        assert again.get(b"k") == b"v"


CALLS: list[tuple[str, Callable[[KV], object]]] = [
    ("get", lambda db: db.get(b"k")),
    ("set", lambda db: db.set(b"k", b"v")),
    ("delete", lambda db: db.delete(b"k")),
    ("seek", lambda db: db.seek(b"k")),
    ("seek_for_prev", lambda db: db.seek_for_prev(b"k")),
    ("scan", lambda db: list(db.scan())),
    ("new_tx", lambda db: db.new_tx()),
    ("transact", lambda db: db.transact(lambda tx: tx.get(b"k"))),
    ("flush", lambda db: db.flush()),
    ("compact", lambda db: db.compact()),
    ("compact-full", lambda db: db.compact(full=True)),
    ("stats", lambda db: db.stats()),
    ("check", lambda db: db.check()),
]


@pytest.mark.parametrize("call", [c for _, c in CALLS], ids=[n for n, _ in CALLS])
def test_every_call_after_close_raises_closed_error(tmp_path: pathlib.Path, call: Callable[[KV], object]) -> None:
    db = _open(tmp_path / "db")
    db.set(b"k", b"v")
    db.close()
    with pytest.raises(ClosedError):
        call(db)


def _cursor_next(db: KV) -> Callable[[], object]:
    return db.seek(b"a").next


def _cursor_prev(db: KV) -> Callable[[], object]:
    return db.seek(b"b").prev


def _cursor_key(db: KV) -> Callable[[], object]:
    cursor = db.seek(b"a")
    return lambda: cursor.key


def _cursor_value(db: KV) -> Callable[[], object]:
    cursor = db.seek(b"a")
    return lambda: cursor.value


def _cursor_iter(db: KV) -> Callable[[], object]:
    cursor = db.seek(b"a")
    return lambda: list(cursor)


def _scan_next(db: KV) -> Callable[[], object]:
    scan = db.scan()
    return lambda: next(scan)


def _scan_started(db: KV) -> Callable[[], object]:
    scan = db.scan()
    next(scan)
    return lambda: next(scan)


def _tx_call(name: str) -> Callable[[KV], Callable[[], object]]:
    def use(db: KV) -> Callable[[], object]:
        tx = db.new_tx()
        tx.set(b"z", b"pending")
        calls: dict[str, Callable[[], object]] = {
            "get": lambda: tx.get(b"a"),
            "set": lambda: tx.set(b"a", b"x"),
            "delete": lambda: tx.delete(b"a"),
            "scan": lambda: list(tx.scan()),
            "commit": tx.commit,
            "cursor-next": tx.seek(b"a").next,
        }
        return calls[name]

    return use


def _tx_scan_started(db: KV) -> Callable[[], object]:
    tx = db.new_tx()
    scan = tx.scan()
    next(scan)
    return lambda: (tx, next(scan))


USES: list[tuple[str, Callable[[KV], Callable[[], object]]]] = [
    ("cursor-next", _cursor_next),
    ("cursor-prev", _cursor_prev),
    ("cursor-key", _cursor_key),
    ("cursor-value", _cursor_value),
    ("cursor-iter", _cursor_iter),
    ("scan-next", _scan_next),
    ("scan-started", _scan_started),
    *((f"tx-{name}", _tx_call(name)) for name in ("get", "set", "delete", "scan", "commit", "cursor-next")),
    ("tx-scan-started", _tx_scan_started),
]


@pytest.mark.parametrize("use", [u for _, u in USES], ids=[n for n, _ in USES])
def test_cursor_scan_or_tx_open_at_close_raises_closed_error_on_next_use(
        tmp_path: pathlib.Path, use: Callable[[KV], Callable[[], object]]) -> None:
    db = _open(tmp_path / "db")
    for key in (b"a", b"b", b"c"):
        db.set(key, key)
    step = use(db)
    db.close()
    with pytest.raises(ClosedError):
        step()


# ---------------------------------------------------------------- read-only


def test_read_only_on_a_missing_database_raises_file_not_found(tmp_path: pathlib.Path) -> None:
    with pytest.raises(FileNotFoundError):
        _open(tmp_path / "db", read_only=True)
    assert not (tmp_path / "db").exists()


def test_read_only_writes_nothing_and_sees_unflushed_commits(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "db"
    db = _open(path, SMALL)
    data = _fill(db, 300)
    crashed = _crash_copy(path, tmp_path / "crashed")  # with a WAL to replay and orphan-free
    db.close()
    (crashed / "LOCK").write_bytes(b"")
    (crashed / "meta0.tmp").write_bytes(b"left over")  # a writable open would delete this
    before = _listing(crashed)
    with _open(crashed, SMALL, read_only=True) as ro:
        assert dict(ro.scan()) == data
        assert ro.get(b"k00299") == data[b"k00299"]
        assert ro.check() == []
        ro.stats()
    assert _listing(crashed) == before


def _set_and_commit(tx: KVTX) -> str:
    tx.set(b"k", b"v")
    tx.commit()
    return "ok"


WRITES: list[tuple[str, Callable[[KV], object]]] = [
    ("set", lambda db: db.set(b"k", b"v")),
    ("delete", lambda db: db.delete(b"a")),
    ("delete-absent", lambda db: db.delete(b"absent")),
    ("flush", lambda db: db.flush()),
    ("compact", lambda db: db.compact()),
    ("compact-full", lambda db: db.compact(full=True)),
    ("tx-commit", lambda db: _set_and_commit(db.new_tx())),
    ("transact", lambda db: db.transact(lambda tx: tx.set(b"k", b"v"))),
]


@pytest.mark.parametrize("write", [w for _, w in WRITES], ids=[n for n, _ in WRITES])
def test_read_only_writes_raise_read_only_error(tmp_path: pathlib.Path, write: Callable[[KV], object]) -> None:
    with _open(tmp_path / "db") as db:
        db.set(b"a", b"1")
    before = _listing(tmp_path / "db")
    with _open(tmp_path / "db", read_only=True) as ro:
        with pytest.raises(ReadOnlyError):
            write(ro)
        assert ro.get(b"a") == b"1" and ro.get(b"k") is None
    assert _listing(tmp_path / "db") == before


def test_read_only_error_is_a_permission_error() -> None:
    assert issubclass(ReadOnlyError, PermissionError)


def test_read_only_does_not_truncate_a_torn_tail(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "db"
    db = _open(path)
    db.set(b"a", b"1")
    db.set(b"b", b"2")
    crashed = _crash_copy(path, tmp_path / "crashed")
    db.close()
    (log,) = [n for n in os.listdir(crashed) if n.endswith(".log")]
    with open(crashed / log, "ab") as f:
        f.write(b"\x07torn frame")
    before = _listing(crashed)
    with _open(crashed, read_only=True) as ro:
        assert dict(ro.scan()) == {b"a": b"1", b"b": b"2"}
        assert any("torn" in note for note in ro.stats().recovery)
    assert _listing(crashed) == before
    with _open(crashed) as rw:  # a writable open cuts it
        assert dict(rw.scan()) == {b"a": b"1", b"b": b"2"}
        assert b"torn frame" not in (crashed / log).read_bytes()


def test_read_only_opens_share_but_exclude_a_writer(tmp_path: pathlib.Path) -> None:
    with _open(tmp_path / "db") as db:
        db.set(b"k", b"v")
    with _open(tmp_path / "db", read_only=True) as r1, _open(tmp_path / "db", read_only=True) as r2:
        assert r1.get(b"k") == r2.get(b"k") == b"v"
        with pytest.raises(LockedError):
            _open(tmp_path / "db")
    with _open(tmp_path / "db") as db, pytest.raises(LockedError):
        _open(tmp_path / "db", read_only=True)


# ---------------------------------------------------------------- locking


def test_second_open_in_process_raises_locked_error(tmp_path: pathlib.Path) -> None:
    db = _open(tmp_path / "db")
    try:
        with pytest.raises(LockedError):
            _open(tmp_path / "db")
        with pytest.raises(LockedError):
            _open(str(tmp_path / "db") + "/")  # the same directory by another spelling
        db.set(b"k", b"v")
    finally:
        db.close()
    with _open(tmp_path / "db") as again:  # the lock went with close()
        assert again.get(b"k") == b"v"


def test_locked_error_is_an_os_error(tmp_path: pathlib.Path) -> None:
    with _open(tmp_path / "db"), pytest.raises(OSError):
        _open(tmp_path / "db")


CHILD = textwrap.dedent("""
    import sys
    from kvstore import KV, Config, LockedError
    try:
        kv = KV.open(sys.argv[1], Config(background=False))
    except LockedError:
        print("locked", flush=True)
        sys.exit(0)
    print("opened", flush=True)
    sys.stdin.readline()  # hold the lock until told, then die without closing
    import os
    os._exit(0)
""")


def _child(path: pathlib.Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", CHILD, str(path)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)


def test_open_from_another_process_raises_locked_error(tmp_path: pathlib.Path) -> None:
    with _open(tmp_path / "db"):
        child = _child(tmp_path / "db")
        out, _ = child.communicate("\n", timeout=30)
        assert out.strip() == "locked"


def test_lock_dies_with_its_process(tmp_path: pathlib.Path) -> None:
    with _open(tmp_path / "db") as db:
        db.set(b"k", b"v")
    child = _child(tmp_path / "db")
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "opened"
        with pytest.raises(LockedError):
            _open(tmp_path / "db")
    finally:
        child.communicate("\n", timeout=30)
    with _open(tmp_path / "db") as db:
        assert db.get(b"k") == b"v"


# ---------------------------------------------------------------- keys and values


BAD_TYPES: list[tuple[str, object]] = [("str", "k"), ("int", 1), ("none", None), ("list", [1]), ("float", 1.0)]


@pytest.mark.parametrize("bad", [b for _, b in BAD_TYPES], ids=[n for n, _ in BAD_TYPES])
def test_keys_and_values_that_are_not_bytes_raise_type_error(kv: KV, bad: Any) -> None:
    kv.set(b"k", b"v")
    calls: list[Callable[[], object]] = [
        lambda: kv.get(bad), lambda: kv.set(bad, b"v"), lambda: kv.set(b"k", bad), lambda: kv.delete(bad),
        lambda: kv.seek(bad), lambda: kv.seek_for_prev(bad)]
    if bad is not None:  # None is a valid scan bound
        calls += [lambda: kv.scan(bad), lambda: kv.scan(None, bad), lambda: kv.scan(prefix=bad)]
    for call in calls:
        with pytest.raises(TypeError):
            call()
    with kv.new_tx() as tx:
        calls = [lambda: tx.get(bad), lambda: tx.set(bad, b"v"), lambda: tx.set(b"k", bad),
                 lambda: tx.delete(bad), lambda: tx.seek(bad), lambda: tx.seek_for_prev(bad)]
        if bad is not None:
            calls += [lambda: tx.scan(bad), lambda: tx.scan(prefix=bad)]
        for call in calls:
            with pytest.raises(TypeError):
                call()
    assert dict(kv.scan()) == {b"k": b"v"}


def test_bytearray_and_memoryview_are_accepted_and_copied(kv: KV) -> None:
    # typed Any: docs/operations.md accepts them though the signatures say bytes
    key: Any = bytearray(b"key")
    value: Any = bytearray(b"value")
    kv.set(key, value)
    view: Any = memoryview(bytearray(b"mv"))
    view_key: Any = memoryview(b"mk")
    kv.set(view_key, view)
    key[0] = ord("X")
    value[0] = ord("X")
    view[0] = ord("X")
    assert kv.get(b"key") == b"value"
    assert kv.get(b"mk") == b"mv"
    as_bytearray: Any = bytearray(b"key")
    as_view: Any = memoryview(b"mk")
    assert kv.get(as_bytearray) == b"value"
    assert kv.get(as_view) == b"mv"
    assert all(type(k) is bytes and type(v) is bytes for k, v in kv.scan())
    with kv.new_tx() as tx:
        buf: Any = bytearray(b"tv")
        tkey: Any = bytearray(b"tk")
        tx.set(tkey, buf)
        buf[0] = ord("X")
        tkey[0] = ord("X")
        assert tx.get(b"tk") == b"tv"
    assert kv.get(b"tk") == b"tv"
    assert kv.delete(as_bytearray) is True


def test_empty_key_and_empty_value_are_allowed(tmp_path: pathlib.Path) -> None:
    with _open(tmp_path / "db") as db:
        db.set(b"", b"empty key")
        db.set(b"k", b"")
        assert db.get(b"") == b"empty key"
        assert db.get(b"k") == b""
        db.flush()
        assert list(db.scan()) == [(b"", b"empty key"), (b"k", b"")]
    with _open(tmp_path / "db") as db:
        assert db.get(b"") == b"empty key" and db.get(b"k") == b""
        assert db.delete(b"") is True and db.get(b"") is None


def test_key_or_value_over_the_configured_size_is_too_large(tmp_path: pathlib.Path) -> None:
    with _open(tmp_path / "db", max_key_size=10, max_value_size=100) as db:
        db.set(b"k" * 10, b"v" * 100)
        with pytest.raises(KeyOrValueTooLargeError):
            db.set(b"k" * 11, b"v")
        with pytest.raises(KeyOrValueTooLargeError):
            db.set(b"k", b"v" * 101)
        with pytest.raises(ValueError):
            db.delete(b"k" * 11)
        with db.new_tx() as tx, pytest.raises(KeyOrValueTooLargeError):
            tx.set(b"k", b"v" * 101)
        assert dict(db.scan()) == {b"k" * 10: b"v" * 100}


def test_default_max_key_size_is_65535(kv: KV) -> None:
    kv.set(b"k" * 65535, b"v")
    with pytest.raises(KeyOrValueTooLargeError):
        kv.set(b"k" * 65536, b"v")
    kv.flush()
    assert kv.get(b"k" * 65535) == b"v"


# ---------------------------------------------------------------- get, set, delete


def test_delete_reports_whether_the_key_existed(kv: KV) -> None:
    assert kv.delete(b"k") is False
    kv.set(b"k", b"v")
    assert kv.delete(b"k") is True
    assert kv.delete(b"k") is False
    assert kv.get(b"k") is None
    kv.set(b"t", b"in a table")
    kv.flush()
    assert kv.delete(b"t") is True
    assert kv.delete(b"t") is False
    kv.flush()
    assert kv.delete(b"t") is False
    kv.set(b"e", b"")
    assert kv.delete(b"e") is True  # an empty value exists


def test_delete_of_an_absent_key_writes_nothing(kv: KV) -> None:
    seq = kv.stats().sequence
    assert kv.delete(b"nothing") is False
    assert kv.stats().sequence == seq


def test_get_sees_the_newest_value_across_memtable_and_tables(tmp_path: pathlib.Path) -> None:
    with _open(tmp_path / "db", SMALL) as db:
        for round_ in range(5):
            for i in range(0, 100, round_ + 1):
                db.set(b"%03d" % i, b"round%d" % round_)
            db.flush()
        for i in range(100):
            expected = max(r for r in range(5) if i % (r + 1) == 0)
            assert db.get(b"%03d" % i) == b"round%d" % expected
        db.compact(full=True)
        assert len(db.stats().tables) == 1
        for i in range(100):
            expected = max(r for r in range(5) if i % (r + 1) == 0)
            assert db.get(b"%03d" % i) == b"round%d" % expected


# ---------------------------------------------------------------- scan

SCAN_KEYS = [b"", b"a", b"ab", b"abc", b"abd", b"ac", b"b", b"b\xff", b"b\xff\xff", b"c", b"\xff", b"\xff\xff"]
SCANS: list[tuple[str, dict[str, Any]]] = [
    ("all", {}),
    ("start", {"start": b"ab"}),
    ("end", {"end": b"b"}),
    ("start-end", {"start": b"ab", "end": b"b\xff"}),
    ("start-after-end", {"start": b"c", "end": b"a"}),
    ("start-equals-end", {"start": b"b", "end": b"b"}),
    ("prefix", {"prefix": b"ab"}),
    ("prefix-ff", {"prefix": b"b\xff"}),
    ("prefix-all-ff", {"prefix": b"\xff"}),
    ("prefix-empty", {"prefix": b""}),
    ("prefix-absent", {"prefix": b"zz"}),
    ("prefix-and-start", {"prefix": b"a", "start": b"abd"}),
    ("prefix-and-end", {"prefix": b"a", "end": b"abd"}),
    ("prefix-outside-range", {"prefix": b"a", "start": b"b"}),
]


def _expected_scan(keys: list[bytes], start: bytes | None = None, end: bytes | None = None,
                   prefix: bytes | None = None) -> list[bytes]:
    return [k for k in keys if (start is None or k >= start) and (end is None or k < end)
            and (prefix is None or k.startswith(prefix))]


@pytest.fixture(params=["memtable", "tables", "mixed"])
def scan_db(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> Iterator[KV]:
    db = _open(tmp_path / "db", SMALL)
    for i, key in enumerate(SCAN_KEYS):
        db.set(key, b"old")
        if request.param == "mixed" and i % 3 == 0:
            db.flush()
    db.set(b"deleted", b"x")
    db.delete(b"deleted")
    for key in SCAN_KEYS:
        db.set(key, key + b"!")
    if request.param == "tables":
        db.flush()
    yield db
    db.close()


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("bounds", [b for _, b in SCANS], ids=[n for n, _ in SCANS])
def test_scan_yields_the_range_intersected_with_the_prefix(scan_db: KV, bounds: dict[str, Any],
                                                           reverse: bool) -> None:
    expected = _expected_scan(SCAN_KEYS, **bounds)
    got = list(scan_db.scan(**bounds, reverse=reverse))
    assert got == [(k, k + b"!") for k in (expected[::-1] if reverse else expected)]


def test_scan_sees_the_snapshot_of_when_it_began(kv: KV) -> None:
    _fill(kv, 10)
    scan = kv.scan()
    first = next(scan)
    kv.set(b"k00005", b"changed")
    kv.set(b"k00099", b"new")
    kv.delete(b"k00003")
    rest = list(scan)
    assert [first, *rest] == [(b"k%05d" % i, b"v%d" % i) for i in range(10)]
    assert kv.get(b"k00005") == b"changed"


def test_scan_is_not_broken_by_a_flush_or_merge_meanwhile(tmp_path: pathlib.Path) -> None:
    with _open(tmp_path / "db", SMALL) as db:
        data = _fill(db, 400)
        for reverse, value in ((False, b"w"), (True, b"x")):
            scan = db.scan(reverse=reverse)
            got = [next(scan) for _ in range(50)]
            _fill(db, 400, value=value)
            db.flush()
            db.compact(full=True)
            got += list(scan)
            assert got == sorted(data.items(), reverse=reverse)
            data = dict(db.scan())
        assert db.check() == []


def test_cursor_keeps_its_files_alive_through_merges_and_lets_them_go_when_closed(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "db"
    with _open(path, SMALL) as db:
        data = _fill(db, 300)
        db.flush()
        before = {t.name for t in db.stats().tables}
        cursor = db.seek(b"k00100")
        db.compact(full=True)
        _fill(db, 300, value=b"w")
        db.flush()
        db.compact(full=True)
        assert before <= set(os.listdir(path))  # still read by the cursor
        assert not before & {t.name for t in db.stats().tables}
        walked = []
        while cursor.valid:
            walked.append((cursor.key, cursor.value))
            cursor.next()
        assert walked == sorted(data.items())[100:]
        cursor.close()
        db.set(b"one", b"more")
        db.flush()
        assert not before & set(os.listdir(path))  # unlinked once no reader and no meta slot names them
        assert dict(db.scan()) == {**{k: b"w" + v[1:] for k, v in data.items()}, b"one": b"more"}


def test_exhausted_or_closed_scan_releases_its_snapshot(kv: KV) -> None:
    _fill(kv, 3)
    scan = kv.scan()
    assert kv.stats().live_snapshots == 1
    list(scan)
    assert kv.stats().live_snapshots == 0
    with pytest.raises(StopIteration):  # exhausted stays exhausted, as iterators do
        next(scan)
    scan = kv.scan()
    next(scan)
    scan.close()  # type: ignore[attr-defined]
    assert kv.stats().live_snapshots == 0
    with pytest.raises(ClosedError):
        next(scan)


def test_closed_tx_scan_stops_and_the_tx_keeps_its_snapshot(kv: KV) -> None:
    _fill(kv, 3)
    with kv.new_tx() as tx:
        scan = tx.scan()
        first = next(scan)
        scan.close()  # type: ignore[attr-defined]
        with pytest.raises(ClosedError, match="scan is closed"):
            next(scan)
        assert kv.stats().live_snapshots == 1  # the transaction's, not the scan's
        assert next(tx.scan()) == first  # the transaction reads on
        done = tx.scan()
        list(done)
        done.close()  # type: ignore[attr-defined]
        with pytest.raises(StopIteration):  # exhausted, then closed: stays exhausted
            next(done)


# ---------------------------------------------------------------- cursors


@pytest.fixture
def abc(kv: KV) -> KV:
    for key in (b"b", b"d", b"f"):
        kv.set(key, key.upper())
    return kv


SEEKS = [(b"", b"b"), (b"a", b"b"), (b"b", b"b"), (b"c", b"d"), (b"f", b"f"), (b"g", None)]


@pytest.mark.parametrize(("target", "found"), SEEKS, ids=[repr(t) for t, _ in SEEKS])
def test_seek_lands_on_the_first_key_at_or_after(abc: KV, target: bytes, found: bytes | None) -> None:
    with abc.seek(target) as cursor:
        assert cursor.valid == (found is not None)
        if found is not None:
            assert (cursor.key, cursor.value) == (found, found.upper())


PREV_SEEKS = [(b"", None), (b"a", None), (b"b", b"b"), (b"c", b"b"), (b"f", b"f"), (b"zz", b"f")]


@pytest.mark.parametrize(("target", "found"), PREV_SEEKS, ids=[repr(t) for t, _ in PREV_SEEKS])
def test_seek_for_prev_lands_on_the_last_key_at_or_before(abc: KV, target: bytes, found: bytes | None) -> None:
    with abc.seek_for_prev(target) as cursor:
        assert cursor.valid == (found is not None)
        if found is not None:
            assert (cursor.key, cursor.value) == (found, found.upper())


def test_seek_default_is_the_first_key(abc: KV) -> None:
    with abc.seek() as cursor:
        assert cursor.key == b"b"


def test_cursor_steps_both_ways_and_falls_off_either_end(abc: KV) -> None:
    cursor = abc.seek(b"c")
    assert cursor.key == b"d"
    cursor.next()
    assert cursor.key == b"f"
    cursor.prev()
    assert cursor.key == b"d"
    cursor.prev()
    assert cursor.key == b"b"
    cursor.next()
    cursor.next()
    cursor.next()
    assert not cursor.valid
    with pytest.raises(InvalidCursorError):
        _ = cursor.key
    with pytest.raises(InvalidCursorError):
        _ = cursor.value
    for move in (cursor.next, cursor.prev):
        with pytest.raises(InvalidCursorError):
            move()
    cursor.close()
    cursor = abc.seek_for_prev(b"b")
    cursor.prev()
    assert not cursor.valid
    with pytest.raises(InvalidCursorError):
        cursor.next()
    cursor.close()


def test_cursor_iterates_forward_from_where_it_stands(abc: KV) -> None:
    with abc.seek(b"c") as cursor:
        assert list(cursor) == [(b"d", b"D"), (b"f", b"F")]
        assert not cursor.valid
    with abc.seek_for_prev(b"e") as cursor:
        assert list(cursor) == [(b"d", b"D"), (b"f", b"F")]


def test_cursor_sees_its_snapshot_only(abc: KV) -> None:
    with abc.seek() as cursor:
        abc.set(b"c", b"C")
        abc.delete(b"d")
        cursor.next()
        assert (cursor.key, cursor.value) == (b"d", b"D")
        cursor.next()
        cursor.prev()
        assert cursor.key == b"d"


def test_cursor_close_releases_its_snapshot_and_further_use_raises(abc: KV) -> None:
    cursor = abc.seek()
    assert abc.stats().live_snapshots == 1
    cursor.close()
    cursor.close()
    assert abc.stats().live_snapshots == 0
    with pytest.raises(ClosedError):
        cursor.next()
    with pytest.raises(ClosedError):
        _ = cursor.key
    assert isinstance(cursor, Cursor)


def test_cursor_turning_around_on_a_key_whose_versions_span_blocks(tmp_path: pathlib.Path) -> None:
    # regression (sorted_file): an excluded start's versions running into the next block came back
    with _open(tmp_path / "db", block_size=64) as db:
        db.set(b"a", b"A")
        snapshots = []
        for i in range(30):
            snapshots.append(db.seek(b"zz"))  # each live snapshot keeps one version of b"m"
            db.set(b"m", b"m%02d" % i + b"." * 30)
        db.set(b"z", b"Z")
        db.flush()
        assert [t.entries for t in db.stats().tables] == [32]
        with db.seek(b"m") as cursor:
            cursor.next()
            assert cursor.key == b"z"
            cursor.prev()
            assert cursor.key == b"m"
            cursor.prev()
            assert cursor.key == b"a"
            cursor.next()
            assert cursor.key == b"m"
        assert [k for k, _ in db.scan(end=b"m", reverse=True)] == [b"a"]
        assert [k for k, _ in db.scan(start=b"a", end=b"z", reverse=True)] == [b"m", b"a"]
        for c in snapshots:
            c.close()


# ---------------------------------------------------------------- transactions


def test_tx_sees_its_snapshot_not_later_commits(kv: KV) -> None:
    kv.set(b"a", b"1")
    kv.set(b"b", b"2")
    tx = kv.new_tx()
    kv.set(b"a", b"changed")
    kv.delete(b"b")
    kv.set(b"c", b"new")
    assert tx.get(b"a") == b"1" and tx.get(b"b") == b"2" and tx.get(b"c") is None
    assert list(tx.scan()) == [(b"a", b"1"), (b"b", b"2")]
    assert list(tx.scan(reverse=True)) == [(b"b", b"2"), (b"a", b"1")]
    with tx.seek(b"b") as cursor:
        assert cursor.key == b"b"
        cursor.next()
        assert not cursor.valid
    tx.abort()


def test_tx_writes_are_invisible_to_others_until_commit(kv: KV) -> None:
    kv.set(b"a", b"1")
    tx = kv.new_tx()
    tx.set(b"a", b"tx")
    tx.set(b"n", b"new")
    tx.delete(b"a")
    tx.set(b"a", b"again")
    assert kv.get(b"a") == b"1" and kv.get(b"n") is None
    assert list(kv.scan()) == [(b"a", b"1")]
    seq = kv.stats().sequence
    tx.commit()
    assert kv.stats().sequence == seq + 1  # one sequence number for every write
    assert dict(kv.scan()) == {b"a": b"again", b"n": b"new"}


@pytest.fixture
def rw(kv: KV) -> KV:
    for key in (b"a", b"c", b"e", b"g"):
        kv.set(key, key)
    kv.flush()
    kv.set(b"i", b"i")
    return kv


def test_tx_reads_its_own_writes_in_get_seek_and_scan_both_ways(rw: KV) -> None:
    with rw.new_tx() as tx:
        tx.set(b"b", b"B")  # new key between existing ones
        tx.set(b"c", b"C")  # overwrite
        tx.delete(b"e")  # pending delete hides a committed key
        tx.set(b"j", b"J")  # past the last committed key
        tx.set(b"0", b"zero")  # before the first
        tx.set(b"x", b"X")
        tx.delete(b"x")  # set then deleted inside the tx
        expected = [(b"0", b"zero"), (b"a", b"a"), (b"b", b"B"), (b"c", b"C"), (b"g", b"g"), (b"i", b"i"),
                    (b"j", b"J")]
        assert [tx.get(k) for k, _ in expected] == [v for _, v in expected]
        assert tx.get(b"e") is None and tx.get(b"x") is None
        assert list(tx.scan()) == expected
        assert list(tx.scan(reverse=True)) == expected[::-1]
        assert list(tx.scan(b"b", b"i")) == expected[2:5]
        assert list(tx.scan(b"b", b"i", reverse=True)) == expected[2:5][::-1]
        assert list(tx.scan(prefix=b"j")) == [(b"j", b"J")]
        with tx.seek(b"d") as cursor:
            assert cursor.key == b"g"
            cursor.prev()
            assert cursor.key == b"c" and cursor.value == b"C"
            cursor.prev()
            assert cursor.key == b"b"
        with tx.seek_for_prev(b"f") as cursor:
            assert cursor.key == b"c"
            cursor.next()
            assert cursor.key == b"g"
        with tx.seek(b"") as cursor:
            assert list(cursor) == expected
    assert list(rw.scan()) == expected


def test_tx_delete_reports_existence_in_its_own_view(rw: KV) -> None:
    with pytest.raises(ConflictError), rw.new_tx() as tx:
        assert tx.delete(b"a") is True
        assert tx.delete(b"a") is False  # already deleted in this transaction
        assert tx.delete(b"b") is False
        tx.set(b"b", b"B")
        assert tx.delete(b"b") is True
        rw.set(b"z", b"after the snapshot")
        assert tx.delete(b"z") is False  # and z, written after the snapshot, was read: a conflict
    assert rw.get(b"a") is not None and rw.get(b"z") == b"after the snapshot"


def test_tx_abort_applies_nothing(rw: KV) -> None:
    before = list(rw.scan())
    seq = rw.stats().sequence
    tx = rw.new_tx()
    tx.set(b"a", b"x")
    tx.delete(b"c")
    tx.abort()
    tx.abort()
    assert list(rw.scan()) == before and rw.stats().sequence == seq
    assert rw.stats().live_snapshots == 0


def test_tx_context_manager_commits_on_normal_exit(kv: KV) -> None:
    with kv.new_tx() as tx:
        tx.set(b"k", b"v")
    assert kv.get(b"k") == b"v"


def test_tx_context_manager_aborts_when_the_block_raises(kv: KV) -> None:
    with pytest.raises(KeyError), kv.new_tx() as tx:
        tx.set(b"k", b"v")
        raise KeyError("boom")
    assert kv.get(b"k") is None
    with pytest.raises(TxClosedError):
        tx.get(b"k")


@pytest.mark.parametrize("end", ["commit", "abort"], ids=str)
def test_tx_context_manager_leaves_a_transaction_the_block_ended(kv: KV, end: str) -> None:
    with kv.new_tx() as tx:
        tx.set(b"k", b"v")
        getattr(tx, end)()
    assert kv.get(b"k") == (b"v" if end == "commit" else None)


TX_CALLS: list[tuple[str, Callable[[KVTX], object]]] = [
    ("get", lambda tx: tx.get(b"k")),
    ("set", lambda tx: tx.set(b"k", b"v")),
    ("delete", lambda tx: tx.delete(b"k")),
    ("seek", lambda tx: tx.seek(b"k")),
    ("seek_for_prev", lambda tx: tx.seek_for_prev(b"k")),
    ("scan", lambda tx: tx.scan()),
    ("commit", lambda tx: tx.commit()),
]


@pytest.mark.parametrize("end", ["commit", "abort", "commit-empty"], ids=str)
@pytest.mark.parametrize("call", [c for _, c in TX_CALLS], ids=[n for n, _ in TX_CALLS])
def test_tx_every_call_after_it_ended_raises_tx_closed(kv: KV, end: str, call: Callable[[KVTX], object]) -> None:
    tx = kv.new_tx()
    if end != "commit-empty":
        tx.set(b"a", b"1")
    tx.abort() if end == "abort" else tx.commit()
    with pytest.raises(TxClosedError):
        call(tx)
    tx.abort()  # does nothing


def test_tx_cursor_and_scan_raise_tx_closed_after_the_tx_ends(rw: KV) -> None:
    tx = rw.new_tx()
    cursor = tx.seek(b"a")
    scan = tx.scan()
    next(scan)
    tx.commit()
    with pytest.raises(TxClosedError):
        cursor.next()
    with pytest.raises(TxClosedError):
        next(scan)


def test_tx_scan_and_cursor_keep_an_unreferenced_transaction_alive(rw: KV) -> None:
    # regression: the KVTX's finalizer released the snapshot under a scan or cursor that outlived the
    # caller's reference to it, so list(kv.new_tx().scan()) raised ClosedError
    assert [k for k, _ in rw.new_tx().scan()] == [b"a", b"c", b"e", b"g", b"i"]
    assert [k for k, _ in rw.new_tx().scan(reverse=True)] == [b"i", b"g", b"e", b"c", b"a"]
    cursor = rw.new_tx().seek(b"b")
    cursor.next()
    assert cursor.key == b"e"
    back = rw.new_tx().seek_for_prev(b"h")
    back.prev()
    assert back.key == b"e"
    del cursor, back
    gc.collect()
    assert rw.stats().live_snapshots == 0  # a dropped transaction still lets its snapshot go


def test_tx_commit_with_sync_override(tmp_path: pathlib.Path) -> None:
    with _open(tmp_path / "db", sync=False) as db:
        with db.new_tx() as tx:
            tx.set(b"a", b"1")
        tx = db.new_tx()
        tx.set(b"b", b"2")
        tx.commit(sync=True)
        assert dict(db.scan()) == {b"a": b"1", b"b": b"2"}


def test_tx_releases_its_snapshot_when_it_ends(kv: KV) -> None:
    tx = kv.new_tx()
    stats = kv.stats()
    assert stats.live_snapshots == 1 and stats.oldest_snapshot is not None
    assert stats.oldest_snapshot_age is not None and stats.oldest_snapshot_age >= 0
    tx.commit()
    stats = kv.stats()
    assert stats.live_snapshots == 0 and stats.oldest_snapshot is None


def test_transact_commits_and_returns_the_result(kv: KV) -> None:
    def fn(tx: KVTX) -> int:
        tx.set(b"a", b"1")
        tx.set(b"b", b"2")
        return 42

    assert kv.transact(fn) == 42
    assert dict(kv.scan()) == {b"a": b"1", b"b": b"2"}


def test_transact_other_exceptions_propagate_with_nothing_committed(kv: KV) -> None:
    calls = []

    def fn(tx: KVTX) -> None:
        calls.append(1)
        tx.set(b"a", b"1")
        raise LookupError("no")

    with pytest.raises(LookupError):
        kv.transact(fn)
    assert calls == [1] and kv.get(b"a") is None and kv.stats().live_snapshots == 0


def test_transact_retries_on_conflict_in_a_fresh_transaction(kv: KV) -> None:
    seen: list[bytes | None] = []

    def fn(tx: KVTX) -> str:
        seen.append(tx.get(b"n"))
        tx.set(b"attempt%d" % len(seen), b"x")
        if len(seen) < 3:
            kv.set(b"n", b"%d" % len(seen))  # a commit after this transaction's snapshot
            raise ConflictError("simulated")
        return "done"

    assert kv.transact(fn) == "done"
    assert seen == [None, b"1", b"2"]  # each attempt had a fresh snapshot
    assert kv.get(b"attempt1") is None and kv.get(b"attempt2") is None and kv.get(b"attempt3") == b"x"


def test_transact_lets_conflict_out_after_the_last_attempt(kv: KV) -> None:
    calls = []

    def fn(tx: KVTX) -> None:
        calls.append(1)
        tx.set(b"k", b"v")
        raise ConflictError("always")

    with pytest.raises(ConflictError):
        kv.transact(fn, attempts=3)
    assert len(calls) == 3 and kv.get(b"k") is None
    with pytest.raises(ValueError):
        kv.transact(fn, attempts=0)


def test_transact_accepts_fn_that_ends_the_transaction_itself(kv: KV) -> None:
    assert kv.transact(_set_and_commit) == "ok"
    assert kv.get(b"k") == b"v"


# ---------------------------------------------------------------- flush, compact, stats


def test_flush_writes_the_memtable_to_a_table_in_the_meta(kv: KV, tmp_path: pathlib.Path) -> None:
    _fill(kv, 20)
    assert kv.stats().tables == ()
    kv.flush()
    stats = kv.stats()
    assert stats.memtable_entries == 0 and stats.flushes == 1
    (table,) = stats.tables
    assert table.entries == 20 and table.smallest == b"k00000" and table.largest == b"k00019"
    assert table.name in os.listdir(tmp_path / "db")
    assert table.bytes == os.path.getsize(tmp_path / "db" / table.name)
    kv.flush()  # nothing to flush: no new table
    assert len(kv.stats().tables) == 1 and kv.stats().flushes == 1


def test_compact_full_merges_everything_into_one_table_dropping_deletes(tmp_path: pathlib.Path) -> None:
    with _open(tmp_path / "db", SMALL) as db:
        data = _fill(db, 300)
        for i in range(0, 300, 2):
            db.delete(b"k%05d" % i)
            del data[b"k%05d" % i]
        db.flush()
        assert len(db.stats().tables) > 1
        db.compact(full=True)
        stats = db.stats()
        assert len(stats.tables) == 1
        assert stats.tables[0].deletes == 0 and stats.tables[0].entries == 150
        assert dict(db.scan()) == data
        names = {t.name for t in stats.tables}
        db.compact(full=True)  # nothing to do
        assert {t.name for t in db.stats().tables} == names
    with _open(tmp_path / "db", SMALL) as db:
        assert dict(db.scan()) == data


def test_compact_full_keeps_versions_a_live_snapshot_reads(tmp_path: pathlib.Path) -> None:
    with _open(tmp_path / "db", SMALL) as db:
        db.set(b"k", b"old")
        db.set(b"gone", b"x")
        db.flush()
        with db.new_tx() as tx:
            db.set(b"k", b"new")
            db.delete(b"gone")
            db.compact(full=True)
            assert tx.get(b"k") == b"old" and tx.get(b"gone") == b"x"
            assert db.get(b"k") == b"new" and db.get(b"gone") is None


def _sizes(db: KV) -> list[int]:
    return [t.bytes for t in db.stats().tables]


def _policy_holds(sizes: list[int], factor: float) -> bool:
    """Every table is more than ``factor - 1`` times all newer tables together."""
    return all(sizes[i] > (factor - 1) * sum(sizes[:i]) for i in range(1, len(sizes)))


@pytest.mark.parametrize("factor", [2.0, 3.0], ids=["g2", "g3"])
def test_growth_factor_policy_holds_after_every_flush_and_compaction(tmp_path: pathlib.Path, factor: float) -> None:
    with _open(tmp_path / "db", SMALL, growth_factor=factor) as db:
        data: dict[bytes, bytes] = {}
        for round_ in range(40):
            for i in range(40):
                key = b"%05d" % ((round_ * 37 + i * 11) % 900)
                db.set(key, b"r%d" % round_)
                data[key] = b"r%d" % round_
            db.flush()
            assert _policy_holds(_sizes(db), factor), _sizes(db)
        db.compact()
        sizes = _sizes(db)
        assert _policy_holds(sizes, factor), sizes
        assert db.stats().merges > 0
        assert len(sizes) <= 1 + math.log(sum(sizes) / min(sizes), factor)  # sums grow by factor per table
        assert dict(db.scan()) == data
        db._check()


def test_stats_fields_describe_the_database(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "db"
    with _open(path, SMALL) as db:
        _fill(db, 200, value=b"x" * 20)
        db.flush()
        _fill(db, 10, prefix=b"m")
        for i in range(50):
            db.get(b"k%05d" % i)
        db.get(b"k00001")
        cursor = db.seek(b"k")
        stats = db.stats()
        assert stats.sequence == 210
        assert stats.tables and [t.max_sequence for t in stats.tables] == sorted(
            (t.max_sequence for t in stats.tables), reverse=True)  # newest first
        for newer, older in zip(stats.tables, stats.tables[1:]):
            assert newer.min_sequence > older.max_sequence
        names = set(os.listdir(path))
        for t in stats.tables:
            assert t.name in names and t.name == f"{t.file_number:06d}.sst"
            assert t.bytes == os.path.getsize(path / t.name)
            assert t.smallest <= t.largest
        assert sum(t.entries for t in stats.tables) == 200
        assert stats.memtable_entries == 10 and stats.memtable_bytes > 0
        assert stats.wal_bytes > 0
        assert stats.live_snapshots == 1 and stats.oldest_snapshot == 210
        assert stats.flushes >= 1
        assert stats.user_bytes == sum(len(b"k%05d" % i) + len(b"x" * 20 + b"%d" % i) for i in range(200)) + sum(
            len(b"m%05d" % i) + len(b"v%d" % i) for i in range(10))
        assert stats.bytes_written > stats.user_bytes
        assert stats.write_amplification == stats.bytes_written / stats.user_bytes > 1
        on_disk = sum(os.path.getsize(path / n) for n in names if n.endswith((".sst", ".log")) or
                      n.startswith("meta"))
        assert stats.disk_bytes == on_disk
        assert stats.cache_hits + stats.cache_misses > 0 and stats.cache_hits > 0
        assert stats.recovery == () and stats.failed is None
        cursor.close()


def test_stats_of_an_empty_database(kv: KV) -> None:
    stats = kv.stats()
    assert stats.sequence == 0 and stats.tables == () and stats.memtable_entries == 0
    assert stats.write_amplification == 0.0 and stats.live_snapshots == 0


def test_check_of_a_healthy_database_is_empty(tmp_path: pathlib.Path) -> None:
    with _open(tmp_path / "db", SMALL) as db:
        _fill(db, 500)
        assert db.check() == []
        db.compact(full=True)
        assert db.check() == []


# ---------------------------------------------------------------- files on disk


def test_file_numbers_are_never_reused_across_reopen(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "db"
    seen: set[int] = set()
    high = 0
    for round_ in range(4):
        with _open(path, SMALL) as db:
            numbers = _numbers(path)
            assert not (numbers - seen) or min(numbers - seen) > high
            for i in range(150):
                db.set(b"%d-%d" % (round_, i), b"v" * 10)
                new = _numbers(path) - seen
                assert not new or min(new) > high, (new, high)
                seen |= new
                high = max([high, *new])
            db.compact(full=True)
            new = _numbers(path) - seen
            assert not new or min(new) > high
            seen |= new
            high = max([high, *new])
        new = _numbers(path) - seen
        assert not new or min(new) > high
        seen |= new
        high = max([high, *new])


def test_orphans_are_deleted_on_open_and_unknown_files_left_alone(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "db"
    with _open(path, SMALL) as db:
        data = _fill(db, 100)
        db.flush()
    numbers_before = _numbers(path)
    orphan_table = path / "000900.sst"
    orphan_table.write_bytes(b"an unfinished table")
    old_log = path / "000001.log"  # every log below the meta's live log number is done with
    old_log.write_bytes(b"an old log")
    (path / "meta1.tmp").write_bytes(b"a torn slot write")
    unknown = ["notes.txt", "000007.sst.bak", "backup", "12.sst", "meta2", "export.tmp", "000950.sst.tmp"]
    for name in unknown:
        (path / name).write_bytes(b"mine")
    with _open(path, SMALL) as db:
        assert dict(db.scan()) == data
        names = set(os.listdir(path))
        assert "000900.sst" not in names and "000001.log" not in names
        assert "meta1.tmp" not in names
        for name in unknown:
            assert (path / name).read_bytes() == b"mine"
        db.set(b"new", b"file")
        db.flush()
        assert min(_numbers(path) - numbers_before) > 900
    assert {n for n in os.listdir(path) if n in unknown} == set(unknown)


def test_directory_holding_only_unknown_files_opens_as_new_leaving_them(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "db"
    path.mkdir()
    (path / "README").write_bytes(b"mine")
    with _open(path) as db:
        assert list(db.scan()) == []
        db.set(b"k", b"v")
    assert (path / "README").read_bytes() == b"mine"
    with _open(path) as db:
        assert db.get(b"k") == b"v"


def test_tables_and_logs_without_a_meta_refuse_to_open_as_empty(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "db"
    with _open(path, SMALL) as db:
        _fill(db, 100)
        db.flush()
    for name in ("meta0", "meta1"):
        if (path / name).exists():
            (path / name).unlink()
    before = set(os.listdir(path))
    with pytest.raises(CorruptionError):
        _open(path)
    assert set(os.listdir(path)) == before  # nothing deleted, nothing created


def test_directory_with_only_a_log_and_no_meta_is_corrupt(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "db"
    path.mkdir()
    (path / "000003.log").write_bytes(b"")
    with pytest.raises(CorruptionError):
        _open(path)


def test_missing_table_named_by_the_meta_is_corruption(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "db"
    with _open(path, SMALL) as db:
        _fill(db, 50)
        db.flush()
        name = db.stats().tables[0].name
    (path / name).unlink()
    with pytest.raises(CorruptionError) as info:
        _open(path)
    assert info.value.path == str(path / name)


def test_unflushed_commits_are_replayed_on_open(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "db"
    db = _open(path)
    _fill(db, 30)
    crashed = _crash_copy(path, tmp_path / "crashed")
    db.close()
    with _open(crashed) as again:
        assert again.stats().memtable_entries == 30
        assert again.get(b"k00029") == b"v29"
        assert again.stats().sequence == 30
        again.set(b"after", b"reopen")
        assert again.stats().sequence == 31


# ---------------------------------------------------------------- I/O errors on the durability path


class _FailingFile:
    """An OSFile whose fsync or append fails while its file system says so."""

    def __init__(self, inner: OSFile, fs: _FailingFS) -> None:
        self._inner = inner
        self._fs = fs
        self.path = inner.path

    def pread(self, size: int, offset: int) -> bytes:
        return self._inner.pread(size, offset)

    def append(self, data: bytes) -> None:
        if self._fs.fail == "write":
            raise OSError(errno.ENOSPC, "injected ENOSPC")
        self._inner.append(data)

    def write_at(self, offset: int, data: bytes) -> None:
        self._inner.write_at(offset, data)

    def truncate(self, size: int) -> None:
        self._inner.truncate(size)

    def fsync(self) -> None:
        if self._fs.fail == "fsync":
            raise OSError(errno.EIO, "injected EIO")
        self._inner.fsync()

    def size(self) -> int:
        return self._inner.size()

    def close(self) -> None:
        self._inner.close()


class _FailingFS(OSFileSystem):
    fail: str | None = None

    def open(self, path: str, *, write: bool = False, create: bool = False) -> Any:
        return _FailingFile(super().open(path, write=write, create=create), self)


@pytest.mark.parametrize(("fail", "errno_", "op"), [("fsync", errno.EIO, "commit"), ("write", errno.ENOSPC, "commit"),
                                                    ("write", errno.ENOSPC, "flush")],
                         ids=["fsync-eio-commit", "enospc-commit", "enospc-flush"])
def test_io_error_on_the_durability_path_fails_with_failed_error_until_reopen(
        tmp_path: pathlib.Path, fail: str, errno_: int, op: str) -> None:
    fs = _FailingFS()
    db = KV.open(tmp_path / "db", Config(background=False, sync=True), fs=fs)
    try:
        db.set(b"acknowledged", b"1")
        fs.fail = fail
        with pytest.raises(FailedError) as info:
            if op == "commit":
                db.set(b"unacknowledged", b"2")
            else:
                db.flush()
        assert isinstance(info.value.__cause__, OSError) and info.value.errno == errno_
        fs.fail = None  # the device recovered: the KV still refuses, an fsync is never retried
        for write in (lambda: db.set(b"k", b"v"), lambda: db.delete(b"acknowledged"), db.flush,
                      lambda: _set_and_commit(db.new_tx())):
            with pytest.raises(FailedError):
                write()
        assert db.get(b"acknowledged") == b"1"
        assert db.stats().failed is not None
    finally:
        db.close()
    with _open(tmp_path / "db") as again:
        assert again.get(b"acknowledged") == b"1"
        again.set(b"after", b"reopen")
        assert again.get(b"after") == b"reopen"


def test_create_if_missing_false_on_an_empty_directory_leaves_it_empty(tmp_path: pathlib.Path) -> None:
    with pytest.raises(FileNotFoundError):
        KV.open(tmp_path, Config(create_if_missing=False))
    assert os.listdir(tmp_path) == []


def test_public_signatures_accept_bytearray_and_memoryview_without_casts(tmp_path: pathlib.Path) -> None:
    # typed as Bytes: this test type-checks under mypy --strict with no Any
    with KV.open(tmp_path) as kv:
        kv.set(bytearray(b"k"), memoryview(b"v"))
        assert kv.get(memoryview(b"k")) == b"v"
        with kv.new_tx() as tx:
            tx.set(memoryview(b"k2"), bytearray(b"v2"))
            assert tx.delete(bytearray(b"k"))
        assert list(kv.scan(start=bytearray(b"k"), prefix=memoryview(b"k"))) == [(b"k2", b"v2")]


def test_an_exhausted_scan_stays_exhausted_after_its_kv_closes(tmp_path: pathlib.Path) -> None:
    db = KV.open(str(tmp_path / "db"))
    db.set(b"a", b"1")
    done = db.scan()
    assert list(done) == [(b"a", b"1")]
    pending = db.scan()
    db.close()
    with pytest.raises(StopIteration):  # documented: exhausted stays exhausted, as iterators do
        next(done)
    with pytest.raises(ClosedError):  # not yet exhausted: its KV closed under it
        next(pending)
    with pytest.raises(ClosedError):  # and again on every later ask
        next(pending)
