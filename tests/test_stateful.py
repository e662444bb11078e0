"""A Hypothesis state machine driving KV and KVTX against a dict model.

Tiny memtables and blocks make flushes and merges happen every few steps;
keys of up to three bytes from {0x00, a, b, 0xff} collide and share prefixes.
The machine checks every read (get, scan, cursors, transactions) against the
model, keeps scans and cursors open across later writes, flushes, merges and
reopens, and calls ``KV._check()`` after every step.  Its model of conflicts
is docs/transactions.md read literally: a transaction commits unless a commit after its
snapshot wrote a key it read (by get or delete, not served by its own writes)
or a key inside what one of its scans or cursors covered.  A range delete
writes its whole range: every key of the alphabet in it (two ranges with
bounds from the alphabet meet exactly where they share an alphabet key, the
greater of their starts).
"""

from __future__ import annotations

import bisect
import shutil
import tempfile
from collections.abc import Callable, Iterator

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from kvstore import KV, KVTX, ClosedError, Config, ConflictError, Cursor, InvalidCursorError, TxClosedError

Model = dict[bytes, bytes]

ALPHABET = b"\x00ab\xff"
keys = st.lists(st.sampled_from(ALPHABET), min_size=0, max_size=3).map(bytes)
#: every key ``keys`` draws, in order
ALL_KEYS = sorted({b""} | {bytes([a]) for a in ALPHABET} | {bytes([a, b]) for a in ALPHABET for b in ALPHABET}
                  | {bytes([a, b, c]) for a in ALPHABET for b in ALPHABET for c in ALPHABET})
values = st.binary(max_size=24)
maybe_keys = st.none() | keys
prefixes = st.none() | st.lists(st.sampled_from(ALPHABET), max_size=2).map(bytes)
moves = st.lists(st.sampled_from(["next", "prev"]), max_size=8)
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


def expected_scan(view: Model, start: bytes | None, end: bytes | None, prefix: bytes | None,
                  reverse: bool) -> list[tuple[bytes, bytes]]:
    """What ``scan(start, end, prefix=prefix, reverse=reverse)`` yields over ``view``."""
    out = [(k, v) for k, v in sorted(view.items())
           if (start is None or k >= start) and (end is None or k < end)
           and (prefix is None or k.startswith(prefix))]
    return out[::-1] if reverse else out


class CursorModel:
    """A cursor beside the sorted snapshot it must walk; ``pos`` None means invalid."""

    def __init__(self, cursor: Cursor, view: Model, key: bytes, for_prev: bool) -> None:
        self.cursor = cursor
        self.view = dict(view)
        self.keys = sorted(view)
        if for_prev:
            i = bisect.bisect_right(self.keys, key) - 1
            self.pos: int | None = i if i >= 0 else None
        else:
            i = bisect.bisect_left(self.keys, key)
            self.pos = i if i < len(self.keys) else None
        # what the cursor covered: from the seek key to the farthest keys reached (None: past that end)
        self.lo: bytes | None = key
        self.hi: bytes | None = key
        self.reach(not for_prev)
        self.check()

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
            assert c.value == self.view[key]

    def move(self, how: str) -> None:
        c = self.cursor
        if self.pos is None:
            with pytest.raises(InvalidCursorError):
                c.next() if how == "next" else c.prev()
        elif how == "next":
            c.next()
            self.pos = self.pos + 1 if self.pos + 1 < len(self.keys) else None
            self.reach(True)
        else:
            c.prev()
            self.pos = self.pos - 1 if self.pos > 0 else None
            self.reach(False)
        self.check()

    def rest(self) -> list[tuple[bytes, bytes]]:
        """What ``iter(cursor)`` yields from here."""
        if self.pos is None:
            return []
        return [(k, self.view[k]) for k in self.keys[self.pos:]]


class ScanModel:
    """A scan iterator left open, beside the pairs it still owes."""

    def __init__(self, it: Iterator[tuple[bytes, bytes]], expected: list[tuple[bytes, bytes]]) -> None:
        self.it = it
        self.expected = expected
        self.at = 0


class TxModel:
    """A transaction beside its view (snapshot at begin plus own writes), its pending writes, and what
    it read: keys, and predicates for the ranges its scans and cursors covered."""

    def __init__(self, tx: KVTX, committed: Model, start: int) -> None:
        self.tx = tx
        self.view = dict(committed)
        self.writes: dict[bytes, bytes | None] = {}
        self.start = start  # commits before this index of the machine's history are in its snapshot
        self.reads: set[bytes] = set()
        self.ranges: list[Callable[[bytes], bool]] = []
        self.deleted: list[tuple[bytes, bytes]] = []  # its range deletes

    def read(self, key: bytes) -> None:
        if key not in self.writes and not any(s <= key < e for s, e in self.deleted):
            self.reads.add(key)

    def delete_range(self, start: bytes, end: bytes) -> None:
        for key in [k for k in self.view if start <= k < end]:
            del self.view[key]
        for key in [k for k in self.writes if start <= k < end]:
            del self.writes[key]
        if start < end:
            self.deleted.append((start, end))

    def written(self) -> set[bytes]:
        """The keys its commit writes: its own writes and every key of its range deletes."""
        return set(self.writes) | {k for s, e in self.deleted for k in ALL_KEYS if s <= k < e}

    def covers(self, key: bytes) -> bool:
        return key in self.reads or any(r(key) for r in self.ranges)

    def set(self, key: bytes, value: bytes) -> None:
        self.view[key] = value
        self.writes[key] = value

    def delete(self, key: bytes) -> None:
        self.view.pop(key, None)
        self.writes[key] = None


def delete_range(model: Model, start: bytes, end: bytes) -> None:
    for key in [k for k in model if start <= k < end]:
        del model[key]


def apply(model: Model, writes: dict[bytes, bytes | None]) -> None:
    for key, value in writes.items():
        if value is None:
            model.pop(key, None)
        else:
            model[key] = value


class KVMachine(RuleBasedStateMachine):
    """KV and KVTX against a dict: ``model`` is the committed state."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="kvstore-stateful-")
        self.kv: KV | None = None
        self.model: Model = {}
        self.history: list[set[bytes]] = []  # the keys each commit wrote, in commit order
        self.txs: list[TxModel] = []
        self.cursors: list[CursorModel] = []
        self.scans: list[ScanModel] = []
        # transactions that committed or aborted: every call but abort() raises TxClosedError
        self.ended: list[KVTX] = []
        # transactions, cursors and scans open when their KV closed: the next use raises ClosedError
        self.orphans: list[KVTX | Cursor | Iterator[tuple[bytes, bytes]]] = []

    @property
    def db(self) -> KV:
        assert self.kv is not None
        return self.kv

    @initialize(config=configs)
    def open(self, config: Config) -> None:
        self.kv = KV.open(self.dir, config)

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
        live = len(self.txs) + len(self.cursors) + len(self.scans)
        assert self.kv.stats().live_snapshots == live

    # ------------------------------------------------------------------ one-operation writes and reads

    @rule(key=keys, value=values)
    def set(self, key: bytes, value: bytes) -> None:
        self.db.set(key, value)
        self.model[key] = value
        self.history.append({key})

    @rule(items=st.lists(st.tuples(keys, values), min_size=1, max_size=12))
    def set_many(self, items: list[tuple[bytes, bytes]]) -> None:
        for key, value in items:
            self.db.set(key, value)
            self.model[key] = value
            self.history.append({key})

    @rule(key=keys)
    def delete(self, key: bytes) -> None:
        assert self.db.delete(key) is (key in self.model)
        if self.model.pop(key, None) is not None:
            self.history.append({key})

    @rule(start=keys, end=keys)
    def delete_range(self, start: bytes, end: bytes) -> None:
        self.db.delete_range(start, end)
        delete_range(self.model, start, end)
        if start < end:
            self.history.append({k for k in ALL_KEYS if start <= k < end})

    @rule(key=keys)
    def get(self, key: bytes) -> None:
        assert self.db.get(key) == self.model.get(key)

    @rule(start=maybe_keys, end=maybe_keys, prefix=prefixes, reverse=st.booleans())
    def scan(self, start: bytes | None, end: bytes | None, prefix: bytes | None, reverse: bool) -> None:
        got = list(self.db.scan(start, end, prefix=prefix, reverse=reverse))
        assert got == expected_scan(self.model, start, end, prefix, reverse)

    @rule(key=keys, for_prev=st.booleans(), steps=moves, iterate=st.booleans())
    def cursor_walk(self, key: bytes, for_prev: bool, steps: list[str], iterate: bool) -> None:
        cursor = self.db.seek_for_prev(key) if for_prev else self.db.seek(key)
        with cursor:
            m = CursorModel(cursor, self.model, key, for_prev)
            for how in steps:
                m.move(how)
            if iterate:
                assert list(cursor) == m.rest()

    @rule(items=st.lists(st.tuples(keys, st.none() | values), max_size=4))
    def transact(self, items: list[tuple[bytes, bytes | None]]) -> None:
        def fn(tx: KVTX) -> int:
            for key, value in items:
                if value is None:
                    tx.delete(key)
                else:
                    tx.set(key, value)
            return len(items)

        assert self.db.transact(fn) == len(items)
        apply(self.model, dict(items))
        if items:
            self.history.append({k for k, _ in items})

    # ------------------------------------------------------------------ long-lived cursors and scans

    @precondition(lambda self: len(self.cursors) < MAX_LONG)
    @rule(key=keys, for_prev=st.booleans())
    def open_cursor(self, key: bytes, for_prev: bool) -> None:
        cursor = self.db.seek_for_prev(key) if for_prev else self.db.seek(key)
        self.cursors.append(CursorModel(cursor, self.model, key, for_prev))

    @precondition(lambda self: bool(self.cursors))
    @rule(i=st.integers(0, MAX_LONG - 1), steps=moves)
    def move_cursor(self, i: int, steps: list[str]) -> None:
        m = self.cursors[i % len(self.cursors)]
        m.check()
        for how in steps:
            m.move(how)

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
        self.scans.append(ScanModel(it, expected_scan(self.model, start, end, prefix, reverse)))

    @precondition(lambda self: bool(self.scans))
    @rule(i=st.integers(0, MAX_LONG - 1), n=st.integers(1, 6))
    def advance_scan(self, i: int, n: int) -> None:
        i %= len(self.scans)
        m = self.scans[i]
        for _ in range(n):
            if m.at == len(m.expected):
                with pytest.raises(StopIteration):
                    next(m.it)
                del self.scans[i]  # exhausted: its snapshot is released
                return
            assert next(m.it) == m.expected[m.at]
            m.at += 1

    # ------------------------------------------------------------------ transactions

    @precondition(lambda self: len(self.txs) < MAX_TXS)
    @rule()
    def begin(self) -> None:
        self.txs.append(TxModel(self.db.new_tx(), self.model, len(self.history)))

    @precondition(lambda self: bool(self.txs))
    @rule(i=st.integers(0, MAX_TXS - 1), key=keys, value=values)
    def tx_set(self, i: int, key: bytes, value: bytes) -> None:
        m = self.txs[i % len(self.txs)]
        m.tx.set(key, value)
        m.set(key, value)

    @precondition(lambda self: bool(self.txs))
    @rule(i=st.integers(0, MAX_TXS - 1), key=keys)
    def tx_delete(self, i: int, key: bytes) -> None:
        m = self.txs[i % len(self.txs)]
        assert m.tx.delete(key) is (key in m.view)
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
        assert m.tx.get(key) == m.view.get(key)
        m.read(key)

    @precondition(lambda self: bool(self.txs))
    @rule(i=st.integers(0, MAX_TXS - 1), start=maybe_keys, end=maybe_keys, prefix=prefixes, reverse=st.booleans())
    def tx_scan(self, i: int, start: bytes | None, end: bytes | None, prefix: bytes | None, reverse: bool) -> None:
        m = self.txs[i % len(self.txs)]
        got = list(m.tx.scan(start, end, prefix=prefix, reverse=reverse))
        assert got == expected_scan(m.view, start, end, prefix, reverse)
        # exhausted: it covers its whole bound
        m.ranges.append(lambda k: ((start is None or k >= start) and (end is None or k < end)
                                   and (prefix is None or k.startswith(prefix))))

    @precondition(lambda self: bool(self.txs))
    @rule(i=st.integers(0, MAX_TXS - 1), key=keys, for_prev=st.booleans(), steps=moves, iterate=st.booleans())
    def tx_cursor_walk(self, i: int, key: bytes, for_prev: bool, steps: list[str], iterate: bool) -> None:
        m = self.txs[i % len(self.txs)]
        cursor = m.tx.seek_for_prev(key) if for_prev else m.tx.seek(key)
        with cursor:
            cm = CursorModel(cursor, m.view, key, for_prev)
            m.ranges.append(cm.covers)
            for how in steps:
                cm.move(how)
            if iterate:
                assert list(cursor) == cm.rest()
                if cm.pos is not None:  # iterating walks forward past the last key; an invalid cursor stays
                    cm.pos = None
                    cm.reach(True)

    @precondition(lambda self: bool(self.txs))
    @rule(i=st.integers(0, MAX_TXS - 1), key=keys, use_with=st.booleans())
    def tx_commit(self, i: int, key: bytes, use_with: bool) -> None:
        m = self.txs.pop(i % len(self.txs))
        cursor = m.tx.seek(key)  # covers [key, the key it lands on], or from key on when it finds none
        m.ranges.append(CursorModel(cursor, m.view, key, for_prev=False).covers)
        it = m.tx.scan(key)  # never advanced: covers nothing
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
            apply(self.model, m.writes)
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
    @rule(i=st.integers(0, 10), op=st.sampled_from(["get", "set", "delete", "seek", "seek_for_prev", "scan",
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
            assert len(self.db.stats().tables) <= 1
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
        self.kv = KV.open(self.dir, config)
        assert list(self.kv.scan()) == sorted(self.model.items())

    @precondition(lambda self: bool(self.orphans))
    @rule(op=st.sampled_from(["get", "set", "delete", "seek", "seek_for_prev", "scan", "commit"]), key=keys)
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
    elif op == "set":
        tx.set(key, b"v")
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
