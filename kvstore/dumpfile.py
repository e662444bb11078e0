"""The dump format: a whole database as JSON lines, written by ``kvstore dump`` and read by ``kvstore load``.

A dump is UTF-8 text, one JSON object per line (DESIGN.md, "Dump format"):
a header line, one line per key in ascending key order with the key and
value in base64, and an end line with the count, so that a cut-short dump is
told from a whole one.  Loading commits in transactions of bounded size.

Invariants:
  - ``read_dump(write_dump(pairs))`` yields exactly ``pairs``;
  - ``read_dump`` raises ``DumpError`` (naming the line) on anything else, after yielding the pairs before it.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TextIO

from kvstore.store import KV

__all__ = ["FORMAT", "VERSION", "DumpError", "LoadReport", "load", "read_dump", "write_dump"]

#: The ``format`` field of the header line.
FORMAT = "kvstore-dump"
#: The version of the dump format this code writes and the newest it reads.
VERSION = 1


class DumpError(ValueError):
    """Raised when a dump's text is not a whole, well-formed dump; the message names the line."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def write_dump(pairs: Iterable[tuple[bytes, bytes]], out: TextIO, *, sequence: int,
               progress: Callable[[int], None] | None = None) -> int:
    """Write the header, one line per pair and the end line to ``out``; returns the number of pairs."""
    out.write(json.dumps({"format": FORMAT, "version": VERSION, "sequence": sequence}) + "\n")
    count = 0
    for key, value in pairs:
        out.write(f'{{"key": "{_b64(key)}", "value": "{_b64(value)}"}}\n')
        count += 1
        if progress is not None and count % 1024 == 0:
            progress(count)
    out.write(json.dumps({"end": True, "count": count}) + "\n")
    return count


def _field(obj: dict[str, Any], name: str, where: str) -> bytes:
    text = obj.get(name)
    if not isinstance(text, str):
        raise DumpError(f"{where}: {name!r} must be a base64 string")
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error as exc:
        raise DumpError(f"{where}: {name!r} is not base64 ({exc})") from None


def _parse(line: str, where: str) -> dict[str, Any]:
    try:
        obj = json.loads(line)
    except ValueError as exc:
        raise DumpError(f"{where}: not JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise DumpError(f"{where}: not a JSON object")
    return obj


def read_dump(lines: Iterable[str], name: str = "<dump>") -> Iterator[tuple[bytes, bytes]]:
    """The (key, value) pairs of a dump, in the order written.

    Raises ``DumpError`` naming ``name`` and the line: a missing or foreign
    header, a newer version, a line that is not a pair, no end line (a cut
    short dump: raised after every pair before it was yielded), a count
    that disagrees, or anything after the end line.
    """
    it = iter(lines)
    first = next(it, None)
    if first is None:
        raise DumpError(f"{name}: empty, not a kvstore dump")
    header = _parse(first, f"{name} line 1")
    if header.get("format") != FORMAT:
        raise DumpError(f"{name} line 1: not a kvstore dump header (format is not {FORMAT!r})")
    version = header.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= VERSION:
        raise DumpError(f"{name} line 1: dump format version {version!r}, this kvstore reads up to {VERSION}")
    number = 1
    for number, line in enumerate(it, start=2):
        where = f"{name} line {number}"
        obj = _parse(line, where)
        if "end" in obj:
            count = number - 2  # the pairs are lines 2 .. number - 1
            if obj.get("end") is not True or obj.get("count") != count:
                raise DumpError(f"{where}: end line says {obj.get('count')!r} pairs, the dump holds {count}")
            for extra, _ in enumerate(it, start=number + 1):
                raise DumpError(f"{name} line {extra}: text after the end line")
            return
        if set(obj) != {"key", "value"}:
            raise DumpError(f"{where}: a pair line holds exactly \"key\" and \"value\"")
        yield _field(obj, "key", where), _field(obj, "value", where)
    raise DumpError(f"{name}: ends after line {number} without its end line: cut short?")


class LoadReport:
    """What ``load`` has committed so far: pairs and transactions (read it after an error too)."""

    __slots__ = ("pairs", "transactions")

    def __init__(self) -> None:
        self.pairs = 0
        self.transactions = 0


def load(kv: KV, pairs: Iterable[tuple[bytes, bytes]], report: LoadReport, *, batch_bytes: int,
         progress: Callable[[int], None] | None = None) -> None:
    """Set every pair in ``kv``, committing a transaction each time its keys and values reach
    ``batch_bytes``, and counting what was committed in ``report``.  When ``pairs`` (or a commit)
    raises, the transaction in progress is aborted and the error propagates; ``report`` then says what
    earlier transactions committed."""
    pending = 0
    size = 0
    tx = kv.new_tx()
    try:
        for key, value in pairs:
            tx.set(key, value)
            pending += 1
            size += len(key) + len(value)
            if size >= batch_bytes:
                tx.commit()
                report.pairs += pending
                report.transactions += 1
                pending = size = 0
                tx = kv.new_tx()
                if progress is not None:
                    progress(report.pairs)
        if pending:
            tx.commit()
            report.pairs += pending
            report.transactions += 1
    finally:
        tx.abort()
