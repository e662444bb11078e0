"""The dump format (kvstore.dumpfile): what write_dump writes, read_dump reads back or refuses by line, and
what load sets: each key's expiry kept, the keys expired by then skipped."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvstore import KV, Config
from kvstore.dumpfile import DumpError, LoadReport, expiries, load, read_dump, write_dump

CONFIG = Config(background=False, sync=False)


@given(st.dictionaries(st.binary(max_size=40), st.tuples(st.binary(max_size=80), st.none() | st.floats(
    allow_nan=False, allow_infinity=False))))
def test_read_dump_yields_exactly_what_write_dump_wrote(rows: dict[bytes, tuple[bytes, float | None]]) -> None:
    text = io.StringIO()
    pairs = sorted((k, v) for k, (v, _) in rows.items())
    assert write_dump(pairs, text, sequence=7, expiries=lambda key: rows[key][1]) == len(rows)
    assert list(read_dump(io.StringIO(text.getvalue()))) == sorted((k, v, t, None) for k, (v, t) in rows.items())


def test_a_dump_is_a_header_pairs_in_base64_and_an_end_line() -> None:
    text = io.StringIO()
    write_dump([(b"\x00k", b"v"), (b"t", b"")], text, sequence=3, expiries={b"t": 1767225600.25}.get)
    assert text.getvalue().splitlines() == [
        '{"format": "kvstore-dump", "version": 3, "sequence": 3}',
        '{"key": "AGs=", "value": "dg=="}',
        '{"key": "dA==", "value": "", "expires": 1767225600.25}',
        '{"end": true, "count": 2}',
    ]


def test_a_version_1_dump_still_loads(tmp_path: Path) -> None:
    lines = ['{"format": "kvstore-dump", "version": 1, "sequence": 4}', '{"key": "YQ==", "value": "MQ=="}',
             '{"key": "Yg==", "value": ""}', '{"end": true, "count": 2}']
    assert list(read_dump(lines)) == [(b"a", b"1", None, None), (b"b", b"", None, None)]
    report = LoadReport()
    with KV.open(tmp_path / "db", CONFIG) as kv:
        load(kv, read_dump(lines), report, batch_bytes=1 << 20)
        assert dict(kv.scan()) == {b"a": b"1", b"b": b""} and kv.ttl(b"a") is None
    assert (report.pairs, report.transactions, report.expired) == (2, 1, 0)


@pytest.mark.parametrize(("version", "line", "message"), [
    (1, '{"key": "YQ==", "value": "MQ==", "expires": 5.0}', "holds exactly \"key\" and \"value\""),
    (2, '{"key": "YQ==", "value": "MQ==", "expires": "5"}', "'expires' must be a number"),
    (2, '{"key": "YQ==", "value": "MQ==", "expires": true}', "'expires' must be a number"),
    (2, '{"key": "YQ==", "value": "MQ==", "expires": NaN}', "finite"),
    (2, '{"key": "YQ==", "value": "MQ==", "expires": 1' + "0" * 400 + '}', "finite"),
    (2, '{"key": "YQ==", "value": "MQ==", "expire": 5.0}', "(and \"expires\" when the key expires)"),
], ids=["in-version-1", "string", "bool", "nan", "past-float", "misspelt"])
def test_read_dump_refuses_a_bad_expiry(version: int, line: str, message: str) -> None:
    lines = [f'{{"format": "kvstore-dump", "version": {version}}}', line, '{"end": true, "count": 1}']
    with pytest.raises(DumpError, match=r"<dump> line 2: ") as raised:
        list(read_dump(lines))
    assert message in str(raised.value)


def test_read_dump_yields_the_pairs_before_a_bad_line() -> None:
    lines = ['{"format": "kvstore-dump", "version": 1}', '{"key": "YQ==", "value": "MQ=="}', '{"key": 1}']
    got = []
    with pytest.raises(DumpError, match=r"<dump> line 3: a pair line holds exactly"):
        for pair in read_dump(lines):
            got.append(pair)
    assert got == [(b"a", b"1", None, None)]


def test_load_commits_bounded_transactions_and_reports_them_after_an_error(tmp_path: Path) -> None:
    def pairs() -> list[tuple[bytes, bytes, float | None, str | None]]:
        return [(b"k%03d" % i, b"x" * 10, None, None) for i in range(105)]

    def failing() -> Iterator[tuple[bytes, bytes, float | None, str | None]]:
        yield from pairs()  # the last 5 are in a transaction still open at the error: aborted
        raise DumpError("cut short")

    report = LoadReport()
    with KV.open(tmp_path / "db", CONFIG) as kv:
        with pytest.raises(DumpError):
            load(kv, failing(), report, batch_bytes=130)  # 10 pairs of 13 bytes per transaction
        assert (report.pairs, report.transactions) == (100, 10)
        assert len(list(kv.scan())) == 100
        report = LoadReport()
        load(kv, pairs()[:15], report, batch_bytes=130)
        assert (report.pairs, report.transactions) == (15, 2)


class Clock:
    """A clock a test moves by hand."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_dump_and_load_keep_each_expiry_and_skip_what_expired(tmp_path: Path) -> None:
    clock = Clock(1000.0)
    text = io.StringIO()
    with KV.open(tmp_path / "src", CONFIG, clock=clock) as kv:
        kv.set(b"lasting", b"1")
        kv.set(b"short", b"2", ttl=10)
        kv.set(b"long", b"3", ttl=100.5)
        kv.set(b"gone", b"4", ttl=5)
        clock.now = 1006.0  # "gone" has expired: the scan skips it
        write_dump(kv.scan(), text, sequence=kv.stats().sequence, expiries=expiries(kv))
    rows = list(read_dump(io.StringIO(text.getvalue())))
    assert rows == [(b"lasting", b"1", None, None), (b"long", b"3", 1100.5, None), (b"short", b"2", 1010.0, None)]
    report = LoadReport()
    loading = Clock(1050.0)  # later: "short" has expired since the dump
    with KV.open(tmp_path / "dst", CONFIG, clock=loading) as kv:
        load(kv, rows, report, batch_bytes=1 << 20)
        assert dict(kv.scan()) == {b"lasting": b"1", b"long": b"3"}
        assert kv.ttl(b"lasting") is None and kv.ttl(b"long") == 50.5  # the clock stood still: exactly
        loading.now = 1100.5
        assert kv.get(b"long") is None
    assert (report.pairs, report.transactions, report.expired) == (2, 1, 1)


def test_a_dump_where_nothing_expires_asks_no_expiry(tmp_path: Path) -> None:
    with KV.open(tmp_path / "db", CONFIG) as kv:
        kv.set(b"k", b"v")
        assert expiries(kv) is None  # write_dump then reads each key once, through the scan
        kv.set(b"t", b"v", ttl=60)
        expires = expiries(kv)
        assert expires is not None and expires(b"k") is None
        assert expires(b"t") == pytest.approx(time.time() + 60, abs=5)


def test_collections_are_dumped_with_their_name_and_load_back_into_them(tmp_path: Path) -> None:
    with KV.open(tmp_path / "src", Config(sync=False)) as kv:
        kv.set(b"own", b"1")
        kv.collection("users").set(b"own", b"2", ttl=1000)
        kv.collection("\u00e9t\u00e9").set(b"k", b"3")
        text = io.StringIO()
        sections = [(name, kv.collection(name).scan(), expiries(kv, name)) for name in kv.collections()]
        assert write_dump(kv.scan(), text, sequence=3, expiries=expiries(kv), collections=sections) == 3
    lines = text.getvalue().splitlines()
    assert json.loads(lines[2])["collection"] == "users" and "expires" in json.loads(lines[2])
    rows = list(read_dump(io.StringIO(text.getvalue())))
    assert [(k, v, c) for k, v, _, c in rows] == [(b"own", b"1", None), (b"own", b"2", "users"),
                                                  (b"k", b"3", "\u00e9t\u00e9")]
    with KV.open(tmp_path / "dst", Config(sync=False)) as kv:
        load(kv, iter(rows), LoadReport(), batch_bytes=1 << 20)
        assert kv.get(b"own") == b"1" and kv.collection("users").get(b"own") == b"2"
        left = kv.collection("users").ttl(b"own")
        assert left is not None and left <= 1000
        assert kv.collections() == ["users", "\u00e9t\u00e9"]  # by prefix: 05 'users' below 05 c3 a9 ...


@pytest.mark.parametrize(("version", "line"), [(2, '{"key": "YQ==", "value": "MQ==", "collection": "c"}'),
                                               (3, '{"key": "YQ==", "value": "MQ==", "collection": ""}'),
                                               (3, '{"key": "YQ==", "value": "MQ==", "collection": 7}')])
def test_read_dump_refuses_a_collection_it_cannot_hold(version: int, line: str) -> None:
    lines = [json.dumps({"format": "kvstore-dump", "version": version, "sequence": 1}), line,
             '{"end": true, "count": 1}']
    with pytest.raises(DumpError, match="line 2"):
        list(read_dump(lines))
