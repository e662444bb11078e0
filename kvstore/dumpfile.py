"""The dump format: a whole database as JSON lines, written by ``kvstore dump`` and read by ``kvstore load``.

A dump is UTF-8 text, one JSON object per line (DESIGN.md, "Dump format"):
a header line, one line per key in ascending key order with the key and
value in base64 (and, for a key that expires, its expiry), and an end line
with the count, so that a cut-short dump is told from a whole one.  Loading
commits in transactions of bounded size, and sets a key that expires with
the ttl it has left by the loading KV's clock.

Invariants:
  - ``read_dump(write_dump(pairs, expiries=f))`` yields exactly ``(key, value, f(key))`` for each pair
    (``None`` for each without ``f``);
  - ``read_dump`` raises ``DumpError`` (naming the line) on anything else, after yielding the rows before it;
  - a dump of a KV where nothing expires reads each key once, as before expiries were dumped.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TextIO

from kvstore import record
from kvstore.collection import Collection
from kvstore.keyspace import Space, check_name, prefix_of
from kvstore.store import KV
from kvstore.transaction import KVTX

__all__ = ["FORMAT", "VERSION", "DumpError", "LoadReport", "expiries", "load", "read_dump", "write_dump"]

#: The ``format`` field of the header line.
FORMAT = "kvstore-dump"
#: The version of the dump format this code writes and the newest it reads: 3 adds ``collection`` to the
#: pair lines of collections' keys, 2 ``expires`` to those of keys that expire; older dumps hold none and
#: load as ever.
VERSION = 3

#: A pair as ``read_dump`` yields it: key, value, expiry (seconds since the epoch by the clock of the KV
#: dumped; None when the key does not expire) and collection (None for the KV's own keys).
Row = tuple[bytes, bytes, float | None, str | None]
#: What ``write_dump`` writes after the KV's own pairs: each collection's name, pairs and expiries.
Section = tuple[str, Iterable[tuple[bytes, bytes]], "Callable[[bytes], float | None] | None"]


class DumpError(ValueError):
    """Raised when a dump's text is not a whole, well-formed dump; the message names the line."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def expiries(kv: KV, collection: str | None = None) -> Callable[[bytes], float | None] | None:
    """What ``write_dump`` asks each key's expiry of, for a dump of ``kv`` (a KV no one writes to while
    it is dumped, as ``kvstore dump``'s read-only open): a function of a key giving its expiry as stored
    (None when it does not expire); None when no value of ``kv`` expires, so each key is read once.

    A key the dump's scan found alive but that expired since has its expiry written all the same: a load
    then finds it past and skips it.
    """
    if not kv._may_expire():
        return None
    get = kv._get
    space = kv._own_space if collection is None else Space(prefix_of(check_name(collection)))

    def expires(key: bytes) -> float | None:
        stored = get(space.stored(key), None, stored=True)
        return stored.expires if type(stored) is record.Expiring else None

    return expires


def write_dump(pairs: Iterable[tuple[bytes, bytes]], out: TextIO, *, sequence: int,
               progress: Callable[[int], None] | None = None,
               expiries: Callable[[bytes], float | None] | None = None,
               collections: Iterable[Section] = ()) -> int:
    """Write the header, one line per pair and the end line to ``out``; returns the number of pairs.
    With ``expiries`` (see ``expiries``), a key for which it gives a time has it on its line.  The KV's
    own ``pairs`` come first, then each of ``collections``' pairs, with its name on each line."""
    out.write(json.dumps({"format": FORMAT, "version": VERSION, "sequence": sequence}) + "\n")
    count = 0
    sections: list[tuple[str | None, Iterable[tuple[bytes, bytes]], Callable[[bytes], float | None] | None]]
    sections = [(None, pairs, expiries), *collections]
    for name, rows, expires_of in sections:
        tail = "" if name is None else f', "collection": {json.dumps(name)}'
        for key, value in rows:
            expires = None if expires_of is None else expires_of(key)
            if expires is None:
                out.write(f'{{"key": "{_b64(key)}", "value": "{_b64(value)}"{tail}}}\n')
            else:
                out.write(f'{{"key": "{_b64(key)}", "value": "{_b64(value)}", "expires": {expires!r}{tail}}}\n')
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


_PAIR = {"key", "value"}
_OPTIONAL = {2: {"expires"}, 3: {"expires", "collection"}}  # the fields a version may add to a pair line


def _collection(obj: dict[str, Any], where: str) -> str:
    try:
        return check_name(obj["collection"])
    except (TypeError, ValueError) as exc:
        raise DumpError(f"{where}: 'collection' is not a collection name ({exc})") from None


def _expires(obj: dict[str, Any], where: str) -> float:
    value = obj["expires"]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DumpError(f"{where}: 'expires' must be a number of seconds")
    try:
        expires = float(value)
    except OverflowError:
        expires = math.inf
    if not math.isfinite(expires):
        raise DumpError(f"{where}: 'expires' must be a finite number of seconds, not {value!r}")
    return expires


def read_dump(lines: Iterable[str], name: str = "<dump>") -> Iterator[Row]:
    """The (key, value, expires) rows of a dump, in the order written: ``expires`` the key's expiry, None
    when its line has none (every line of a version 1 dump).

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
        fields = set(obj)
        if not fields >= _PAIR or not fields - _PAIR <= _OPTIONAL.get(version, set()):
            raise DumpError(f"{where}: a pair line holds exactly \"key\" and \"value\""
                            + (" (and \"expires\" when the key expires)" if version >= 2 else "")
                            + (" (and \"collection\" for a collection's key)" if version >= 3 else ""))
        expires = _expires(obj, where) if "expires" in obj else None
        collection = _collection(obj, where) if "collection" in obj else None
        yield _field(obj, "key", where), _field(obj, "value", where), expires, collection
    raise DumpError(f"{name}: ends after line {number} without its end line: cut short?")


class LoadReport:
    """What ``load`` has done so far: pairs and transactions committed, and rows skipped because their
    expiry had passed (read it after an error too)."""

    __slots__ = ("pairs", "transactions", "expired")

    def __init__(self) -> None:
        self.pairs = 0
        self.transactions = 0
        self.expired = 0


def load(kv: KV, rows: Iterable[Row], report: LoadReport, *, batch_bytes: int,
         progress: Callable[[int], None] | None = None) -> None:
    """Set every row's key to its value in ``kv``, committing a transaction each time its keys and values
    reach ``batch_bytes``, and counting what was committed in ``report``.  A row with an expiry is set
    with the ttl it has left by ``kv``'s clock, read as the row is set (the ttl counts from the commit, so
    the key expires later by the time until its transaction commits); a row whose expiry has passed is
    skipped and counted in ``report.expired``.  When ``rows`` (or a commit) raises, the transaction in
    progress is aborted and the error propagates; ``report`` then says what earlier transactions
    committed."""
    pending = 0
    size = 0
    clock = kv._clock
    tx = kv.new_tx()
    spaces: dict[str | None, KVTX | Collection] = {None: tx}
    try:
        for key, value, expires, collection in rows:
            target = spaces.get(collection)
            if target is None:
                target = spaces[collection] = tx.collection(collection)  # type: ignore[arg-type]
            if expires is None:
                target.set(key, value)
            else:
                left = expires - clock()
                if left <= 0:
                    report.expired += 1
                    continue
                target.set(key, value, ttl=left)
            pending += 1
            size += len(key) + len(value)
            if size >= batch_bytes:
                tx.commit()
                report.pairs += pending
                report.transactions += 1
                pending = size = 0
                tx = kv.new_tx()
                spaces = {None: tx}
                if progress is not None:
                    progress(report.pairs)
        if pending:
            tx.commit()
            report.pairs += pending
            report.transactions += 1
    finally:
        tx.abort()
