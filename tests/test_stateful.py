"""A Hypothesis state machine driving KV and KVTX against a dict model.

Tiny memtables and blocks make flushes and merges happen every few steps;
keys of up to three bytes from {0x00, a, b, 0xff} collide and share prefixes.
The machine checks every read (get, ttl, scan, cursors, transactions) against the
model, keeps scans and cursors open across later writes, flushes, merges and
reopens, and calls ``KV._check()`` after every step.  Its model of conflicts
is docs/transactions.md read literally: a transaction commits unless a commit after its
snapshot wrote a key it read (by get, ttl or delete, not served by its own writes)
or a key inside what one of its scans or cursors covered.  A range delete
writes its whole range: every key of the alphabet in it (two ranges with
bounds from the alphabet meet exactly where they share an alphabet key, the
greater of their starts).

Every KV the machine opens reads its ``Clock``, which a rule moves: not at
all, forward by steps that land exactly on expiries, and back (the KV keeps
its highest reading).  Keys are set with and without a ttl, by ``kv.set`` and
in transactions; the model keeps each key's newest value with its expiry (a
transaction's ttl counts from its commit) and reads a key as absent from its
expiry on, which also hides whatever the key held before.  An expiry is not a
write: it is in no commit's write set, so it never makes a conflict.  Scans
and cursors left open while the clock moves are checked as ``CursorModel``
explains.
"""

from __future__ import annotations

import bisect
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from typing import TypeVar

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from kvstore import KV, KVTX, ClosedError, Config, ConflictError, Cursor, InvalidCursorError, TxClosedError

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


class KVMachine(RuleBasedStateMachine):
    """KV and KVTX against a dict: ``model`` is the committed state, each key with its expiry."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="kvstore-stateful-")
        self.kv: KV | None = None
        self.clock = Clock(1000.0)
        self.now = self.clock.now  # the KV's time: the highest reading of the clock
        self.model: Rows = {}
        self.history: list[set[bytes]] = []  # the keys each commit wrote, in commit order
        self.txs: list[TxModel] = []
        self.cursors: list[CursorModel] = []
        self.scans: list[ScanModel] = []
        self.expired = 0  # stats().expired as last seen: it only grows while the KV is open
        # transactions that committed or aborted: every call but abort() raises TxClosedError
        self.ended: list[KVTX] = []
        # transactions, cursors and scans open when their KV closed: the next use raises ClosedError
        self.orphans: list[KVTX | Cursor | Iterator[tuple[bytes, bytes]]] = []

    @property
    def db(self) -> KV:
        assert self.kv is not None
        return self.kv

    def view(self) -> Model:
        """The committed state as reads see it now."""
        return live(self.model, self.now)

    def read_clock(self, key: bytes) -> None:
        """Have the KV read the clock (``ttl`` always does) and check what it says of ``key``.  The KV's time
        is the highest reading it took, the model's ``now`` the highest time the clock was moved to: they
        agree because every open and every move is read at once (a step back after an unread step
        forward would leave them apart)."""
        self.now = max(self.now, self.clock.now)
        assert self.db.ttl(key) == left(self.model, key, self.now)

    @initialize(config=configs)
    def open(self, config: Config) -> None:
        self.kv = KV.open(self.dir, config, clock=self.clock)
        self.read_clock(b"")

    def teardown(self) -> None:
        try:
            if self.kv is not None:
                self.kv.close()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    @invariant()
    def invariants_hold(self) -> None:
        if self.kv is None:
            return
        self.kv._check()
        stats = self.kv.stats()
        assert stats.live_snapshots == len(self.txs) + len(self.cursors) + len(self.scans)
        assert stats.expired >= self.expired
        self.expired = stats.expired

    # ------------------------------------------------------------------ the clock

    @rule(by=ticks, key=keys)
    def tick(self, by: float, key: bytes) -> None:
        self.clock.now += by
        self.read_clock(key)

    # ------------------------------------------------------------------ one-operation writes and reads

    @rule(key=keys, value=values, ttl=ttls)
    def set(self, key: bytes, value: bytes, ttl: float | None) -> None:
        self.db.set(key, value, ttl=ttl)
        apply(self.model, {key: (value, ttl)}, self.now)
        self.history.append({key})

    @rule(items=st.lists(st.tuples(keys, values, ttls), min_size=1, max_size=12))
    def set_many(self, items: list[tuple[bytes, bytes, float | None]]) -> None:
        for key, value, ttl in items:
            self.db.set(key, value, ttl=ttl)
            apply(self.model, {key: (value, ttl)}, self.now)
            self.history.append({key})

    @rule(key=keys)
    def delete(self, key: bytes) -> None:
        existed = key in self.view()  # an expired key is absent: deleting it writes nothing
        assert self.db.delete(key) is existed
        if existed:
            del self.model[key]
            self.history.append({key})

    @rule(start=keys, end=keys)
    def delete_range(self, start: bytes, end: bytes) -> None:
        self.db.delete_range(start, end)
        delete_range(self.model, start, end)
        if start < end:
            self.history.append({k for k in ALL_KEYS if start <= k < end})

    @rule(key=keys)
    def get(self, key: bytes) -> None:
        assert self.db.get(key) == self.view().get(key)

    @rule(key=keys)
    def ttl(self, key: bytes) -> None:
        assert self.db.ttl(key) == left(self.model, key, self.now)

    @rule(start=maybe_keys, end=maybe_keys, prefix=prefixes, reverse=st.booleans())
    def scan(self, start: bytes | None, end: bytes | None, prefix: bytes | None, reverse: bool) -> None:
        got = list(self.db.scan(start, end, prefix=prefix, reverse=reverse))
        assert got == expected_scan(self.view(), start, end, prefix, reverse)

    @rule(key=keys, for_prev=st.booleans(), steps=moves, iterate=st.booleans())
    def cursor_walk(self, key: bytes, for_prev: bool, steps: list[str], iterate: bool) -> None:
        cursor = self.db.seek_for_prev(key) if for_prev else self.db.seek(key)
        with cursor:
            m = CursorModel(cursor, self.model, key, for_prev, self.now)
            for how in steps:
                m.move(how, self.now)
            if iterate:
                m.iterate(self.now)

    @rule(items=st.lists(st.tuples(keys, st.none() | values, ttls), max_size=4))
    def transact(self, items: list[tuple[bytes, bytes | None, float | None]]) -> None:
        def fn(tx: KVTX) -> int:
            for key, value, ttl in items:
                if value is None:
                    tx.delete(key)
                else:
                    tx.set(key, value, ttl=ttl)
            return len(items)

        assert self.db.transact(fn) == len(items)
        apply(self.model, {k: None if v is None else (v, ttl) for k, v, ttl in items}, self.now)
        if items:
            self.history.append({k for k, _, _ in items})

    # ------------------------------------------------------------------ long-lived cursors and scans

    @precondition(lambda self: len(self.cursors) < MAX_LONG)
    @rule(key=keys, for_prev=st.booleans())
    def open_cursor(self, key: bytes, for_prev: bool) -> None:
        cursor = self.db.seek_for_prev(key) if for_prev else self.db.seek(key)
        self.cursors.append(CursorModel(cursor, self.model, key, for_prev, self.now))

    @precondition(lambda self: bool(self.cursors))
    @rule(i=st.integers(0, MAX_LONG - 1), steps=moves)
    def move_cursor(self, i: int, steps: list[str]) -> None:
        m = self.cursors[i % len(self.cursors)]
        m.check()
        for how in steps:
            m.move(how, self.now)

    @precondition(lambda self: bool(self.cursors))
    @rule(i=st.integers(0, MAX_LONG - 1))
    def close_cursor(self, i: int) -> None:
        m = self.cursors.pop(i % len(self.cursors))
        m.check()
        m.cursor.close()
        with pytest.raises(ClosedError):
            m.cursor.next()

    @precondition(lambda self: len(self.scans) < MAX_LONG)
    @rule(start=maybe_keys, end=maybe_keys, prefix=prefixes, reverse=st.booleans())
    def open_scan(self, start: bytes | None, end: bytes | None, prefix: bytes | None, reverse: bool) -> None:
        it = self.db.scan(start, end, prefix=prefix, reverse=reverse)
        rows = [(k, v, expiry) for k, (v, expiry) in expected_scan(self.model, start, end, prefix, reverse)]
        self.scans.append(ScanModel(it, rows, self.now))

    @precondition(lambda self: bool(self.scans))
    @rule(i=st.integers(0, MAX_LONG - 1), n=st.integers(1, 6))
    def advance_scan(self, i: int, n: int) -> None:
        i %= len(self.scans)
        for _ in range(n):
            if not self.scans[i].advance(self.now):
                del self.scans[i]  # exhausted: its snapshot is released
                return

    # ------------------------------------------------------------------ transactions

    @precondition(lambda self: len(self.txs) < MAX_TXS)
    @rule()
    def begin(self) -> None:
        self.txs.append(TxModel(self.db.new_tx(), self.model, len(self.history)))

    @precondition(lambda self: bool(self.txs))
    @rule(i=st.integers(0, MAX_TXS - 1), key=keys, value=values, ttl=ttls)
    def tx_set(self, i: int, key: bytes, value: bytes, ttl: float | None) -> None:
        m = self.txs[i % len(self.txs)]
        m.tx.set(key, value, ttl=ttl)
        m.set(key, value, ttl)

    @precondition(lambda self: bool(self.txs))
    @rule(i=st.integers(0, MAX_TXS - 1), key=keys)
    def tx_delete(self, i: int, key: bytes) -> None:
        m = self.txs[i % len(self.txs)]
        assert m.tx.delete(key) is (key in m.view(self.now))
        m.read(key)
        m.delete(key)

    @precondition(lambda self: bool(self.txs))
    @rule(i=st.integers(0, MAX_TXS - 1), start=keys, end=keys)
    def tx_delete_range(self, i: int, start: bytes, end: bytes) -> None:
        m = self.txs[i % len(self.txs)]
        m.tx.delete_range(start, end)
        m.delete_range(start, end)

    @precondition(lambda self: bool(self.txs))
    @rule(i=st.integers(0, MAX_TXS - 1), key=keys)
    def tx_get(self, i: int, key: bytes) -> None:
        m = self.txs[i % len(self.txs)]
        assert m.tx.get(key) == m.view(self.now).get(key)
        m.read(key)

    @precondition(lambda self: bool(self.txs))
    @rule(i=st.integers(0, MAX_TXS - 1), key=keys)
    def tx_ttl(self, i: int, key: bytes) -> None:
        m = self.txs[i % len(self.txs)]
        assert m.tx.ttl(key) == m.ttl(key, self.now)
        m.read(key)

    @precondition(lambda self: bool(self.txs))
    @rule(i=st.integers(0, MAX_TXS - 1), start=maybe_keys, end=maybe_keys, prefix=prefixes, reverse=st.booleans())
    def tx_scan(self, i: int, start: bytes | None, end: bytes | None, prefix: bytes | None, reverse: bool) -> None:
        m = self.txs[i % len(self.txs)]
        got = list(m.tx.scan(start, end, prefix=prefix, reverse=reverse))
        assert got == expected_scan(m.view(self.now), start, end, prefix, reverse)
        # exhausted: it covers its whole bound
        m.ranges.append(lambda k: ((start is None or k >= start) and (end is None or k < end)
                                   and (prefix is None or k.startswith(prefix))))

    @precondition(lambda self: bool(self.txs))
    @rule(i=st.integers(0, MAX_TXS - 1), key=keys, for_prev=st.booleans(), steps=moves, iterate=st.booleans())
    def tx_cursor_walk(self, i: int, key: bytes, for_prev: bool, steps: list[str], iterate: bool) -> None:
        m = self.txs[i % len(self.txs)]
        cursor = m.tx.seek_for_prev(key) if for_prev else m.tx.seek(key)
        with cursor:
            cm = CursorModel(cursor, m.rows(), key, for_prev, self.now)
            m.ranges.append(cm.covers)
            for how in steps:
                cm.move(how, self.now)
            if iterate:  # iterating walks forward past the last key; an invalid cursor stays
                cm.iterate(self.now)

    @precondition(lambda self: bool(self.txs))
    @rule(i=st.integers(0, MAX_TXS - 1), key=keys, use_with=st.booleans())
    def tx_commit(self, i: int, key: bytes, use_with: bool) -> None:
        m = self.txs.pop(i % len(self.txs))
        cursor = m.tx.seek(key)  # covers [key, the key it lands on], or from key on when it finds none
        m.ranges.append(CursorModel(cursor, m.rows(), key, False, self.now).covers)
        it = m.tx.scan(key)  # never advanced: covers nothing
        # what expired since its snapshot is in no commit's writes: an expiry never conflicts
        conflict = any(m.covers(k) for written in self.history[m.start:] for k in written)
        if conflict and (m.writes or m.deleted):
            with pytest.raises(ConflictError):
                if use_with:
                    with m.tx:
                        pass
                else:
                    m.tx.commit()
        else:  # a read-only transaction never conflicts
            if use_with:
                with m.tx:
                    pass
            else:
                m.tx.commit()
            for start, end in m.deleted:
                delete_range(self.model, start, end)
            apply(self.model, m.writes, self.now)  # its ttls count from the commit
            if m.writes or m.deleted:
                self.history.append(m.written())
        self.ended.append(m.tx)
        with pytest.raises(TxClosedError):
            cursor.next()
        with pytest.raises(TxClosedError):
            next(it)

    @precondition(lambda self: bool(self.txs))
    @rule(i=st.integers(0, MAX_TXS - 1), raise_in_with=st.booleans())
    def tx_abort(self, i: int, raise_in_with: bool) -> None:
        m = self.txs.pop(i % len(self.txs))
        if raise_in_with:
            with pytest.raises(KeyError), m.tx:
                raise KeyError("abort")
        else:
            m.tx.abort()
        self.ended.append(m.tx)

    @precondition(lambda self: bool(self.ended))
    @rule(i=st.integers(0, 10), op=st.sampled_from(["get", "ttl", "set", "delete", "seek", "seek_for_prev", "scan",
                                                    "commit"]), key=keys)
    def use_ended_tx(self, i: int, op: str, key: bytes) -> None:
        tx = self.ended[i % len(self.ended)]
        with pytest.raises(TxClosedError):
            call_tx(tx, op, key)
        tx.abort()  # does nothing on an ended transaction

    # ------------------------------------------------------------------ flush, merge, reopen

    @rule()
    def flush(self) -> None:
        self.db.flush()

    @rule(full=st.booleans())
    def compact(self, full: bool) -> None:
        self.db.compact(full=full)
        if full:
            tables = self.db.stats().tables
            assert len(tables) <= 1
            if not (self.txs or self.cursors or self.scans):  # no snapshot sees an older version
                # so the merge dropped every delete, every older version and every value expired by now
                view = self.view()
                expiring = sum(self.model[k][1] is not None for k in view)
                got = [(t.entries, t.deletes, t.expiring) for t in tables]
                assert got == ([(len(view), 0, expiring)] if view else []), got
        assert self.db.check() == []

    @rule(config=configs)
    def reopen(self, config: Config) -> None:
        kv = self.db
        kv.close()
        kv.close()  # idempotent
        with pytest.raises(ClosedError):
            kv.get(b"a")
        self.orphans.extend(m.tx for m in self.txs)
        self.orphans.extend(m.cursor for m in self.cursors)
        self.orphans.extend(m.it for m in self.scans)
        self.txs, self.cursors, self.scans = [], [], []
        # a new KV's clock starts from what the clock says: set back, it is first put right, as a real
        # clock would be by the time a database reopens (what expired stays expired)
        self.clock.now = max(self.clock.now, self.now)
        self.kv = KV.open(self.dir, config, clock=self.clock)
        self.read_clock(b"")
        self.expired = 0
        assert list(self.kv.scan()) == sorted(self.view().items())

    @precondition(lambda self: bool(self.orphans))
    @rule(op=st.sampled_from(["get", "ttl", "set", "delete", "seek", "seek_for_prev", "scan", "commit"]), key=keys)
    def use_orphan(self, op: str, key: bytes) -> None:
        thing = self.orphans.pop()
        if isinstance(thing, KVTX):
            with pytest.raises((ClosedError, TxClosedError)):
                call_tx(thing, op, key)
            thing.abort()
        elif isinstance(thing, Cursor):
            with pytest.raises(ClosedError):
                thing.next() if op in ("get", "set", "delete") else thing.prev()
        else:
            with pytest.raises(ClosedError):
                next(thing)


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


TestKVMachine = KVMachine.TestCase
# One example is a whole run of the machine, and Hypothesis ends a run after about 200 steps (its buffer
# fills), so the machine takes four runs for each example the profile gives a plain test.
TestKVMachine.settings = settings(settings(), max_examples=4 * settings().max_examples)
