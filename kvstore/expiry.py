"""Expiring keys: the KV's clock, the ttl argument, and how reads and merges treat values that expire
(DESIGN.md, "Expiring keys").

A value set with ``ttl`` is stored as a ``record.Expiring``: its expiry
(the clock at the commit plus ``ttl``) before its bytes, in the WAL, the
memtable and table blocks.  It reads as absent from the instant the clock
reaches its expiry, everywhere: a point read compares the clock when it
finds one; a level that holds any (its ``expiring`` count) has its rows
passed through ``unexpired``, which reads the clock once per chunk of rows
and turns an expired value into a delete, so it also hides every older
version.  A merge turns expired values into deletes too (``Expired``), by
the clock when it starts, and the usual rules then drop them.

Invariants:
  - ``Clock`` never goes back: an expired value stays expired in this process whatever the clock fn does;
  - a value is ``Expiring`` only in its stored form; what reads return is always plain ``bytes``.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator

from kvstore.record import EXPIRY, Expiring

__all__ = ["Clock", "Expired", "check_ttl", "expires_at", "plain", "remaining", "unexpired"]

Row = tuple[bytes, "bytes | None"]


class Clock:
    """The KV's clock: ``fn`` (seconds, ``time.time`` by default), read so that it never goes back (a
    reading below the highest one seen reads as that one)."""

    __slots__ = ("_fn", "_last", "_lock")

    def __init__(self, fn: Callable[[], float]) -> None:
        if not callable(fn):
            raise TypeError(f"clock must be a callable returning seconds, not {type(fn).__name__}")
        self._fn = fn
        self._last = -math.inf
        self._lock = threading.Lock()

    def __call__(self) -> float:
        """Now, in seconds; raises ``TypeError`` or ``ValueError`` when the clock fn gives something that is
        not a finite number."""
        now = self._fn()
        if type(now) is not float:
            now = _seconds(now)
        if now <= self._last:
            return self._last
        with self._lock:
            if now > self._last:
                self._last = now
            return self._last


def _seconds(now: object) -> float:
    if isinstance(now, bool) or not isinstance(now, (int, float)):
        raise TypeError(f"the clock returned {type(now).__name__}, not a number of seconds")
    try:
        now = float(now)
    except OverflowError:
        raise ValueError("the clock returned a number too large for seconds") from None
    if not math.isfinite(now):
        raise ValueError(f"the clock returned {now}, not a finite number of seconds")
    return now


def check_ttl(ttl: object) -> float:
    """``ttl`` in seconds as a float; ``TypeError`` unless it is an int or a float (not a bool),
    ``ValueError`` unless it is finite and above 0."""
    if type(ttl) is float and 0.0 < ttl < math.inf:
        return ttl
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)):
        raise TypeError(f"ttl must be an int or a float number of seconds, not {type(ttl).__name__}")
    try:
        seconds = float(ttl)
    except OverflowError:
        raise ValueError(f"ttl must be a finite number of seconds, not {ttl!r}") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"ttl must be a finite number of seconds above 0, not {ttl!r}")
    return seconds


def expires_at(now: float, ttl: float) -> float:
    """The expiry of a value set with ``ttl`` at ``now``; ``ValueError`` when it is past what a float holds."""
    when = now + ttl
    if not math.isfinite(when):
        raise ValueError(f"ttl {ttl!r} takes the expiry past the largest time a float holds")
    return when


def plain(value: bytes | None, now: float) -> bytes | None:
    """What a read returns for a stored ``value`` at ``now``: an ``Expiring`` value's bytes while it lives,
    None once it expired; anything else as it is."""
    if isinstance(value, Expiring):
        return value.alive(now)
    return value


def remaining(value: bytes | None, now: float) -> float | None:
    """The seconds a stored ``value`` has left at ``now``; None for a value that does not expire, has
    expired, or is absent."""
    if isinstance(value, Expiring):
        left = value.expires - now
        return left if left > 0 else None
    return None


def unexpired(chunks: Iterator[list[Row]], clock: Callable[[], float]) -> Iterator[list[Row]]:
    """A level's chunks of rows with each value as ``plain`` makes it, by the clock read once per chunk: an
    expired value becomes a delete (None), which hides the key's older versions in older levels."""
    unpack = EXPIRY.unpack_from
    for chunk in chunks:
        now = clock()
        yield [(key, (value[8:] if now < unpack(value)[0] else None) if type(value) is Expiring else value)
               for key, value in chunk]


class Expired:
    """What a merge (or a flush) needs to drop expired entries: the clock when it started (``now``); and
    how many expired entries it turned into deletes (``count``)."""

    __slots__ = ("now", "count")

    def __init__(self, now: float) -> None:
        self.now = now
        self.count = 0

    def values(self, values: list[bytes | None]) -> list[bytes | None]:
        """``values`` (of a chunk of entries) with each ``Expiring`` value expired at ``now`` a delete."""
        if Expiring not in set(map(type, values)):
            return values
        now = self.now
        out = [None if type(value) is Expiring and value.expires <= now else value for value in values]
        self.count += out.count(None) - values.count(None)
        return out
