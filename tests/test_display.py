"""Bytes as text (escaped and hex) and progress on a terminal, as the command line shows them."""

from __future__ import annotations

import ast
import io

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvstore.display import ESCAPED, HEX, Progress, Ticker, escape, human_bytes, moment, unescape, unhex


@given(st.binary())
def test_escape_round_trips_every_byte_string(data: bytes) -> None:
    assert unescape(escape(data)) == data


@given(st.binary())
def test_escape_is_the_body_of_a_python_bytes_literal(data: bytes) -> None:
    assert ast.literal_eval("b'" + escape(data) + "'") == data


@given(st.binary())
def test_escaped_text_is_printable_ascii_without_tabs_or_newlines(data: bytes) -> None:
    text = escape(data)
    assert all(0x20 <= ord(c) <= 0x7E for c in text)


@given(st.binary())
def test_hex_round_trips(data: bytes) -> None:
    assert HEX.parse(HEX.show(data)) == data
    assert ESCAPED.parse(ESCAPED.show(data)) == data


@pytest.mark.parametrize(("text", "expected"), [
    (r"plain", b"plain"),
    (r"\\", b"\\"),
    (r"\'\"", b"'\""),
    (r"\a\b\f\n\r\t\v", b"\a\b\f\n\r\t\v"),
    (r"\x00\xFf", b"\x00\xff"),
    (r"\0\12\1234", b"\x00\n\x534"),
    ("a\\\nb", b"ab"),
    ("caf\u00e9", "caf\u00e9".encode()),
    ("bad\udcffbyte", b"bad\xffbyte"),
], ids=["plain", "backslash", "quotes", "letters", "hex", "octal", "line-continuation", "utf8", "surrogateescape"])
def test_unescape_reads_python_bytes_literal_escapes(text: str, expected: bytes) -> None:
    assert unescape(text) == expected


@pytest.mark.parametrize("text", [r"\q", "end\\", r"\x", r"\x1", r"\xg0", r"\777"],
                         ids=["unknown", "lone-backslash", "x-no-digits", "x-one-digit", "x-not-hex", "octal-too-big"])
def test_unescape_refuses_what_a_bytes_literal_would_not_mean(text: str) -> None:
    with pytest.raises(ValueError, match=r"position|backslash"):
        unescape(text)


def test_unhex_accepts_spaces_and_refuses_odd_digits() -> None:
    assert unhex("00 ff") == b"\x00\xff"
    with pytest.raises(ValueError, match="not hex"):
        unhex("abc")


def test_human_bytes_units() -> None:
    assert [human_bytes(n) for n in (0, 1023, 1024, 5 << 20, 3 << 30)] == ["0 B", "1023 B", "1.0 KiB", "5.0 MiB",
                                                                          "3.0 GiB"]


class _Terminal(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_progress_draws_a_bar_on_a_terminal_and_clears_it() -> None:
    now = [0.0]
    term = _Terminal(True)
    with Progress(term, "loading", 10, clock=lambda: now[0]) as bar:
        bar.update(5)
        assert term.getvalue() == "\r" + bar.render(5)
        assert "[############------------]  50%  5/10" in bar.render(5)
        bar.update(6)  # within the interval: not redrawn
        assert term.getvalue() == "\r" + bar.render(5)
        now[0] = 1.0
        bar.update(10)
        assert term.getvalue().endswith("\r" + bar.render(10))
    assert term.getvalue().endswith("\r" + " " * len(bar.render(10)) + "\r")


def test_progress_without_a_total_counts_and_can_show_bytes() -> None:
    term = _Terminal(True)
    bar = Progress(term, "dumping", None)
    assert bar.render(12345) == "dumping 12,345"
    assert Progress(term, "loading", None, as_bytes=True).render(2048) == "loading 2.0 KiB"


def test_progress_and_ticker_write_nothing_when_not_a_terminal() -> None:
    pipe = _Terminal(False)
    with Progress(pipe, "loading", 10) as bar:
        bar.update(3, force=True)
    with Ticker(pipe, "checking", interval=0.001):
        pass
    assert pipe.getvalue() == ""


def test_ticker_shows_elapsed_time_on_a_terminal_and_clears_it() -> None:
    term = _Terminal(True)
    with Ticker(term, "checking", interval=3600.0) as ticker:  # the thread never ticks; this test does
        ticker.tick(1.25)
        assert term.getvalue() == "\rchecking 1.2s"
    assert term.getvalue() == "\rchecking 1.2s" + "\r" + " " * len("checking 1.2s") + "\r"
    ticker.tick(2.0)  # after the end: nothing more
    assert term.getvalue().endswith("\r")


@pytest.mark.parametrize(("seconds", "shown"), [
    (1767225600.5, "1767225600.5 (2026-01-01T00:00:00.500Z)"),
    (0.0, "0.0 (1970-01-01T00:00:00.000Z)"),
    (1e300, "1e+300"),  # past the years a date holds: the number alone
    (-1e20, "-1e+20"),
], ids=["2026", "epoch", "far-future", "far-past"])
def test_moment_shows_the_seconds_and_the_utc_time(seconds: float, shown: str) -> None:
    assert moment(seconds) == shown
