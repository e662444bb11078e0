"""What one open KV counts, and its Prometheus text (``KV.metrics_text()``; DESIGN.md, "Metrics").

    >>> lat = Latency()
    >>> lat.counts[(1500 - 1).bit_length()] += 1; lat.sum_ns += 1500   # as the hot paths observe, inline
    >>> lat.count, lat.sum_ns
    (1, 1500)

Latencies are histograms with power-of-two buckets in nanoseconds: an
observation of ``ns`` nanoseconds adds one to ``counts[(ns - 1).bit_length()]``,
the bucket ``i`` of durations above ``2 ** (i - 1)`` and at most ``2 ** i`` ns.
That is one C call and one list store, cheap enough for every ``get``; the
text turns the buckets into Prometheus' cumulative ``le`` buckets from
1.024 µs to 68.7 s.

Hot paths update counts without a lock.  Under CPython's global interpreter
lock, ``x += 1`` on a list item or a slot with an int runs without a thread
switch between its load and its store (no eval-breaker check between them),
so no increment is lost and no count ever goes back.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

__all__ = ["BUCKETS", "SAMPLE", "Latency", "Metrics", "exposition", "families"]

#: Index past the largest bucket: durations of 2**63 ns and more share the last one.
BUCKETS = 64
#: Gets and commits are timed one in 32: every 32nd call of ``KV.get``, and a commit that starts when the last
#: sequence has the low bits ``SAMPLE - 1`` clear, besides every durable commit.  Timing a call costs two
#: clock reads and a bucket, some 4,500 instructions against 33,000 for a cached ``get``; so sampled, the
#: metrics cost a get and a set about 2% (DESIGN.md, "Metrics").
SAMPLE = 32
#: The ``le`` bounds the text shows, as powers of two in ns: 2**10 ns (1.024 µs) to 2**36 ns (68.7 s).
_SHOWN = range(10, 37)


class Latency:
    """One latency histogram: ``counts[i]`` observations above ``2 ** (i - 1)`` and at most ``2 ** i``
    nanoseconds, and the sum of every observation in nanoseconds."""

    __slots__ = ("counts", "sum_ns")

    def __init__(self) -> None:
        self.counts = [0] * (BUCKETS + 1)
        self.sum_ns = 0

    def observe(self, ns: int) -> None:
        """Add one observation of ``ns`` nanoseconds (the paths that are not hot call this)."""
        self.counts[min((ns - 1).bit_length(), BUCKETS)] += 1
        self.sum_ns += ns

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, int]]:
        """(``le`` bound in seconds as text, observations at or below it), the last bound ``+Inf``."""
        counts = list(self.counts)  # one copy: hot paths go on adding meanwhile
        out = []
        below = sum(counts[: _SHOWN[0] + 1])
        for bits in _SHOWN:
            out.append((_float(2.0**bits / 1e9), below))
            below += counts[bits + 1]
        out.append(("+Inf", sum(counts)))
        return out


class Metrics:
    """The counters of one open KV that ``Stats`` does not keep elsewhere, and its latency histograms."""

    __slots__ = ("countdown", "timed", "get", "commit", "fsync", "flush", "merge", "conflicts", "user_bytes",
                 "engine_bytes", "first_seq")

    def __init__(self) -> None:
        # ``KV.get`` counts down from ``SAMPLE`` (small ints: no allocation) and times the get that reaches 0
        self.countdown = SAMPLE
        self.timed = 0  # gets timed: each ``SAMPLE``-th call
        self.get = Latency()  # one ``KV.get`` in ``SAMPLE``, timed
        self.commit = Latency()  # commits that succeeded (every durable one, about one in ``SAMPLE`` of the rest)
        self.first_seq = 0  # the last sequence when the KV opened: commits since are the sequences after it
        self.fsync = Latency()  # each fsync of a log
        self.flush = Latency()  # each memtable flush
        self.merge = Latency()  # each merge
        self.conflicts = 0  # commits refused with ConflictError
        self.user_bytes = 0  # bytes of keys and values committed (under the KV's ``_lock``)
        self.engine_bytes = 0  # bytes the engine wrote: logs, tables and meta slots (under the KV's ``_lock``)

    def gets(self) -> int:
        """Calls of ``KV.get`` so far: ``SAMPLE`` per timed one, and those counted down since the last."""
        return self.timed * SAMPLE + SAMPLE - self.countdown


def _float(value: float) -> str:
    """A sample value as the text format writes it."""
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


#: (name, help, type, value): a family with one sample; a ``Latency`` for a histogram.
Family = tuple[str, str, str, Any]


def exposition(families: Iterable[Family]) -> str:
    """The Prometheus text exposition format (version 0.0.4) of ``families``, names prefixed ``kvstore_``
    (a counter's also suffixed ``_total``): a ``# HELP`` and a ``# TYPE`` line each, then its sample, or a
    histogram's cumulative ``_bucket`` samples, ``_sum`` (seconds) and ``_count``."""
    lines: list[str] = []
    for name, text, kind, value in families:
        full = "kvstore_" + name + ("_total" if kind == "counter" else "")
        lines.append(f"# HELP {full} {_help(text)}")
        lines.append(f"# TYPE {full} {kind}")
        if kind == "histogram":
            assert isinstance(value, Latency)
            buckets = value.cumulative()
            for le, count in buckets:
                lines.append(f'{full}_bucket{{le="{le}"}} {count}')
            lines.append(f"{full}_sum {_float(value.sum_ns / 1e9)}")
            lines.append(f"{full}_count {buckets[-1][1]}")
        else:
            lines.append(f"{full} {_float(value)}")
    return "\n".join(lines) + "\n"


def _help(text: str) -> str:
    """A HELP text escaped as the format asks (backslash and line feed)."""
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def families(stats: Any, metrics: Metrics) -> list[Family]:
    """Every family ``KV.metrics_text()`` shows, from ``stats`` (a ``stats.Stats`` taken now, without its
    collections) and ``metrics``."""
    return [
        ("gets", "Calls of KV.get since open.", "counter", stats.gets),
        ("commits", "Commits that succeeded since open: transactions and one-operation writes.", "counter",
         stats.commits),
        ("conflicts", "Commits refused with ConflictError since open.", "counter", stats.conflicts),
        ("user_bytes_written", "Bytes of keys and values committed since open.", "counter", stats.user_bytes),
        ("engine_bytes_written", "Bytes the engine wrote since open: logs, tables and meta slots.", "counter",
         stats.bytes_written),
        ("flushes", "Memtables written to tables since open.", "counter", stats.flushes),
        ("merges", "Merges of tables since open.", "counter", stats.merges),
        ("cache_hits", "Block reads the block cache answered since open.", "counter", stats.cache_hits),
        ("cache_misses", "Block reads that went to the file since open.", "counter", stats.cache_misses),
        ("write_stalls", "Commits that waited for a flush since open.", "counter", stats.write_stalls),
        ("write_stall_seconds", "Seconds commits waited for flushes since open.", "counter", stats.stall_seconds),
        ("bloom_negatives", "Table lookups a bloom filter ruled out since open.", "counter", stats.bloom_negatives),
        ("bloom_false_positives", "Table lookups a bloom filter passed for a key the table lacks, since open.",
         "counter", stats.bloom_false_positives),
        ("expired_entries_dropped", "Expired versions flushes and merges dropped since open.", "counter",
         stats.expired),
        ("tables", "Live tables.", "gauge", len(stats.tables)),
        ("table_bytes", "Bytes of the live tables.", "gauge", sum(t.bytes for t in stats.tables)),
        ("memtable_bytes", "Bytes of keys and values in the memtable and the frozen memtables.", "gauge",
         stats.memtable_bytes),
        ("immutable_memtables", "Frozen memtables waiting for their flush.", "gauge", stats.immutable_memtables),
        ("live_snapshots", "Readers holding a snapshot: scans, cursors, transactions, backups.", "gauge",
         stats.live_snapshots),
        ("oldest_snapshot_age_seconds", "Seconds since the oldest live snapshot was taken; 0 when none is.",
         "gauge", stats.oldest_snapshot_age or 0.0),
        ("disk_bytes", "Bytes of the database's files in its directory.", "gauge", stats.disk_bytes),
        ("wal_bytes", "Bytes of the log commits are appended to.", "gauge", stats.wal_bytes),
        ("sequence", "The last sequence number published.", "gauge", stats.sequence),
        ("failed", "1 once an I/O error stopped the KV's writes, else 0.", "gauge", int(stats.failed is not None)),
        ("get_seconds", f"Latency of KV.get, one call in {SAMPLE} timed.", "histogram", metrics.get),
        ("commit_seconds", f"Latency of commits that succeeded, from the call to its return: every durable one, "
         f"about one in {SAMPLE} of the others.", "histogram", metrics.commit),
        ("fsync_seconds", "Latency of each fsync of the log.", "histogram", metrics.fsync),
        ("flush_seconds", "Latency of each memtable flush.", "histogram", metrics.flush),
        ("merge_seconds", "Latency of each merge.", "histogram", metrics.merge),
    ]
