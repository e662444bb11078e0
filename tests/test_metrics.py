"""``KV.metrics_text()``: the Prometheus text exposition format, parsed by the format's reference parser
(prometheus_client), with counters that count what happened and never decrease, well-formed histograms,
and gauges that follow the database."""

from __future__ import annotations

import random
import threading
from pathlib import Path
from typing import Any

import pytest
from cliproc import out, run
from prometheus_client.parser import text_string_to_metric_families

from kvstore import KV, ClosedError, Config, ConflictError
from kvstore.metrics import SAMPLE, Latency, exposition

CONFIG = Config(sync=False, background=False, memtable_size=1 << 14)
HISTOGRAMS = ("get_seconds", "commit_seconds", "fsync_seconds", "flush_seconds", "merge_seconds")


def parse(text: str) -> dict[str, Any]:
    """Every family by name: its type, help and samples {(sample name, labels): value}."""
    out = {}
    for family in text_string_to_metric_families(text):
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for s in family.samples}
        out[family.name] = {"type": family.type, "help": family.documentation, "samples": samples}
    return out


def counter(families: dict[str, Any], name: str) -> float:
    value: float = families[name]["samples"][(name + "_total", ())]
    return value


def gauge(families: dict[str, Any], name: str) -> float:
    value: float = families[name]["samples"][(name, ())]
    return value


def check_histogram(family: dict[str, Any], name: str) -> list[tuple[float, float]]:
    """The buckets of a histogram, checked well formed: ``le`` ascending and ending at +Inf, counts
    cumulative, the +Inf bucket equal to ``_count``, a ``_sum`` at least 0."""
    assert family["type"] == "histogram"
    buckets = sorted((float(dict(labels)["le"]), value) for (sample, labels), value in family["samples"].items()
                     if sample == name + "_bucket")
    assert buckets[-1][0] == float("inf") and len(buckets) > 10
    counts = [value for _, value in buckets]
    assert counts == sorted(counts), "buckets must be cumulative"
    assert buckets[-1][1] == family["samples"][(name + "_count", ())]
    assert family["samples"][(name + "_sum", ())] >= 0
    return buckets


def test_the_text_parses_with_help_and_type_for_every_family(tmp_path: Path) -> None:
    with KV.open(tmp_path, CONFIG) as kv:
        kv.set(b"k", b"v")
        text = kv.metrics_text()
    families = parse(text)
    assert all(name.startswith("kvstore_") for name in families)
    for name in families:
        assert f"# HELP {name}" in text and f"# TYPE {name}" in text, name
        assert families[name]["help"]
    kinds = {name: f["type"] for name, f in families.items()}
    for name in ("commits", "conflicts", "user_bytes_written", "engine_bytes_written", "flushes", "merges",
                 "cache_hits", "cache_misses", "write_stalls", "bloom_negatives", "bloom_false_positives"):
        assert kinds["kvstore_" + name] == "counter", name
    for name in ("tables", "memtable_bytes", "live_snapshots", "oldest_snapshot_age_seconds", "disk_bytes"):
        assert kinds["kvstore_" + name] == "gauge", name
    for name in HISTOGRAMS:
        check_histogram(families["kvstore_" + name], "kvstore_" + name)


def test_counters_count_what_happened(tmp_path: Path) -> None:
    with KV.open(tmp_path, Config(sync=True, background=False, memtable_size=1 << 14)) as kv:
        for i in range(500):
            kv.set(b"k%04d" % i, b"v" * 40)
        for i in range(3 * SAMPLE):
            kv.get(b"k%04d" % i)
        tx = kv.new_tx()
        tx.get(b"k0001")
        kv.set(b"k0001", b"changed")
        tx.set(b"k0002", b"x")
        with pytest.raises(ConflictError):
            tx.commit()
        kv.flush()
        kv.compact(full=True)
        families = parse(kv.metrics_text())
        stats = kv.stats()
    assert counter(families, "kvstore_commits") == 501 == stats.commits
    assert counter(families, "kvstore_conflicts") == 1 == stats.conflicts
    assert counter(families, "kvstore_gets") == 3 * SAMPLE == stats.gets
    assert counter(families, "kvstore_user_bytes_written") == stats.user_bytes > 500 * 45
    assert counter(families, "kvstore_engine_bytes_written") == stats.bytes_written > stats.user_bytes
    assert counter(families, "kvstore_flushes") == stats.flushes >= 1
    assert counter(families, "kvstore_merges") == stats.merges >= 1
    assert gauge(families, "kvstore_tables") == len(stats.tables) == 1
    assert gauge(families, "kvstore_disk_bytes") > 0
    get = check_histogram(families["kvstore_get_seconds"], "kvstore_get_seconds")
    assert get[-1][1] == 3  # every SAMPLE-th get is timed
    fsync = check_histogram(families["kvstore_fsync_seconds"], "kvstore_fsync_seconds")
    assert fsync[-1][1] >= 501  # a durable commit each: one fsync each
    commit = check_histogram(families["kvstore_commit_seconds"], "kvstore_commit_seconds")
    assert commit[-1][1] >= 501  # every durable commit is timed
    for name in ("flush", "merge"):
        assert check_histogram(families[f"kvstore_{name}_seconds"], f"kvstore_{name}_seconds")[-1][1] >= 1


def test_bloom_counters_count_negatives_and_false_positives(tmp_path: Path) -> None:
    rng = random.Random(7)
    with KV.open(tmp_path, Config(sync=False, background=False, bloom_bits_per_key=2)) as kv:
        for batch in range(3):  # three overlapping tables: every get of a key passes three filters
            for i in rng.sample(range(3000), 1000):
                kv.set(b"k%06d" % i, b"v%d" % batch)
            kv.flush()
        for i in range(3000, 5000):  # keys in every table's range, in none
            assert kv.get(b"k%06d" % i) is None
        stats = kv.stats()
    probes = 2000 * len(stats.tables)
    assert stats.bloom_negatives + stats.bloom_false_positives == probes
    assert 0 < stats.bloom_false_positives < probes / 2  # 2 bits a key: a filter passes a fair share


def test_counters_never_decrease_under_concurrent_work(tmp_path: Path) -> None:
    with KV.open(tmp_path, Config(sync=False, memtable_size=1 << 13)) as kv:
        stop = threading.Event()

        def work(seed: int) -> None:
            rng = random.Random(seed)
            while not stop.is_set():
                key = b"k%05d" % rng.randrange(20_000)
                kv.set(key, b"v" * rng.randrange(50)) if rng.random() < 0.5 else kv.get(key)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        try:
            last: dict[tuple[str, tuple[Any, ...]], float] = {}
            for _ in range(40):
                families = parse(kv.metrics_text())
                for name, family in families.items():
                    if family["type"] not in ("counter", "histogram"):
                        continue
                    for sample, value in family["samples"].items():
                        assert value >= last.get(sample, 0.0), (sample, value, last.get(sample))
                        last[sample] = value
                    if family["type"] == "histogram":
                        check_histogram(family, name)
        finally:
            stop.set()
            for t in threads:
                t.join()
    assert last[("kvstore_commits_total", ())] > 0 and last[("kvstore_gets_total", ())] > 0


def test_latency_buckets_hold_each_observation_at_or_below_its_bound() -> None:
    lat = Latency()
    for ns in (1, 1024, 1025, 2048, 10**6, 10**12):
        lat.observe(ns)
    families = parse(exposition([("x_seconds", "help", "histogram", lat)]))
    buckets = dict(check_histogram(families["kvstore_x_seconds"], "kvstore_x_seconds"))
    assert buckets[1.024e-06] == 2  # 1 ns and exactly 1024 ns: le is "at or below"
    assert buckets[2.048e-06] == 4
    assert buckets[0.001048576] == 5 and buckets[float("inf")] == 6
    assert families["kvstore_x_seconds"]["samples"][("kvstore_x_seconds_sum", ())] == pytest.approx(
        (1 + 1024 + 1025 + 2048 + 10**6 + 10**12) / 1e9)


def test_metrics_text_after_close_raises(tmp_path: Path) -> None:
    kv = KV.open(tmp_path, CONFIG)
    kv.close()
    with pytest.raises(ClosedError):
        kv.metrics_text()


def test_stats_prometheus_prints_the_metrics(tmp_path: Path) -> None:
    with KV.open(tmp_path, CONFIG) as kv:
        kv.set(b"k", b"v")
    result = run("stats", "--prometheus", tmp_path)
    families = parse(out(result))
    assert gauge(families, "kvstore_tables") == 1 and counter(families, "kvstore_commits") == 0  # a fresh open
    both = run("stats", "--prometheus", "--json", tmp_path)
    assert both.returncode == 2
