"""The command line and collections: ``--collection NAME`` on the key commands, dump and load, and
``kvstore collections`` (real processes, as tests/test_cli.py runs them)."""

from __future__ import annotations

import json
from pathlib import Path

from cliproc import err_line, out, run

from kvstore import KV


def test_key_commands_work_in_a_collection_of_their_own(tmp_path: Path) -> None:
    db = tmp_path / "db"
    assert run("put", db, "k", "own").returncode == 0
    assert run("put", "--collection", "users", db, "k", "user").returncode == 0
    assert run("put", "--collection", "users", db, "t", "x", "--ttl", "100").returncode == 0
    assert out(run("get", db, "k")) == "own\n"
    assert out(run("get", "--collection", "users", db, "k")) == "user\n"
    assert float(out(run("ttl", "--collection", "users", db, "t"))) <= 100
    assert out(run("scan", "--collection", "users", db)) == "k\tuser\nt\tx\n"
    assert out(run("scan", db)) == "k\town\n"
    assert out(run("collections", db)) == "users\n"
    assert out(run("delete", "--collection", "users", db, "k", "nope")) == "deleted 1 of 2 keys\n"
    assert run("delete-range", "--collection", "users", db, "a", "z").returncode == 0
    assert out(run("collections", db)) == ""
    assert out(run("get", db, "k")) == "own\n"
    missing = run("get", "--collection", "users", db, "k")
    assert missing.returncode == 1 and "not found" in err_line(missing)


def test_a_bad_collection_name_is_a_usage_error(tmp_path: Path) -> None:
    db = tmp_path / "db"
    run("put", db, "k", "v")
    result = run("get", "--collection", "", db, "k")
    assert result.returncode == 2 and "--collection" in err_line(result)
    result = run("put", "--collection", "n" * 256, db, "k", "v")
    assert result.returncode == 2 and "255" in err_line(result)


def test_dump_and_load_carry_collections(tmp_path: Path) -> None:
    src, dst, one = tmp_path / "src", tmp_path / "dst", tmp_path / "one"
    run("put", src, "k", "own")
    run("put", "--collection", "users", src, "k", "user")
    run("put", "--collection", "tags", src, "a", "tag")
    dump = run("dump", src)
    lines = [json.loads(line) for line in out(dump).splitlines()]
    assert lines[0]["version"] == 3 and lines[-1] == {"end": True, "count": 3}
    assert [line.get("collection") for line in lines[1:-1]] == [None, "tags", "users"]
    assert run("load", dst, stdin=dump.stdout).returncode == 0
    assert out(run("collections", dst)) == "tags\nusers\n"
    assert out(run("get", "--collection", "users", dst, "k")) == "user\n"
    users = run("dump", "--collection", "users", src)
    assert [json.loads(line).get("collection") for line in out(users).splitlines()[1:-1]] == ["users"]
    assert run("load", "--collection", "copy", one, stdin=users.stdout).returncode == 0
    assert out(run("collections", one)) == "copy\n" and out(run("scan", one)) == ""


def test_stats_and_inspect_show_keys_by_their_collection(tmp_path: Path) -> None:
    db = tmp_path / "db"
    with KV.open(db) as kv:
        kv.set(b"a", b"own")
        kv.collection("users").set(b"bob", b"user")
        kv.collection("tags").set(b"x", b"tag")
        kv.flush()
        kv.set(b"\xffown", b"escaped when stored")  # stored FF 00 'own': shown as the key it is
        kv.drop_collection("tags")
        kv.flush()
    stats = out(run("stats", db)).splitlines()
    assert any("keys a .. [users] bob" in line for line in stats), stats
    assert any("keys \\xffown .. \\xffown" in line for line in stats), stats
    assert "collections   1 holding keys" in stats
    assert any(line.split()[:3] == ["users", "1", "key"] and line.endswith("(counted)") for line in stats), stats
    tree = json.loads(out(run("stats", "--json", db)))
    assert tree["collections"] == [{"name": "users", "keys": 1, "bytes": len(b"\xff\x05usersbob") + 4, "exact": True}]
    older, newest = sorted(db.glob("*.sst"))
    assert "keys a .. [users] bob" in out(run("inspect", "sst", older))
    shown = out(run("inspect", "sst", "--entries", newest))
    assert "range     [[tags], [tagt]) deleted at" in shown, shown
    assert "    \\xffown @" in shown, shown
