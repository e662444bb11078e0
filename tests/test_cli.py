"""The ``kvstore`` command, run as a real process (``python -m kvstore``) on real databases."""

from __future__ import annotations

import base64
import json
import os
import select
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvstore import KV, Config
from kvstore.cli import main

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
ENV.pop("KVSTORE_TRACEBACK", None)
SMALL = Config(background=False, sync=False, memtable_size=4096, block_size=256)

# every byte value, an empty key and value, quotes, backslashes, a newline and non-ASCII text
BINARY_PAIRS = {
    b"": b"empty key",
    b"\x00": b"",
    bytes(range(256)): bytes(range(255, -1, -1)),
    b"it's \"quoted\"\\": b"line\nbreak\ttab\r",
    "caf\u00e9".encode(): "\u2603".encode(),
    b"\xff" * 3: b"v" * 10_000,
}


def run(*args: object, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """``kvstore ARGS`` in a new process of this checkout."""
    return subprocess.run([sys.executable, "-m", "kvstore", *map(str, args)], input=stdin, capture_output=True,
                          env=ENV, timeout=120)


def out(result: subprocess.CompletedProcess[bytes]) -> str:
    return result.stdout.decode()


def err_line(result: subprocess.CompletedProcess[bytes]) -> str:
    """The one line of stderr (asserted to be one line and no traceback)."""
    text = result.stderr.decode()
    assert "Traceback" not in text
    assert text.endswith("\n") and text.count("\n") == 1, text
    return text.strip()


def _files(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A database with tables, a memtable and a deleted key: k000..k299 = v<i> repeated, minus k007."""
    path = tmp_path / "db"
    with KV.open(path, SMALL) as kv:
        for i in range(300):
            kv.set(b"k%03d" % i, b"v%d" % i * 3)
        kv.delete(b"k007")
    # a process killed before close() leaves its last commit only in the log
    script = ("import os, sys\nfrom kvstore import KV, Config\n"
              "KV.open(sys.argv[1], Config(background=False)).set(b'late', b'1')\nos._exit(0)\n")
    subprocess.run([sys.executable, "-c", script, str(path)], check=True, env=ENV, timeout=120)
    return path


# ---------------------------------------------------------------------- get, put, delete


def test_put_creates_a_database_and_get_reads_escaped_bytes_back(tmp_path: Path) -> None:
    path = tmp_path / "new"
    assert run("put", path, r"a\x00b", r"line\nnext\\").returncode == 0
    result = run("get", path, r"a\x00b")
    assert result.returncode == 0 and result.stderr == b""
    assert out(result) == "line\\nnext\\\\\n"
    with KV.open(path, Config(read_only=True)) as kv:
        assert kv.get(b"a\x00b") == b"line\nnext\\"


def test_get_of_a_missing_key_exits_1_with_one_line_naming_it(db: Path) -> None:
    result = run("get", db, r"no\x01such")
    assert result.returncode == 1 and result.stdout == b""
    assert err_line(result) == r"kvstore get: key no\x01such not found"


@pytest.mark.parametrize("command", [["get", "k"], ["scan"], ["dump"], ["stats"], ["check"], ["delete", "k"],
                                     ["compact"], ["backup", "DEST"]],
                         ids=["get", "scan", "dump", "stats", "check", "delete", "compact", "backup"])
def test_commands_that_need_a_database_exit_4_and_create_nothing(tmp_path: Path, command: list[str]) -> None:
    missing = tmp_path / "missing"
    args = [str(tmp_path / "dest") if a == "DEST" else a for a in command]
    result = run(args[0], missing, *args[1:])
    assert result.returncode == 4
    assert "no database at" in err_line(result)
    assert not missing.exists() and not (tmp_path / "dest").exists()


def test_read_only_commands_write_nothing_even_with_a_log_to_replay(db: Path, tmp_path: Path) -> None:
    before = _files(db)
    for command in (["get", "late"], ["scan"], ["dump"], ["stats"], ["check"], ["inspect", "meta"]):
        if command[0] == "inspect":
            result = run(*command, db)
        else:
            result = run(command[0], db, *command[1:])
        assert result.returncode == 0, (command, result.stderr)
    assert _files(db) == before


def test_hex_reads_arguments_and_shows_values_as_hex(tmp_path: Path) -> None:
    path = tmp_path / "db"
    assert run("put", "--hex", path, "00ff", "6869").returncode == 0
    assert out(run("get", path, "--hex", "00ff")) == "6869\n"
    assert out(run("get", path, r"\x00\xff")) == "hi\n"
    assert out(run("scan", path, "--hex")) == "00ff\t6869\n"
    result = run("get", path, "--hex", "0g")
    assert result.returncode == 2 and "not hex" in err_line(result)


def test_put_stdin_and_get_raw_carry_bytes_as_they_are(tmp_path: Path) -> None:
    path = tmp_path / "db"
    value = bytes(range(256)) * 4
    assert run("put", path, "blob", "--stdin", stdin=value).returncode == 0
    result = run("get", path, "blob", "--raw")
    assert result.returncode == 0 and result.stdout == value


def test_put_needs_exactly_one_of_value_and_stdin(tmp_path: Path) -> None:
    for args in (["k"], ["k", "v", "--stdin"]):
        result = run("put", tmp_path / "db", *args, stdin=b"")
        assert result.returncode == 2 and "VALUE or --stdin" in err_line(result)
    assert not (tmp_path / "db").exists()


def test_put_ttl_sets_a_key_that_expires_and_ttl_tells_the_seconds_left(tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    path = str(tmp_path / "db")
    assert main(["put", "--ttl", "3600", path, "hour", "1"]) == 0
    assert main(["put", path, "lasting", "2"]) == 0
    assert main(["put", path, "brief", "3", "--ttl", "0.2"]) == 0
    assert main(["get", path, "brief"]) == 0
    capsys.readouterr()
    assert main(["ttl", path, "hour"]) == 0 and 3590 < float(capsys.readouterr().out) <= 3600
    assert main(["ttl", path, "lasting"]) == 0 and capsys.readouterr().out == "does not expire\n"
    time.sleep(0.25)  # "brief" expires
    assert main(["get", path, "brief"]) == 1 and main(["ttl", path, "brief"]) == 1
    assert main(["ttl", path, "nope"]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "kvstore get: key brief not found", "kvstore ttl: key brief not found", "kvstore ttl: key nope not found"]
    with KV.open(path, Config(read_only=True)) as kv:
        assert dict(kv.scan()) == {b"hour": b"1", b"lasting": b"2"}
    assert main(["stats", path, "--json"]) == 0  # each put's close wrote its own table
    assert sorted(t["expiring"] for t in json.loads(capsys.readouterr().out)["tables"]) == [0, 1, 1]


@pytest.mark.parametrize("ttl", ["0", "-1", "nan", "1e400", "soon"], ids=["zero", "negative", "nan", "inf", "word"])
def test_put_with_a_bad_ttl_exits_2_and_writes_nothing(tmp_path: Path, ttl: str) -> None:
    result = run("put", "--ttl", ttl, tmp_path / "db", "k", "v")
    assert result.returncode == 2 and result.stdout == b""
    assert err_line(result) == f"kvstore put: --ttl must be a finite number of seconds above 0, got '{ttl}'"
    assert not (tmp_path / "db").exists()


def test_delete_removes_keys_in_one_transaction_and_counts_those_that_existed(db: Path) -> None:
    result = run("delete", db, "k001", "k002", "k007", "nope")
    assert result.returncode == 0 and out(result) == "deleted 2 of 4 keys\n"
    with KV.open(db, Config(read_only=True)) as kv:
        assert kv.get(b"k001") is None and kv.get(b"k002") is None and kv.get(b"k003") == b"v3v3v3"


def test_delete_range_deletes_the_keys_in_the_range_with_one_commit(db: Path) -> None:
    with KV.open(db, Config(read_only=True)) as kv:
        before = kv.stats().sequence
    result = run("delete-range", db, "k002", "k005")
    assert result.returncode == 0 and out(result) == "deleted [k002, k005)\n"
    result = run("delete-range", "--hex", db, "6b303037", "6b303036")  # k007 > k006: nothing
    assert result.returncode == 0 and out(result) == "nothing deleted: START is not below END\n"
    with KV.open(db, Config(read_only=True)) as kv:
        assert [k for k, _ in kv.scan(b"k001", b"k007")] == [b"k001", b"k005", b"k006"]
        assert kv.stats().sequence == before + 1
    assert run("delete-range", db, "k001").returncode == 2  # END missing: a usage error


def test_inspect_shows_range_deletes_in_a_log_and_in_a_table(tmp_path: Path) -> None:
    path = tmp_path / "db"
    with KV.open(path, Config(background=False)) as kv:
        kv.set(b"a", b"1")
        held = kv.new_tx()  # its snapshot keeps the tombstone in the bottom table the flush writes
        kv.delete_range(b"b", b"d")
        log = Path(kv._wal.path) if kv._wal is not None else None
        assert log is not None
        text = out(run("inspect", "wal", log))
        assert "    delete range [b, d)" in text
        kv.flush()
        table = path / kv.stats().tables[0].name
        text = out(run("inspect", "sst", table))
        assert "range     [b, d) deleted at sequence 2" in text
        tree = json.loads(out(run("inspect", "sst", "--json", table)))
        assert tree["range_tombstones"] == [{"start": base64.b64encode(b"b").decode(),
                                             "end": base64.b64encode(b"d").decode(), "sequences": [2]}]
        held.abort()


def test_inspect_shows_each_expiry_in_a_log_and_in_a_table(tmp_path: Path) -> None:
    path = tmp_path / "db"
    with KV.open(path, Config(background=False), clock=lambda: 1767225000.0) as kv:
        kv.set(b"k", b"v", ttl=600.5)
        kv.set(b"p", b"plain")
        log = Path(kv._wal.path) if kv._wal is not None else None
        assert log is not None
        text = out(run("inspect", "wal", log))
        assert "\n    set    k = v  expires at 1767225600.5 (2026-01-01T00:00:00.500Z)\n" in text
        assert "\n    set    p = plain\n" in text
        writes = [w for f in json.loads(out(run("inspect", "wal", "--json", log)))["frames"] for w in f["writes"]]
        assert writes == [{"key": "aw==", "value": "dg==", "kind": "value", "expires": 1767225600.5},
                          {"key": "cA==", "value": "cGxhaW4=", "kind": "value"}]
        kv.flush()
        table = path / kv.stats().tables[0].name
    text = out(run("inspect", "sst", "--entries", table))
    assert "expiring  1 entries, the earliest at 1767225600.5 (2026-01-01T00:00:00.500Z)" in text
    assert "    k @1 = v  expires at 1767225600.5 (2026-01-01T00:00:00.500Z)\n    p @2 = plain\n" in text
    tree = json.loads(out(run("inspect", "sst", "--json", "--entries", table)))
    assert (tree["properties"]["expiring"], tree["properties"]["earliest_expiry"]) == (1, 1767225600.5)
    assert [e.get("expires") for e in tree["blocks"][0]["entries"]] == [1767225600.5, None]


@pytest.mark.parametrize("argument", [r"bad\q", "trailing\\", r"\x4", r"\400"],
                         ids=["unknown-escape", "lone-backslash", "short-hex", "octal-past-255"])
def test_a_bad_escape_is_a_usage_error(db: Path, argument: str) -> None:
    result = run("get", db, argument)
    assert result.returncode == 2 and result.stdout == b""
    assert err_line(result).startswith("kvstore get: KEY: ")


def test_usage_errors_exit_2_with_one_line(db: Path) -> None:
    for args in (["get"], ["frob", str(db)], ["scan", str(db), "--limit", "x"], ["scan", str(db), "--limit", "-1"],
                 []):
        result = run(*args)
        assert result.returncode == 2, args
        assert "(see 'kvstore" in err_line(result) or "--limit" in err_line(result)


def test_help_exits_0_and_lists_every_command() -> None:
    result = run("--help")
    assert result.returncode == 0
    for command in ("get", "put", "delete", "scan", "dump", "load", "stats", "check", "compact", "backup",
                    "inspect", "shell"):
        assert command in out(result)


# ---------------------------------------------------------------------- scan


def test_scan_bounds_prefix_reverse_limit_and_keys_only(db: Path) -> None:
    def keys(*args: str) -> list[str]:
        result = run("scan", db, "--keys-only", *args)
        assert result.returncode == 0, result.stderr
        return out(result).splitlines()

    assert keys("--from", "k005", "--to", "k009") == ["k005", "k006", "k008"]  # --to is exclusive; k007 deleted
    assert keys("--prefix", "k29") == [f"k{i}" for i in range(290, 300)]
    assert keys("--prefix", "k29", "--reverse", "--limit", "3") == ["k299", "k298", "k297"]
    assert keys("--from", "k298") == ["k298", "k299", "late"]
    assert keys("--limit", "0") == []
    assert out(run("scan", db, "--from", "k010", "--limit", "1")) == "k010\tv10v10v10\n"


def test_scan_jsonl_carries_base64(tmp_path: Path) -> None:
    path = tmp_path / "db"
    with KV.open(path, SMALL) as kv:
        for k, v in BINARY_PAIRS.items():
            kv.set(k, v)
    result = run("scan", path, "--format", "jsonl")
    rows = [json.loads(line) for line in out(result).splitlines()]
    assert [(base64.b64decode(r["key"]), base64.b64decode(r["value"])) for r in rows] == sorted(BINARY_PAIRS.items())
    result = run("scan", path, "--format", "jsonl", "--keys-only", "--limit", "2")
    assert [json.loads(line) for line in out(result).splitlines()] == [{"key": ""}, {"key": "AA=="}]


def test_scan_text_lines_read_back_exactly(tmp_path: Path) -> None:
    from kvstore.display import unescape

    path = tmp_path / "db"
    with KV.open(path, SMALL) as kv:
        for k, v in BINARY_PAIRS.items():
            kv.set(k, v)
    lines = out(run("scan", path)).splitlines()
    pairs = [tuple(unescape(part) for part in line.split("\t")) for line in lines]
    assert pairs == sorted(BINARY_PAIRS.items())


def test_scan_into_a_closed_pipe_stops_quietly(db: Path) -> None:
    with KV.open(db, SMALL) as kv:
        for i in range(3000):
            kv.set(b"pad%05d" % i, b"x" * 60)
    proc = subprocess.Popen([sys.executable, "-m", "kvstore", "scan", str(db)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=ENV)
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline().startswith(b"k000\t")
    proc.stdout.close()
    assert proc.wait(timeout=60) == 141
    assert proc.stderr.read() == b""
    proc.stderr.close()


# ---------------------------------------------------------------------- dump and load


def test_dump_then_load_round_trips_binary_keys_exactly(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    with KV.open(src, SMALL) as kv:
        for k, v in BINARY_PAIRS.items():
            kv.set(k, v)
        for i in range(500):
            kv.set(b"n%04d\x00" % i, os.urandom(i % 50))
        expected = dict(kv.scan())
    dump = run("dump", src)
    assert dump.returncode == 0 and dump.stderr == b""
    lines = dump.stdout.decode().splitlines()
    assert json.loads(lines[0])["format"] == "kvstore-dump" and json.loads(lines[-1]) == {"end": True,
                                                                                       "count": len(expected)}
    loaded = run("load", dst, "--batch-bytes", "4096", stdin=dump.stdout)
    assert loaded.returncode == 0 and loaded.stderr == b""
    assert out(loaded).startswith(f"loaded {len(expected):,} pairs in ")
    assert int(out(loaded).split(" in ")[1].split()[0]) > 1  # bounded transactions
    with KV.open(dst, Config(read_only=True)) as kv:
        assert dict(kv.scan()) == expected
    again = run("dump", dst).stdout.splitlines()
    assert again[1:] == dump.stdout.splitlines()[1:]  # the header's sequence is each database's own


def test_dump_and_load_keep_expiries_and_drop_what_expired(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    now = time.time()
    with KV.open(src, SMALL, clock=lambda: now) as kv:
        kv.set(b"lasting", b"1")
        kv.set(b"day", b"2", ttl=86400)
        kv.set(b"past", b"3", ttl=1e-3)  # expired by the time the dump reads it
    dump = run("dump", src)
    assert dump.returncode == 0 and dump.stderr == b""
    lines = [json.loads(line) for line in dump.stdout.splitlines()]
    assert lines[0]["version"] == 2 and lines[-1] == {"end": True, "count": 2}
    assert lines[1:3] == [{"key": "ZGF5", "value": "Mg==", "expires": now + 86400},  # "day", exactly as stored
                          {"key": "bGFzdGluZw==", "value": "MQ=="}]
    dump_file = tmp_path / "dump.jsonl"
    dump_file.write_bytes(dump.stdout.replace(b'"value": "MQ=="}', b'"value": "MQ==", "expires": 1000.5}'))
    loaded = run("load", dst, "-i", dump_file)
    assert loaded.returncode == 0, loaded.stderr
    assert out(loaded) == "loaded 1 pair in 1 transaction; skipped 1 pair whose expiry had passed\n"
    with KV.open(dst, Config(read_only=True)) as kv:
        assert dict(kv.scan()) == {b"day": b"2"}
        left = kv.ttl(b"day")
        assert left is not None and 86400 - 1 < left + (time.time() - now) < 86400 + 60  # expires as in src


def test_dump_to_a_file_and_load_from_it(db: Path, tmp_path: Path) -> None:
    file = tmp_path / "db.jsonl"
    result = run("dump", db, "-o", file)
    assert result.returncode == 0 and out(result).startswith("dumped 300 pairs at sequence ")
    assert run("load", tmp_path / "copy", "-i", file).returncode == 0
    assert run("dump", tmp_path / "copy").stdout.splitlines()[1:] == file.read_bytes().splitlines()[1:]


def test_load_of_a_cut_short_dump_exits_2_and_says_what_was_committed(db: Path, tmp_path: Path) -> None:
    text = run("dump", db).stdout
    cut = b"".join(text.splitlines(keepends=True)[:-1])  # no end line
    result = run("load", tmp_path / "copy", "--batch-bytes", "1000", stdin=cut)
    assert result.returncode == 2
    line = err_line(result)
    assert "without its end line" in line and "were committed before it" in line
    committed = int(line.split("; ")[-1].split()[0].replace(",", ""))
    with KV.open(tmp_path / "copy", Config(read_only=True)) as kv:
        assert len(list(kv.scan())) == committed < 300


@pytest.mark.parametrize(("text", "message"), [
    (b"", "empty"),
    (b'{"format": "other"}\n', "not a kvstore dump header"),
    (b'{"format": "kvstore-dump", "version": 3}\n', "version 3"),
    (b'{"format": "kvstore-dump", "version": 1}\n{"key": "!!", "value": ""}\n', "line 2: 'key' is not base64"),
    (b'{"format": "kvstore-dump", "version": 1}\nnot json\n', "line 2: not JSON"),
    (b'{"format": "kvstore-dump", "version": 1}\n{"end": true, "count": 3}\n', "says 3 pairs"),
    (b'{"format": "kvstore-dump", "version": 1}\n{"end": true, "count": 0}\n{}\n', "line 3: text after"),
], ids=["empty", "foreign", "newer", "bad-base64", "not-json", "wrong-count", "after-end"])
def test_load_rejects_what_is_not_a_whole_dump(tmp_path: Path, text: bytes, message: str) -> None:
    result = run("load", tmp_path / "db", stdin=text)
    assert result.returncode == 2
    assert message in err_line(result)


def test_load_of_a_missing_input_file_is_a_usage_error(tmp_path: Path) -> None:
    result = run("load", tmp_path / "db", "-i", tmp_path / "nope.jsonl")
    assert result.returncode == 2 and "cannot read" in err_line(result)


def test_sample_dump_in_examples_loads(tmp_path: Path) -> None:
    result = run("load", tmp_path / "demo", "-i", ROOT / "examples" / "sample.jsonl")
    assert result.returncode == 0, result.stderr
    assert out(run("scan", tmp_path / "demo", "--prefix", "city:", "--limit", "1", "--keys-only")).startswith("city:")


# ---------------------------------------------------------------------- stats, check, compact


def test_stats_shows_tables_newest_first_and_json_matches_the_library(db: Path) -> None:
    with KV.open(db, Config(read_only=True)) as kv:
        stats = kv.stats()
    text = out(run("stats", db))
    names = [line.split()[0] for line in text.splitlines() if line.startswith("  ")]
    assert names == [t.name for t in stats.tables]
    assert f"sequence      {stats.sequence:,}" in text and "memtable      1 entries" in text
    tree = json.loads(out(run("stats", db, "--json")))
    assert [t["name"] for t in tree["tables"]] == names
    assert [base64.b64decode(t["smallest"]) for t in tree["tables"]] == [t.smallest for t in stats.tables]
    assert tree["memtable"]["entries"] == 1 and tree["wal_bytes"] > 0
    assert tree["write_amplification"] is None  # nothing written by that process


def test_check_of_a_healthy_database_prints_ok(db: Path) -> None:
    result = run("check", db)
    assert (result.returncode, out(result), result.stderr) == (0, "OK\n", b"")
    assert json.loads(out(run("check", db, "--json"))) == {"path": str(db), "ok": True, "problems": []}


def _first_table(path: Path) -> Path:
    return sorted(path.glob("*.sst"))[0]


def test_check_of_a_corrupted_table_exits_1_and_names_the_file(db: Path) -> None:
    table = _first_table(db)
    data = bytearray(table.read_bytes())
    data[30] ^= 0xFF  # inside the first data block
    table.write_bytes(bytes(data))
    result = run("check", db)
    assert result.returncode == 1 and result.stderr == b""
    lines = out(result).splitlines()
    assert lines[-1] == "1 problem"
    assert str(table) in lines[0] and "checksum" in lines[0]
    tree = json.loads(out(run("check", db, "--json")))
    assert tree["ok"] is False and str(table) in tree["problems"][0]


def test_check_of_a_table_that_does_not_open_exits_1_and_names_it(db: Path) -> None:
    table = _first_table(db)
    data = bytearray(table.read_bytes())
    data[-3] ^= 0xFF  # the footer's checksum
    table.write_bytes(bytes(data))
    result = run("check", db)
    assert result.returncode == 1
    assert str(table) in out(result) and out(result).endswith("1 problem\n")
    other = run("get", db, "k001")  # every other command refuses the database
    assert other.returncode == 4 and str(table) in err_line(other)


def test_compact_full_reports_sizes_before_and_after(db: Path) -> None:
    result = run("compact", db, "--full")
    assert result.returncode == 0 and result.stderr == b""
    before, after = out(result).splitlines()
    assert before.startswith("before  ") and after.startswith("after   1 table, 0 memtable entries, ")
    assert after.endswith("%")
    with KV.open(db, Config(read_only=True)) as kv:
        assert len(kv.stats().tables) == 1 and kv.get(b"late") == b"1" and kv.get(b"k007") is None


def test_compact_by_policy_keeps_every_pair(db: Path) -> None:
    with KV.open(db, Config(read_only=True)) as kv:
        expected = dict(kv.scan())
    result = run("compact", db)
    assert result.returncode == 0 and out(result).startswith("before  ")
    with KV.open(db, Config(read_only=True)) as kv:
        assert dict(kv.scan()) == expected and kv.check() == []
        assert kv.stats().memtable_entries == 0  # closed: the memtable went to a table


# ---------------------------------------------------------------------- backup


def test_backup_writes_a_copy_that_opens_with_every_pair(db: Path, tmp_path: Path) -> None:
    with KV.open(db, Config(read_only=True)) as kv:
        expected = dict(kv.scan())
        tables = [t.name for t in kv.stats().tables]
    result = run("backup", db, tmp_path / "copy")
    assert result.returncode == 0 and result.stderr == b""
    assert f"({len(tables)} linked, 0 copied, 1 written from the memtable)" in out(result)
    with KV.open(tmp_path / "copy", Config(read_only=True)) as copy:
        assert dict(copy.scan()) == expected
    assert out(run("check", tmp_path / "copy")) == "OK\n"


def test_backup_refuses_a_destination_that_is_not_empty(db: Path, tmp_path: Path) -> None:
    (tmp_path / "copy").mkdir()
    (tmp_path / "copy" / "x").write_bytes(b"")
    result = run("backup", db, tmp_path / "copy")
    assert result.returncode == 2 and "not an empty directory" in err_line(result)
    assert os.listdir(tmp_path / "copy") == ["x"]


# ---------------------------------------------------------------------- locks


def test_a_locked_database_exits_3(db: Path) -> None:
    with KV.open(db, SMALL):
        for command in (["get", "k001"], ["put", "k", "v"], ["scan"], ["check"], ["shell"]):
            result = run(command[0], db, *command[1:], stdin=b"")
            assert result.returncode == 3, command
            assert "locked" in err_line(result)


# ---------------------------------------------------------------------- inspect


def test_inspect_wal_shows_frames_and_calls_a_torn_tail_by_its_name(db: Path) -> None:
    log = sorted(db.glob("*.log"))[-1]
    result = run("inspect", "wal", log)
    assert result.returncode == 0 and result.stderr == b""
    text = out(result)
    assert "header    magic KVWL  version 3" in text and "set    late = 1" in text
    with open(log, "ab") as f:
        f.write(b"\x01\x02\x03")  # half a frame header: what a crash mid-append leaves
    result = run("inspect", "wal", log)
    assert result.returncode == 4 and "1 problem" in err_line(result)
    assert "a torn tail" in out(result)
    tree = json.loads(out(run("inspect", "wal", log, "--json")))
    assert tree["damage"]["torn_tail"] is True
    assert base64.b64decode(tree["frames"][-1]["writes"][0]["key"]) == b"late"


def test_inspect_sst_shows_blocks_properties_and_a_damaged_block(db: Path) -> None:
    table = _first_table(db)
    tree = json.loads(out(run("inspect", "sst", table, "--json", "--entries")))
    assert tree["problems"] == [] and tree["header"]["magic"] == "KVST"
    entries = [e for b in tree["blocks"] for e in b["entries"]]
    assert len(entries) == tree["properties"]["entries"] == sum(b["count"] for b in tree["blocks"])
    text = out(run("inspect", "sst", table))
    assert "props " in text and "bloom " in text and "block 0   @20" in text
    data = bytearray(table.read_bytes())
    data[30] ^= 0xFF
    table.write_bytes(bytes(data))
    result = run("inspect", "sst", table)
    assert result.returncode == 4
    assert "block 0   @20" in out(result) and "BAD" in out(result) and "block 1 " in out(result)


def test_inspect_meta_says_which_slot_is_newest_and_which_is_invalid(db: Path) -> None:
    tree = json.loads(out(run("inspect", "meta", db, "--json")))
    newest = [s["name"] for s in tree["slots"] if s["newest"]]
    assert newest == [tree["newest"]] and all(s["valid"] for s in tree["slots"])
    older = next(s for s in tree["slots"] if not s["newest"])
    (db / older["name"]).write_bytes(b"garbage")
    result = run("inspect", "meta", db)
    assert result.returncode == 4
    assert f"{older['name']}     INVALID" in out(result) and "<- newest" in out(result)


def test_inspect_of_a_missing_file_exits_4(tmp_path: Path) -> None:
    result = run("inspect", "sst", tmp_path / "000001.sst")
    assert result.returncode == 4 and "No such file" in err_line(result)


# ---------------------------------------------------------------------- shell


def test_shell_driven_through_stdin(tmp_path: Path) -> None:
    script = "\n".join([
        "# a comment",
        r"put a\x00 one",
        'put "b key" two',
        r"get a\x00",
        "get missing",
        "begin",
        "put c three",
        "get c",
        "abort",
        "get c",
        "begin",
        "del a\\x00",
        "put d four",
        "commit",
        "scan",
        "scan --keys-only --reverse --limit 1",
        "del nope",
        "put e 5",
        "put f 6",
        "begin",
        "delete-range d f",
        "scan --keys-only",
        "commit",
        "delete-range z a",
        "scan --keys-only",
        "",
    ])
    result = run("shell", tmp_path / "db", stdin=script.encode())
    assert result.returncode == 0, result.stderr
    assert out(result).splitlines() == ["one", "three", "deleted 1 of 1", "b key\ttwo", "d\tfour", "d",
                                        "deleted 0 of 1", "deleted [d, f)", "b key", "f",
                                        "nothing deleted: START is not below END", "b key", "f"]
    assert result.stderr.decode().splitlines() == ["not found: missing", "not found: c"]


def test_shell_put_ttl_and_ttl(tmp_path: Path) -> None:
    script = ("put --ttl 3600 hour 1\nput --ttl=60 minute 2\nput plain 3\nttl hour\nttl minute\nttl plain\n"
              "ttl nope\nput --ttl 0 bad 4\nbegin\nput --ttl 5 tx 5\nttl tx\ncommit\nscan --keys-only\n")
    result = run("shell", tmp_path / "db", stdin=script.encode())
    assert result.returncode == 1  # the bad ttl
    lines = out(result).splitlines()
    assert 3590 < float(lines[0]) <= 3600 and 50 < float(lines[1]) <= 60
    assert lines[2:] == ["does not expire", "5.000", "hour", "minute", "plain", "tx"]  # in a tx: all of it
    assert result.stderr.decode().splitlines() == [
        "not found: nope", "error: --ttl must be a finite number of seconds above 0, got '0'"]
    with KV.open(tmp_path / "db", Config(read_only=True)) as kv:
        assert kv.ttl(b"plain") is None and 0 < (kv.ttl(b"tx") or 0) <= 5


def test_shell_reports_errors_goes_on_and_exits_1(tmp_path: Path) -> None:
    script = "frob\nput onlykey\ncommit\nget bad\\q\nput ok 1\nbegin\nput pending 1\n"
    result = run("shell", tmp_path / "db", stdin=script.encode())
    assert result.returncode == 1
    errors = result.stderr.decode().splitlines()
    assert [e.split(":")[0] for e in errors[:4]] == ["error"] * 4
    assert errors[-1].startswith("the open transaction was aborted")
    with KV.open(tmp_path / "db", Config(read_only=True)) as kv:
        assert dict(kv.scan()) == {b"ok": b"1"}


def test_shell_stats_and_help(db: Path) -> None:
    result = run("shell", db, stdin=b"stats\nhelp\n")
    assert result.returncode == 0
    assert "sequence" in out(result) and "scan" in out(result)


def test_shell_read_only_refuses_writes(db: Path) -> None:
    result = run("shell", db, "--read-only", stdin=b"put x 1\nget k001\n")
    assert result.returncode == 1
    assert out(result) == "v1v1v1\n" and "read-only" in result.stderr.decode()


# ---------------------------------------------------------------------- the entry point


def test_console_script_entry_point_is_main(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["scripts"] == {"kvstore": "kvstore.cli:main"}
    assert main(["put", str(tmp_path / "db"), "k", r"v\x00"]) == 0
    assert main(["get", str(tmp_path / "db"), "k"]) == 0
    assert main(["get", str(tmp_path / "db"), "zz"]) == 1
    captured = capsys.readouterr()
    assert captured.out == "v\\x00\n"
    assert captured.err == "kvstore get: key zz not found\n"


def test_a_forwarded_command_gets_every_later_argument(monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from kvstore import cli

    seen: list[list[str]] = []

    def other_main(argv: list[str]) -> int:
        seen.append(argv)
        return 5

    monkeypatch.setitem(cli.FORWARDED, "other", ("another module's command", other_main))
    assert main(["other", "--flag", "x", "-h"]) == 5
    assert seen == [["--flag", "x", "-h"]]
    assert main(["--help"]) == 0
    assert "another module's command" in capsys.readouterr().out


def test_the_command_accepts_keys_and_values_up_to_the_format_limits() -> None:
    from kvstore.commands import open_config
    from kvstore.config import MAX_KEY_SIZE_CAP, MAX_VALUE_SIZE_CAP

    for write in (False, True):
        config = open_config(write=write, create=write)
        assert (config.max_key_size, config.max_value_size) == (MAX_KEY_SIZE_CAP, MAX_VALUE_SIZE_CAP)
        assert config.read_only is not write and config.create_if_missing is write


def _pty_stderr(args: list[str], stdin: bytes) -> Iterator[bytes]:
    master, slave = os.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "kvstore", *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=slave, env=ENV)
    os.close(slave)
    proc.communicate(stdin, timeout=120)
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the terminal's other side is closed and drained
            break
        if not chunk:
            break
        yield chunk
    os.close(master)


def test_load_draws_progress_only_when_stderr_is_a_terminal(db: Path, tmp_path: Path) -> None:
    dump = run("dump", db).stdout
    assert run("load", tmp_path / "quiet", stdin=dump).stderr == b""
    drawn = b"".join(_pty_stderr(["load", str(tmp_path / "loud")], dump))
    assert b"\rloading" in drawn


def test_readme_command_line_block_runs(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Command line", 1)[1]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    script = f'kvstore() {{ "{sys.executable}" -m kvstore "$@"; }}\nset -eo pipefail\n{block}'
    result = subprocess.run(["bash", "-c", script], cwd=ROOT, capture_output=True, env={**ENV, "TMPDIR": str(tmp_path)},
                            timeout=300)
    assert result.returncode == 0, result.stderr.decode()
    text = out(result)
    assert "city:amsterdam\t" in text and "two\\nlines\n" in text and "a\t1\n" in text and "<- newest" in text
    assert result.stderr == b""


def test_shell_on_a_terminal_prompts_and_keeps_a_history(tmp_path: Path) -> None:
    master, slave = os.openpty()
    history = tmp_path / "history"
    proc = subprocess.Popen([sys.executable, "-m", "kvstore", "shell", str(tmp_path / "db")], stdin=slave,
                            stdout=slave, stderr=slave, env={**ENV, "KVSTORE_HISTORY": str(history)})
    os.close(slave)
    os.write(master, b"put k v\rbegin\rget k\rabort\rquit\r")
    chunks: list[bytes] = []
    while True:
        ready, _, _ = select.select([master], [], [], 60)  # a guard against a shell that never ends
        if not ready:
            proc.kill()
            pytest.fail(f"the shell stopped answering: {b''.join(chunks)!r}")
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the other side is closed and drained
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    assert proc.wait(timeout=60) == 0
    shown = b"".join(chunks).decode()
    assert "kvstore> " in shown and "kvstore (tx)> " in shown
    assert history.read_text().splitlines() == ["put k v", "begin", "get k", "abort", "quit"]
