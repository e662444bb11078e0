"""The crash machine (tests/crashmachine.py) with collections: writes in two collections beside the KV's own
keys, transactions over two collections and the KV, ``drop_collection``, each also crashed part-way.

The machine's model holds every key by its stored key (``keyspace.stored``): the KV's own keys as they are
(every key the machine uses is below ``FF``), a collection's behind its prefix.  So one list of commits
orders the writes of every key space, and a recovered database must equal a prefix of it across all of
them: a transaction over two collections recovers whole or not at all, a drop all at once.  Reads check
each space alone (``read_all`` reads the KV and each collection, with their ttls), and a transaction's
conflicts are per stored key: a scan of the KV's own keys covers no collection's.

``CrashMachine`` itself is not changed (Hypothesis seeds its examples from its source); this subclass adds
rules and reads.
"""

from __future__ import annotations

from collections.abc import Callable

from crashhelp import (
    KEYS,
    Commit,
    Model,
    Status,
    Writes,
    expected_scan,
    keys,
    modes,
    pads,
    recovery_crashes,
    seeds,
    ttls,
)
from crashmachine import CrashMachine
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import precondition, rule

from kvstore import KV, Collection
from kvstore.keyspace import DEFAULT_END, prefix_of, split, stored, successor
from kvstore.simfs import CrashMode

#: The collections the machine writes: names of one and of three UTF-8 bytes.
NAMES = ["a", "bé"]
#: Write operations on collections, for ``run_op``: the collection is picked by the key.
COLL_OPS = ["cset", "cset_ttl", "cdelete", "cdelete_range", "ctx_two", "drop"]


def name_of(key: bytes) -> str:
    return NAMES[KEYS.index(key) % len(NAMES)]


def own(state: Model) -> Model:
    """The KV's own keys of ``state``."""
    return {k: v for k, v in state.items() if k < DEFAULT_END}


def in_collection(state: Model, name: str) -> Model:
    """The keys of collection ``name`` in ``state``, as the collection sees them."""
    prefix = prefix_of(name)
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


class CollectionCrashMachine(CrashMachine):
    """``CrashMachine`` with collections: see the module docstring."""

    def read_all(self, kv: KV) -> Model:
        """The KV's own pairs and each collection's, by stored key; each collection read by a full scan
        both ways, a get and a ttl of every key, and ``collections()`` naming the ones that hold a key."""
        got = super().read_all(kv)
        holding = []
        for name in NAMES:
            coll = kv.collection(name)
            rows = dict(coll.scan())
            assert list(coll.scan(reverse=True)) == sorted(rows.items(), reverse=True)
            for key in KEYS:
                assert coll.get(key) == rows.get(key), (name, key)
                if key in rows:
                    assert coll.ttl(key) == self.ttl_of(rows[key]), (name, key)
            if rows:
                holding.append(name)
            got.update({stored(k, prefix_of(name)): v for k, v in rows.items()})
        assert kv.collections() == sorted(holding, key=prefix_of)
        return got

    def coll_writes(self, name: str, writes: dict[bytes, bytes | None]) -> Writes:
        prefix = prefix_of(name)
        return {stored(k, prefix): v for k, v in writes.items()}

    def run_op(self, op: str, key: bytes, pad: int, ttl: float = 2.0) -> None:
        if op not in COLL_OPS:
            super().run_op(op, key, pad, ttl)
            return
        kv, name = self.db, name_of(key)
        coll = kv.collection(name)
        live = in_collection(self.live(self.model), name)
        writes: Writes
        if op in ("cset", "cset_ttl"):
            value = self.value(pad)
            writes = self.coll_writes(name, {key: value})
            if op == "cset_ttl":
                self.expiring(value, ttl)
            self.issue(writes, lambda: coll.set(key, value, ttl=ttl if op == "cset_ttl" else None),
                       self.config.sync)
        elif op == "cdelete":
            existed = key in live
            writes = self.coll_writes(name, {key: None}) if existed else {}
            self.issue(writes, lambda: self.check_equal(coll.delete(key), existed), self.config.sync)
        elif op == "cdelete_range":
            end = KEYS[(KEYS.index(key) + 4) % len(KEYS)]
            writes = self.coll_writes(name, {k: None for k in KEYS if key <= k < end})  # as the parent's
            self.issue(writes, lambda: coll.delete_range(key, end), self.config.sync)
        elif op == "drop":
            writes = self.coll_writes(name, dict.fromkeys(KEYS))  # a write even when the collection is empty
            self.issue(writes, lambda: kv.drop_collection(name), self.config.sync)
        else:  # a durable transaction over both collections and the KV's own keys
            other = KEYS[(KEYS.index(key) + 5) % len(KEYS)]
            first, second = self.value(pad), self.value(0)
            writes = {**self.coll_writes(NAMES[0], {key: first}), **self.coll_writes(NAMES[1], {other: second}),
                      other: None}
            tx = kv.new_tx()
            tx.collection(NAMES[0]).set(key, first)
            tx.collection(NAMES[1]).set(other, second)
            tx.delete(other)
            self.issue(writes, lambda: tx.commit(sync=True), True)

    def issue(self, writes: Writes, call: Callable[[], object], sync: bool) -> None:
        """Run the write ``call`` with ``writes`` in flight; once it returns they are a commit."""
        if not writes:  # nothing written (a delete of an absent key)
            call()
            return
        self.commits.append(Commit(writes, Status.INFLIGHT))
        call()
        self.commits.pop()
        self.committed(writes, sync)

    @staticmethod
    def check_equal(got: object, want: object) -> None:
        assert got == want, (got, want)

    # ------------------------------------------------------------------ rules

    @rule(op=st.sampled_from(COLL_OPS), key=keys, pad=pads, ttl=ttls)
    def coll_write(self, op: str, key: bytes, pad: int, ttl: float) -> None:
        self.run_op(op, key, pad, ttl)

    @rule(key=keys)
    def coll_get(self, key: bytes) -> None:
        name = name_of(key)
        value = in_collection(self.live(self.model), name).get(key)
        coll: Collection = self.db.collection(name)
        assert coll.get(key) == value
        assert coll.ttl(key) == (None if value is None else self.ttl_of(value))

    @rule(key=keys, start=st.none() | keys, end=st.none() | keys, reverse=st.booleans())
    def coll_scan(self, key: bytes, start: bytes | None, end: bytes | None, reverse: bool) -> None:
        name = name_of(key)
        got = list(self.db.collection(name).scan(start, end, reverse=reverse))
        assert got == expected_scan(in_collection(self.live(self.model), name), start, end, reverse)

    @rule(start=st.none() | keys, end=st.none() | keys, reverse=st.booleans())
    def kv_scan(self, start: bytes | None, end: bytes | None, reverse: bool) -> None:
        """The KV's scan: its own keys only."""
        got = list(self.db.scan(start, end, reverse=reverse))
        assert got == expected_scan(own(self.live(self.model)), start, end, reverse)

    @precondition(lambda self: self.tx is not None)
    @rule(start=st.none() | keys, end=st.none() | keys, reverse=st.booleans())
    def tx_scan(self, start: bytes | None, end: bytes | None, reverse: bool) -> None:
        """A transaction's scan of its own keys: it covers those only, up to the end of their space."""
        assert self.tx is not None
        got = list(self.tx.tx.scan(start, end, reverse=reverse))
        assert got == expected_scan(own(self.live(self.tx.view())), start, end, reverse)
        self.tx.scanned.append((start, DEFAULT_END if end is None else end))

    @precondition(lambda self: self.tx is not None)
    @rule(key=keys, pad=pads)
    def tx_coll_set(self, key: bytes, pad: int) -> None:
        assert self.tx is not None
        value = self.value(pad)
        self.tx.tx.collection(name_of(key)).set(key, value)
        self.tx.writes[stored(key, prefix_of(name_of(key)))] = value

    @precondition(lambda self: self.tx is not None)
    @rule(key=keys)
    def tx_coll_get(self, key: bytes) -> None:
        assert self.tx is not None
        name = name_of(key)
        assert self.tx.tx.collection(name).get(key) == in_collection(self.live(self.tx.view()), name).get(key)
        self.tx.read(stored(key, prefix_of(name)))

    @precondition(lambda self: self.tx is not None)
    @rule(key=keys, reverse=st.booleans())
    def tx_coll_scan(self, key: bytes, reverse: bool) -> None:
        """A full scan of one collection in the transaction: it covers that collection's whole space."""
        assert self.tx is not None
        name = name_of(key)
        got = list(self.tx.tx.collection(name).scan(reverse=reverse))
        assert got == expected_scan(in_collection(self.live(self.tx.view()), name), None, None, reverse)
        prefix = prefix_of(name)
        self.tx.scanned.append((prefix, successor(prefix)))

    @rule(op=st.sampled_from(COLL_OPS), key=keys, pad=pads, ttl=ttls, at=st.integers(1, 30), mode=modes,
          seed=seeds, crashes=recovery_crashes)
    def crash_during_coll(self, op: str, key: bytes, pad: int, ttl: float, at: int, mode: CrashMode, seed: int,
                          crashes: list[tuple[int, CrashMode, int]]) -> None:
        """Crash at the ``at``-th file operation of one write to a collection: the parent's rule, whose
        ``run_op`` is this machine's."""
        CrashMachine.crash_during(self, op, key, pad, ttl, at, mode, seed, crashes)


def test_stored_keys_of_the_model_split_back() -> None:
    """The model's stored keys are the engine's: each splits back into its collection and key."""
    for name in NAMES:
        for key in KEYS:
            assert split(stored(key, prefix_of(name))) == (name, key)


_profile = settings()
CollectionCrashMachine.TestCase.settings = settings(
    _profile,
    max_examples=_profile.max_examples,
    stateful_step_count=_profile.stateful_step_count,
)
TestCollectionCrashMachine = CollectionCrashMachine.TestCase
