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

import shutil
import tempfile
from collections.abc import Iterator

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from statemodel import (
    ALL_KEYS,
    MAX_LONG,
    MAX_TXS,
    Clock,
    CursorModel,
    Model,
    Rows,
    ScanModel,
    TxModel,
    apply,
    call_tx,
    configs,
    delete_range,
    expected_scan,
    keys,
    left,
    live,
    maybe_keys,
    moves,
    prefixes,
    ticks,
    ttls,
    values,
)

from kvstore import KV, KVTX, ClosedError, Config, ConflictError, Cursor, TxClosedError

names = st.sampled_from(["a", "b", "\u00e9", "\u00ff"])  # collection names: 1 and 2 bytes in UTF-8


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
        self.colls: dict[str, dict[bytes, bytes]] = {}  # each collection's keys (set without ttls)

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
                held = len(view) + sum(len(rows) for rows in self.colls.values())  # collections' keys too
                assert got == ([(held, 0, expiring)] if held else []), got
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

    # ------------------------------------------------------------------ collections (a dict each, no ttls)

    @rule(name=names, key=keys, value=values)
    def coll_set(self, name: str, key: bytes, value: bytes) -> None:
        self.db.collection(name).set(key, value)
        self.colls.setdefault(name, {})[key] = value

    @rule(name=names, key=keys)
    def coll_get_and_delete(self, name: str, key: bytes) -> None:
        rows = self.colls.get(name, {})
        coll = self.db.collection(name)
        assert coll.get(key) == rows.get(key)
        assert coll.delete(key) == (key in rows)
        rows.pop(key, None)

    @rule(name=names, start=keys, end=keys)
    def coll_delete_range(self, name: str, start: bytes, end: bytes) -> None:
        self.db.collection(name).delete_range(start, end)
        rows = self.colls.get(name, {})
        for key in [k for k in rows if start <= k < end]:
            del rows[key]

    @rule(name=names)
    def coll_drop(self, name: str) -> None:
        self.db.drop_collection(name)
        self.colls.pop(name, None)

    @rule(name=names, start=maybe_keys, end=maybe_keys, reverse=st.booleans())
    def coll_scan(self, name: str, start: bytes | None, end: bytes | None, reverse: bool) -> None:
        rows = sorted((k, v) for k, v in self.colls.get(name, {}).items()
                      if (start is None or k >= start) and (end is None or k < end))
        got = list(self.db.collection(name).scan(start, end, reverse=reverse))
        assert got == (rows[::-1] if reverse else rows)

    @rule(name=names, key=keys, steps=moves)
    def coll_cursor(self, name: str, key: bytes, steps: list[str]) -> None:
        order = sorted(self.colls.get(name, {}))
        i = next((n for n, k in enumerate(order) if k >= key), len(order))
        with self.db.collection(name).seek(key) as cursor:
            for step in steps:
                assert cursor.valid == (0 <= i < len(order))
                if not cursor.valid:
                    break
                assert cursor.key == order[i]
                getattr(cursor, step)()
                i += 1 if step == "next" else -1

    @rule(items=st.lists(st.tuples(names, keys, st.none() | values), min_size=1, max_size=4))
    def coll_transaction(self, items: list[tuple[str, bytes, bytes | None]]) -> None:
        with self.db.new_tx() as tx:
            for name, key, value in items:
                if value is None:
                    tx.collection(name).delete(key)
                else:
                    tx.collection(name).set(key, value)
        for name, key, value in items:
            if value is None:
                self.colls.get(name, {}).pop(key, None)
            else:
                self.colls.setdefault(name, {})[key] = value

    @invariant()
    def collections_hold_their_keys(self) -> None:
        if self.kv is None:
            return
        held = [name for name, rows in self.colls.items() if rows]
        assert self.kv.collections() == sorted(held, key=lambda n: (len(n.encode()), n.encode()))

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


TestKVMachine = KVMachine.TestCase
# One example is a whole run of the machine, and Hypothesis ends a run after about 200 steps (its buffer
# fills), so the machine takes four runs for each example the profile gives a plain test.
TestKVMachine.settings = settings(settings(), max_examples=4 * settings().max_examples)
