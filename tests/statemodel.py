"""The model that tests/test_stateful.py's ``KVMachine`` checks KV and KVTX against, and its strategies.

``Rows`` is the committed state, each key with its newest value and expiry;
``CursorModel``, ``ScanModel`` and ``TxModel`` stand beside a cursor, a scan
left open and a transaction (their docstrings say what each checks; the
module docstring of tests/test_stateful.py says what the machine does).
Also the strategies and bounds the machine's rules draw from, and
``call_tx``, which calls one operation of a transaction by name.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator, Mapping
from typing import TypeVar

import pytest
from hypothesis import strategies as st

from kvstore import KVTX, Config, Cursor, InvalidCursorError

Model = dict[bytes, bytes]
#: each key's newest value and its expiry by the machine's clock (None: it never expires)
Rows = dict[bytes, tuple[bytes, "float | None"]]
#: a transaction's pending write: the value and its ttl (counted from the commit), or None for a delete
Write = tuple[bytes, "float | None"] | None
V = TypeVar("V")

ALPHABET = b"\x00ab\xff"
keys = st.lists(st.sampled_from(ALPHABET), min_size=0, max_size=3).map(bytes)
#: every key ``keys`` draws, in order
ALL_KEYS = sorted({b""} | {bytes([a]) for a in ALPHABET} | {bytes([a, b]) for a in ALPHABET for b in ALPHABET}
                  | {bytes([a, b, c]) for a in ALPHABET for b in ALPHABET for c in ALPHABET})
values = st.binary(max_size=24)
maybe_keys = st.none() | keys
prefixes = st.none() | st.lists(st.sampled_from(ALPHABET), max_size=2).map(bytes)
moves = st.lists(st.sampled_from(["next", "prev"]), max_size=8)
#: ttls and clock steps are multiples of 1/4 second: sums are exact, so a step lands exactly on an expiry
ttls = st.none() | st.sampled_from([0.5, 1.0, 2.0, 3.0, 8.0])
#: clock steps: none, forward, and back (-1: a clock set back, which the KV reads as its highest reading)
ticks = st.sampled_from([0.0, 0.5, 1.0, 2.0, 5.0, -1.0])
configs = st.builds(
    Config,
    memtable_size=st.integers(256, 4096),
    block_size=st.integers(64, 512),
    bloom_bits_per_key=st.sampled_from([0, 1, 4, 10]),
    cache_size=st.sampled_from([0, 4096, 8 << 20]),
    sync=st.just(False),
    background=st.just(False),
    merge_process=st.booleans(),  # tables written by the helper process, or in this one
)

MAX_TXS = 3
MAX_LONG = 3


class Clock:
    """The time every KV of the machine reads, in seconds; rules move ``now``."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def live(rows: Rows, now: float) -> Model:
    """What a read at ``now`` sees of ``rows``: each key whose value has not expired."""
    return {k: v for k, (v, expiry) in rows.items() if expiry is None or now < expiry}


def left(rows: Rows, key: bytes, now: float) -> float | None:
    """What ``ttl(key)`` returns at ``now``: the seconds left, None when absent, expired or lasting."""
    row = rows.get(key)
    if row is None or row[1] is None or row[1] <= now:
        return None
    return row[1] - now


def expected_scan(view: Mapping[bytes, V], start: bytes | None, end: bytes | None, prefix: bytes | None,
                  reverse: bool) -> list[tuple[bytes, V]]:
    """What ``scan(start, end, prefix=prefix, reverse=reverse)`` yields over ``view``."""
    out = [(k, v) for k, v in sorted(view.items())
           if (start is None or k >= start) and (end is None or k < end)
           and (prefix is None or k.startswith(prefix))]
    return out[::-1] if reverse else out


class CursorModel:
    """A cursor beside the sorted snapshot it walks, each key with its value and expiry; ``pos`` None
    means invalid.

    A cursor reads the clock once per chunk of rows, and which rows share
    a chunk is the engine's business, so after the clock moved the model
    cannot say which reading judged a key.  It checks what is certain: a
    (re)seek reads every row it will step onto at or after that moment
    (``since``: opening, or turning around), so the cursor never lands on a
    key expired by then; no reading is later than now, so it never steps
    over a key alive now.  A key that expired in between may be landed on
    or stepped over.  While the clock stands still (a cursor used within
    one rule) ``since`` is now and the walk is exact.
    """

    def __init__(self, cursor: Cursor, rows: Rows, key: bytes, for_prev: bool, now: float) -> None:
        self.cursor = cursor
        self.rows = dict(rows)
        self.keys = sorted(rows)
        self.forward = not for_prev
        self.since = now
        # what the cursor covered: from the seek key to the farthest keys reached (None: past that end)
        self.lo: bytes | None = key
        self.hi: bytes | None = key
        i = bisect.bisect_right(self.keys, key) - 1 if for_prev else bisect.bisect_left(self.keys, key)
        self.pos: int | None = self.land(i, self.found(), now)
        self.reach(not for_prev)
        self.check()

    def found(self) -> bytes | None:
        """The key the cursor is on, None when it is invalid."""
        return self.cursor.key if self.cursor.valid else None

    def land(self, i: int, found: bytes | None, now: float) -> int | None:
        """Where a cursor that moved from index ``i`` on (``i`` included) in its direction landed, given it
        found ``found`` (None: it ran off the end); checked as the class docstring says."""
        step = 1 if self.forward else -1
        while 0 <= i < len(self.keys):
            key = self.keys[i]
            expiry = self.rows[key][1]
            if key == found:
                assert expiry is None or expiry > self.since, f"on {key!r}, expired at {expiry} by {self.since}"
                return i
            assert expiry is not None and expiry <= now, f"stepped over {key!r} (expiry {expiry}) at {now}"
            i += step
        assert found is None, f"the cursor found {found!r}, which is not in its snapshot"
        return None

    def reach(self, forward: bool) -> None:
        key = None if self.pos is None else self.keys[self.pos]
        if forward:
            self.hi = None if key is None or self.hi is None else max(self.hi, key)
        else:
            self.lo = None if key is None or self.lo is None else min(self.lo, key)

    def covers(self, key: bytes) -> bool:
        return (self.lo is None or key >= self.lo) and (self.hi is None or key <= self.hi)

    def check(self) -> None:
        c = self.cursor
        if self.pos is None:
            assert not c.valid
            with pytest.raises(InvalidCursorError):
                _ = c.key
            with pytest.raises(InvalidCursorError):
                _ = c.value
        else:
            key = self.keys[self.pos]
            assert c.valid
            assert c.key == key
            assert c.value == self.rows[key][0]

    def move(self, how: str, now: float) -> None:
        c = self.cursor
        if self.pos is None:
            with pytest.raises(InvalidCursorError):
                c.next() if how == "next" else c.prev()
        else:
            forward = how == "next"
            if forward != self.forward:  # turning around re-seeks: its rows are read from now on
                self.forward, self.since = forward, now
            c.next() if forward else c.prev()
            self.pos = self.land(self.pos + (1 if forward else -1), self.found(), now)
            self.reach(forward)
        self.check()

    def iterate(self, now: float) -> None:
        """Check ``list(cursor)``: the pairs from here on, forward; the cursor ends past the last key."""
        got = list(self.cursor)
        if self.pos is None:  # an invalid cursor yields nothing and stays where it is
            assert got == []
            return
        key = self.keys[self.pos]
        assert got[:1] == [(key, self.rows[key][0])]
        if not self.forward:
            self.forward, self.since = True, now
        for key, value in got[1:]:
            self.pos = self.land(self.pos + 1, key, now)
            assert self.pos is not None and value == self.rows[key][0]
        self.pos = self.land(self.pos + 1, None, now)
        self.reach(True)
        self.check()


class ScanModel:
    """A scan iterator left open, beside the rows of its snapshot (key, value, expiry) it has not passed.

    As a cursor does, it reads the clock once per chunk of rows, none
    before the scan opened (``since``) nor after now; so it yields no row
    expired when it opened, skips none alive now, and may do either with a
    row that expired in between.
    """

    def __init__(self, it: Iterator[tuple[bytes, bytes]], rows: list[tuple[bytes, bytes, float | None]],
                 now: float) -> None:
        self.it = it
        self.rows = rows
        self.since = now
        self.at = 0

    def advance(self, now: float) -> bool:
        """Take one more row from the scan and check it; False when the scan ran out."""
        got = next(self.it, None)
        while self.at < len(self.rows):
            key, value, expiry = self.rows[self.at]
            self.at += 1
            if got is not None and got[0] == key:
                assert expiry is None or expiry > self.since, f"yielded {key!r}, expired at {expiry} by {self.since}"
                assert got[1] == value
                return True
            assert expiry is not None and expiry <= now, f"skipped {key!r} (expiry {expiry}) at {now}: {got!r}"
        assert got is None, f"the scan yielded {got!r}, which is not in its snapshot"
        with pytest.raises(StopIteration):  # exhausted, it stays so
            next(self.it)
        return False


class TxModel:
    """A transaction beside its snapshot at begin, its pending writes (with their ttls), and what it
    read: keys, and predicates for the ranges its scans and cursors covered."""

    def __init__(self, tx: KVTX, committed: Rows, start: int) -> None:
        self.tx = tx
        self.snapshot = dict(committed)  # less what its range deletes removed
        self.writes: dict[bytes, Write] = {}
        self.start = start  # commits before this index of the machine's history are in its snapshot
        self.reads: set[bytes] = set()
        self.ranges: list[Callable[[bytes], bool]] = []
        self.deleted: list[tuple[bytes, bytes]] = []  # its range deletes

    def rows(self) -> Rows:
        """Its view with expiries: its own writes never expire before the commit (their ttl counts from it)."""
        out = {k: row for k, row in self.snapshot.items() if k not in self.writes}
        out.update((k, (w[0], None)) for k, w in self.writes.items() if w is not None)
        return out

    def view(self, now: float) -> Model:
        return live(self.rows(), now)

    def ttl(self, key: bytes, now: float) -> float | None:
        """What ``tx.ttl(key)`` returns: an own write's whole ttl, else the snapshot's time left."""
        if key in self.writes:
            w = self.writes[key]
            return None if w is None else w[1]
        return left(self.snapshot, key, now)

    def read(self, key: bytes) -> None:
        if key not in self.writes and not any(s <= key < e for s, e in self.deleted):
            self.reads.add(key)

    def delete_range(self, start: bytes, end: bytes) -> None:
        for key in [k for k in self.snapshot if start <= k < end]:
            del self.snapshot[key]
        for key in [k for k in self.writes if start <= k < end]:
            del self.writes[key]
        if start < end:
            self.deleted.append((start, end))

    def written(self) -> set[bytes]:
        """The keys its commit writes: its own writes and every key of its range deletes."""
        return set(self.writes) | {k for s, e in self.deleted for k in ALL_KEYS if s <= k < e}

    def covers(self, key: bytes) -> bool:
        return key in self.reads or any(r(key) for r in self.ranges)

    def set(self, key: bytes, value: bytes, ttl: float | None) -> None:
        self.writes[key] = (value, ttl)

    def delete(self, key: bytes) -> None:
        self.writes[key] = None


def delete_range(model: Rows, start: bytes, end: bytes) -> None:
    for key in [k for k in model if start <= k < end]:
        del model[key]


def apply(model: Rows, writes: Mapping[bytes, Write], now: float) -> None:
    """Commit ``writes`` at ``now``: a value set with a ttl expires ``ttl`` after it."""
    for key, w in writes.items():
        if w is None:
            model.pop(key, None)
        else:
            model[key] = (w[0], None if w[1] is None else now + w[1])


def call_tx(tx: KVTX, op: str, key: bytes) -> None:
    """Call one operation of ``tx`` by name."""
    if op == "get":
        tx.get(key)
    elif op == "ttl":
        tx.ttl(key)
    elif op == "set":
        tx.set(key, b"v", ttl=1)
    elif op == "delete":
        tx.delete(key)
    elif op == "seek":
        tx.seek(key)
    elif op == "seek_for_prev":
        tx.seek_for_prev(key)
    elif op == "scan":
        next(tx.scan(key), None)
    else:
        tx.commit()
