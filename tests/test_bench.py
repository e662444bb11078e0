"""The benchmark (kvstore/bench.py), run small: output shape, JSON figures, and that every workload did its work.

Timings are never asserted: speed is what the benchmark measures, not what a test checks.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import runpy
import subprocess
import sys
from typing import Any

import pytest

from kvstore import bench
from kvstore.chunks import chunks_of
from kvstore.merge import merge_chunks

ROOT = pathlib.Path(__file__).resolve().parent.parent
NUM = 2000
LINE = re.compile(r"^(?P<name>\w+)\s+:\s+(?P<us>\d+\.\d{3}) micros/op;( +\d+\.\d MB/s)?$")
FIGURES = {"ops", "secs", "micros_per_op", "ops_per_sec", "mb_per_sec", "ok"}
# ops each workload must have done with --num 2000
OPS = {"fillseq": NUM, "fillrandom": NUM, "overwrite": NUM, "readrandom": NUM, "readmissing": NUM,
       "readseq": NUM, "readreverse": NUM, "seekrandom": NUM // 10, "fillsync": NUM // 100,
       "concurrent_sync": bench.THREADS * (NUM // 400),
       "concurrent_async": bench.COROUTINES * max(1, NUM // (400 * bench.COROUTINES // bench.THREADS))}


def _run(tmp_path: pathlib.Path, *args: str) -> tuple[int, dict[str, Any]]:
    """bench.main's exit status and the JSON it wrote."""
    out = tmp_path / "out.json"
    status = bench.main(["--num", str(NUM), "--json", str(out), *args])
    return status, json.loads(out.read_text())


def test_bench_every_workload_does_its_ops_and_reports_them(tmp_path: pathlib.Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    status, doc = _run(tmp_path)
    assert status == 0
    assert set(bench.WORKLOADS) == set(OPS)
    assert doc["num"] == NUM and doc["benchmarks"] == list(bench.WORKLOADS)
    res = doc["results"]["kvstore"]
    for name, ops in OPS.items():
        figures = res["workloads"][name]
        assert set(figures) >= FIGURES, name
        assert figures["ok"] and figures["ops"] == ops, (name, figures)
        assert figures["micros_per_op"] > 0
    assert res["workloads"]["readrandom"]["found"] == NUM  # every existing key found
    assert res["workloads"]["readmissing"]["found"] == 0  # no absent key found
    assert res["workloads"]["seekrandom"]["rows"] > 0
    assert res["write_amplification"] >= 1.0  # the WAL alone writes every user byte once
    assert res["disk_bytes"] > NUM * (bench.KEY_SIZE + 100) // 2
    assert res["reopen_ms"] > 0 and res["peak_rss_mib"] > 0
    assert "reopen_problem" not in res
    lines = capsys.readouterr().out.splitlines()
    shown = {m["name"] for m in map(LINE.match, lines) if m}
    assert shown == set(OPS)
    assert any(line.startswith("write amp") for line in lines)
    assert any(line.startswith("peak RSS") for line in lines)


def test_bench_compares_with_sqlite3_in_the_same_run(tmp_path: pathlib.Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    status, doc = _run(tmp_path, "--benchmarks", "fillrandom,readrandom,readseq,readreverse,seekrandom",
                          "--compare", "sqlite3")
    assert status == 0
    assert set(doc["results"]) == {"kvstore", "sqlite3"}
    for engine in ("kvstore", "sqlite3"):
        workloads = doc["results"][engine]["workloads"]
        assert set(workloads) == {"fillrandom", "readrandom", "readseq", "readreverse", "seekrandom"}
        assert all(f["ok"] for f in workloads.values()), workloads
        assert workloads["readrandom"]["found"] == NUM
    assert set(doc["ratios"]["sqlite3"]) == {"fillrandom", "readrandom", "readseq", "readreverse", "seekrandom"}
    assert all(r > 0 for r in doc["ratios"]["sqlite3"].values())
    out = capsys.readouterr().out
    assert "kvstore / sqlite3" in out and "[sqlite3]" in out


def test_bench_keeps_a_given_db_directory_and_removes_its_own(tmp_path: pathlib.Path) -> None:
    db = tmp_path / "db"
    assert bench.main(["--num", "500", "--benchmarks", "fillseq,readrandom", "--db", str(db)]) == 0
    assert (db / "kvstore" / "main" / "meta0").exists() and (db / "kvstore" / "fillseq").is_dir()
    before = set(os.listdir(os.environ.get("TMPDIR", "/tmp")))
    assert bench.main(["--num", "500", "--benchmarks", "fillseq"]) == 0
    after = set(os.listdir(os.environ.get("TMPDIR", "/tmp")))
    assert not {n for n in after - before if n.startswith("kvstore-bench-")}


@pytest.mark.parametrize("args", [["--benchmarks", "fillseq,nosuch"], ["--compare", "lmdb"], ["--num", "0"]],
                         ids=["unknown-workload", "unknown-engine", "no-keys"])
def test_bench_rejects_bad_arguments(args: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        bench.main(args)
    assert exc.value.code == 2


def test_bench_runs_as_a_module_and_writes_json_to_stdout(tmp_path: pathlib.Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "kvstore.bench", "--num", str(NUM), "--benchmarks",
                           "fillrandom,readrandom,readmissing", "--json", "-"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert [m["name"] for m in map(LINE.match, lines) if m] == ["fillrandom", "readrandom", "readmissing"]
    doc = json.loads(proc.stdout[proc.stdout.index("\n{") + 1 :])
    assert doc["results"]["kvstore"]["workloads"]["readrandom"]["found"] == NUM


def test_bench_runs_as_a_kvstore_subcommand(tmp_path: pathlib.Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "kvstore", "bench", "--num", str(NUM), "--benchmarks",
                           "fillseq,readseq,readreverse", "--compare", "sqlite3"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    names = [m["name"] for m in map(LINE.match, proc.stdout.splitlines()) if m]
    assert names[:3] == ["fillseq", "readseq", "readreverse"] and "sqlite3" in proc.stdout
    usage = subprocess.run([sys.executable, "-m", "kvstore", "bench", "--num", "zero"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=60)
    assert usage.returncode == 2 and usage.stderr.startswith("usage: kvstore bench")


def test_hot_paths_example_runs_every_operation_and_refuses_others(tmp_path: pathlib.Path) -> None:
    script = str(ROOT / "examples" / "hot_paths.py")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for op in ["get", "scan_row", "seek10", "cursor10", "set", "tx_commit", "delete", "fillseq"]:
        proc = subprocess.run([sys.executable, script, op, "5"], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 0, (op, proc.stderr)
    bad = subprocess.run([sys.executable, script, "nothing", "5"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "OP must be one of get" in bad.stderr


def test_merge_rounds_example_merges_each_shape_and_refuses_others(tmp_path: pathlib.Path) -> None:
    example = runpy.run_path(str(ROOT / "examples" / "merge_rounds.py"))
    for shape in example["SHAPES"]:
        newer, older = example["levels"](shape)
        expected = sorted({**dict(older), **dict(newer)}.items())
        got = [row for chunk in merge_chunks([chunks_of(iter(level), False, 8, 256) for level in (newer, older)])
               for row in chunk]
        assert got == expected, shape
    script = str(ROOT / "examples" / "merge_rounds.py")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    ok = subprocess.run([sys.executable, script, "sparse", "1"], cwd=tmp_path, env=env, capture_output=True,
                        text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run([sys.executable, script, "nothing", "1"], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 1 and "SHAPE must be one of sparse" in bad.stderr
