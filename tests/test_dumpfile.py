"""The dump format (kvstore.dumpfile): what write_dump writes, read_dump reads back or refuses by line."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvstore import KV, Config
from kvstore.dumpfile import DumpError, LoadReport, load, read_dump, write_dump

CONFIG = Config(background=False, sync=False)


@given(st.dictionaries(st.binary(max_size=40), st.binary(max_size=80)))
def test_read_dump_yields_exactly_what_write_dump_wrote(pairs: dict[bytes, bytes]) -> None:
    text = io.StringIO()
    assert write_dump(sorted(pairs.items()), text, sequence=7) == len(pairs)
    assert list(read_dump(io.StringIO(text.getvalue()))) == sorted(pairs.items())


def test_a_dump_is_a_header_pairs_in_base64_and_an_end_line() -> None:
    text = io.StringIO()
    write_dump([(b"\x00k", b"v")], text, sequence=3)
    assert text.getvalue().splitlines() == [
        '{"format": "kvstore-dump", "version": 1, "sequence": 3}',
        '{"key": "AGs=", "value": "dg=="}',
        '{"end": true, "count": 1}',
    ]


def test_read_dump_yields_the_pairs_before_a_bad_line() -> None:
    lines = ['{"format": "kvstore-dump", "version": 1}', '{"key": "YQ==", "value": "MQ=="}', '{"key": 1}']
    got = []
    with pytest.raises(DumpError, match=r"<dump> line 3: a pair line holds exactly"):
        for pair in read_dump(lines):
            got.append(pair)
    assert got == [(b"a", b"1")]


def test_load_commits_bounded_transactions_and_reports_them_after_an_error(tmp_path: Path) -> None:
    def pairs() -> list[tuple[bytes, bytes]]:
        return [(b"k%03d" % i, b"x" * 10) for i in range(105)]

    def failing() -> Iterator[tuple[bytes, bytes]]:
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
