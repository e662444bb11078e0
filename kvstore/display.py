"""How the command line shows bytes and progress: escaped or hex text for keys and values, a progress bar.

Keys and values are arbitrary bytes; on a terminal they appear as the body
of a Python bytes literal (``escape``), or as hex with ``--hex``, and the
same forms are read back from arguments (``unescape``, ``unhex``).  Progress
goes to a terminal's stderr only, so stdout stays parseable (DESIGN.md,
"Command line").

Invariants:
  - ``unescape(escape(b)) == b`` and ``ast.literal_eval("b'" + escape(b) + "'") == b`` for all bytes ``b``;
  - ``escape`` output is printable ASCII without tab or newline (every byte outside 0x20..0x7e, the
    backslash and the single quote are escaped), so one key per line or tab-separated columns stay exact;
  - a ``Progress`` or ``Ticker`` on a stream that is not a terminal writes nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from types import TracebackType
from typing import Protocol

__all__ = ["ESCAPED", "HEX", "BytesForm", "Progress", "Ticker", "escape", "human_bytes", "moment", "unescape",
           "unhex"]

_SIMPLE = {0x5C: "\\\\", 0x27: "\\'", 0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r"}
_TABLE = tuple(_SIMPLE.get(b, chr(b) if 0x20 <= b <= 0x7E else f"\\x{b:02x}") for b in range(256))
_UNESCAPE = {"\\": 0x5C, "'": 0x27, '"': 0x22, "a": 0x07, "b": 0x08, "f": 0x0C, "n": 0x0A, "r": 0x0D,
             "t": 0x09, "v": 0x0B}
_OCTAL = "01234567"
_HEXDIGITS = "0123456789abcdefABCDEF"


def escape(data: bytes) -> str:
    """``data`` as the body of a Python bytes literal: printable ASCII as is, ``\\\\``, ``\\'``, ``\\t``,
    ``\\n``, ``\\r``, and ``\\xNN`` for every other byte.

    >>> print(escape(b"key\\x00\\xff it's\\n"))
    key\\x00\\xff it\\'s\\n
    """
    table = _TABLE
    return "".join([table[b] for b in data])


def unescape(text: str) -> bytes:
    """The bytes a Python bytes literal with body ``text`` holds; characters outside ASCII stand for their
    UTF-8 bytes.  Raises ``ValueError`` naming the position of an unknown or cut-short escape.

    >>> unescape(r"a\\x00b\\\\c\\n")
    b'a\\x00b\\\\c\\n'
    >>> unescape("caf\\u00e9")
    b'caf\\xc3\\xa9'
    """
    if "\\" not in text:
        return text.encode("utf-8", "surrogateescape")
    out = bytearray()
    i = 0
    while (j := text.find("\\", i)) >= 0:
        out += text[i:j].encode("utf-8", "surrogateescape")
        byte, i = _escaped_byte(text, j)
        if byte is not None:
            out.append(byte)
    out += text[i:].encode("utf-8", "surrogateescape")
    return bytes(out)


def _escaped_byte(text: str, j: int) -> tuple[int | None, int]:
    """The byte the escape at ``text[j]`` (a backslash) stands for (None for a line continuation) and
    the position after the escape; ``ValueError`` when it is unknown or cut short."""
    n = len(text)
    if j + 1 >= n:
        raise ValueError(f"{text!r}: a lone backslash at the end (write \\\\ for a backslash)")
    c = text[j + 1]
    if c in _UNESCAPE:
        return _UNESCAPE[c], j + 2
    if c == "\n":
        return None, j + 2  # a line continuation, as in a Python literal
    if c == "x":
        digits = text[j + 2 : j + 4]
        if len(digits) != 2 or any(d not in _HEXDIGITS for d in digits):
            raise ValueError(f"{text!r}: \\x at position {j} needs two hex digits")
        return int(digits, 16), j + 4
    if c in _OCTAL:
        k = j + 1
        while k < n and k < j + 4 and text[k] in _OCTAL:
            k += 1
        value = int(text[j + 1 : k], 8)
        if value > 0xFF:
            raise ValueError(f"{text!r}: octal escape at position {j} is above \\377")
        return value, k
    raise ValueError(f"{text!r}: unknown escape \\{c} at position {j} (write \\\\ for a backslash)")


def unhex(text: str) -> bytes:
    """The bytes of hex ``text`` (spaces between bytes allowed); ``ValueError`` when it is not hex.

    >>> unhex("00ff 61")
    b'\\x00\\xffa'
    """
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise ValueError(f"{text!r} is not hex (two digits per byte)") from None


class BytesForm:
    """One text form of bytes: how keys and values are shown, and how arguments are read."""

    def __init__(self, name: str, show: Callable[[bytes], str], parse: Callable[[str], bytes]) -> None:
        self.name = name
        self.show = show
        self.parse = parse

    def __repr__(self) -> str:
        return f"<BytesForm {self.name}>"


ESCAPED = BytesForm("escaped", escape, unescape)
HEX = BytesForm("hex", bytes.hex, unhex)


def human_bytes(n: int) -> str:
    """A byte count for people: ``512 B``, ``1.5 KiB``, ``3.0 MiB``.

    >>> human_bytes(1536), human_bytes(100)
    ('1.5 KiB', '100 B')
    """
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def moment(seconds: float) -> str:
    """A time in seconds since the epoch for people: the number as it is, then the UTC date and time to the
    millisecond (the number alone when it lies outside the years a date holds).

    >>> moment(1700000000.25)
    '1700000000.25 (2023-11-14T22:13:20.250Z)'
    """
    try:
        when = datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        return repr(seconds)
    return f"{seconds!r} ({when.replace(tzinfo=None).isoformat(timespec='milliseconds')}Z)"


class Stream(Protocol):
    """What progress output needs of a stream (``sys.stderr``)."""

    def isatty(self) -> bool: ...

    def write(self, text: str, /) -> int: ...

    def flush(self) -> None: ...


class Progress:
    """A one-line progress bar redrawn on a terminal: ``label [#####-----]  50%  5/10``.

    On a stream that is not a terminal every call does nothing.  Redraws
    at most every ``interval`` seconds of ``clock``; ``close()`` clears the
    line.  With ``total`` None it shows a running count instead of a bar.
    """

    WIDTH = 24

    def __init__(self, stream: Stream, label: str, total: int | None, *, as_bytes: bool = False,
                 clock: Callable[[], float] = time.monotonic, interval: float = 0.1) -> None:
        self._stream = stream
        self.enabled = stream.isatty()
        self._label = label
        self.total = total
        self._as_bytes = as_bytes
        self._clock = clock
        self._interval = interval
        self._last: float | None = None
        self._drawn = 0

    def _amount(self, n: int) -> str:
        return human_bytes(n) if self._as_bytes else f"{n:,}"

    def render(self, done: int) -> str:
        """The line shown for ``done`` units of work."""
        if self.total is None:
            return f"{self._label} {self._amount(done)}"
        frac = min(1.0, done / self.total) if self.total > 0 else 1.0
        fill = int(frac * self.WIDTH)
        bar = "#" * fill + "-" * (self.WIDTH - fill)
        return f"{self._label} [{bar}] {frac * 100:3.0f}%  {self._amount(done)}/{self._amount(self.total)}"

    def update(self, done: int, *, force: bool = False) -> None:
        """Show ``done`` units of work, unless the last redraw was less than ``interval`` ago."""
        if not self.enabled:
            return
        now = self._clock()
        if not force and self._last is not None and now - self._last < self._interval:
            return
        self._last = now
        self._draw(self.render(done))

    def _draw(self, line: str) -> None:
        pad = max(0, self._drawn - len(line))
        self._stream.write("\r" + line + " " * pad)
        self._stream.flush()
        self._drawn = len(line)

    def close(self) -> None:
        """Clear the line; idempotent."""
        if self.enabled and self._drawn:
            self._stream.write("\r" + " " * self._drawn + "\r")
            self._stream.flush()
            self._drawn = 0

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class Ticker:
    """Elapsed time on a terminal (``label 3.2s``) while one long call runs, for work that reports no
    progress of its own; a thread redraws it.  Writes nothing on a stream that is not a terminal."""

    def __init__(self, stream: Stream, label: str, *, interval: float = 0.1) -> None:
        self._progress = Progress(stream, label, None, interval=0.0)
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def tick(self, elapsed: float) -> None:
        """Show ``elapsed`` seconds (the thread calls this every ``interval``)."""
        with self._lock:
            if not self._stop.is_set():
                self._progress._draw(f"{self._progress._label} {elapsed:.1f}s")

    def _run(self) -> None:
        start = time.monotonic()
        while not self._stop.wait(self._interval):
            self.tick(time.monotonic() - start)

    def __enter__(self) -> Ticker:
        self._stop.clear()
        if self._progress.enabled:
            self._thread = threading.Thread(target=self._run, name="kvstore-ticker", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            self._progress.close()
