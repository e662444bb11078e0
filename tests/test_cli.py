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
from cliproc import BINARY_PAIRS, ENV, ROOT, SMALL, err_line, files_of, make_db, out, run

from kvstore import KV, Config
from kvstore.cli import main


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A database with tables, a memtable and a deleted key (``cliproc.make_db``)."""
    return make_db(tmp_path)


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
    before = files_of(db)
    for command in (["get", "late"], ["scan"], ["dump"], ["stats"], ["check"], ["inspect", "meta"]):
        if command[0] == "inspect":
            result = run(*command, db)
        else:
            result = run(command[0], db, *command[1:])
        assert result.returncode == 0, (command, result.stderr)
    assert files_of(db) == before


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
