"""The ``kvstore`` command on a database and its files, run as a real process (``python -m kvstore``):
dump and load, stats, check, compact, backup, locks, and inspect of logs, tables and meta slots."""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path

import pytest
from cliproc import BINARY_PAIRS, ROOT, SMALL, err_line, first_table, make_db, out, run

from kvstore import KV, Config


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A database with tables, a memtable and a deleted key (``cliproc.make_db``)."""
    return make_db(tmp_path)


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
    assert lines[0]["version"] == 3 and lines[-1] == {"end": True, "count": 2}
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
    (b'{"format": "kvstore-dump", "version": 4}\n', "version 4"),
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


def test_check_of_a_corrupted_table_exits_1_and_names_the_file(db: Path) -> None:
    table = first_table(db)
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
    table = first_table(db)
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


def test_a_locked_database_exits_3(db: Path) -> None:
    with KV.open(db, SMALL):
        for command in (["get", "k001"], ["put", "k", "v"], ["scan"], ["check"], ["shell"]):
            result = run(command[0], db, *command[1:], stdin=b"")
            assert result.returncode == 3, command
            assert "locked" in err_line(result)


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
    table = first_table(db)
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

