"""Serializable transactions (docs/transactions.md): Hermitage-style interleavings, what each read covers, ``transact``.

Every test runs its transactions in one thread: open them with ``kv.new_tx()``, interleave their
operations, commit in a chosen order.  The anomalies follow Hermitage (G0, G1a, G1b, G1c, P4, G-single,
G2-item, G2 on a predicate); each must be prevented, either because buffered writes and snapshots never
let it happen or because the later committer gets ``ConflictError``.  The cases that must *not* conflict
are here too: blind writes, read-only transactions, disjoint keys, writes committed before the snapshot,
the writes of a rival that aborted or itself conflicted, a ``get`` answered by the transaction's own
buffered write, and reads made outside the transaction.

The rule checked (docs/transactions.md, "When a commit conflicts"): ``commit()`` raises ``ConflictError``
exactly when a transaction that committed after this one's snapshot wrote a key this one read, by ``get`` or
``delete``, or a key inside a range one of its scans or cursors covered. A scan covers what it walked
(``[start, last key yielded]`` forward, ``[last key yielded, end)`` in reverse) and its whole bound once it
raised ``StopIteration``; a cursor covers ``[a, m]`` for ``seek(a)`` landing on ``m`` and ``[a, end of
keys)`` when it found nothing, ``[m, a]`` for ``seek_for_prev(a)`` landing on ``m`` and ``[first key, a]``
when it found nothing, and each step widens that to include the key it reached (or the rest of the key space
in that direction when it stepped off the end). Closing a cursor or a scan does not shrink what it covered.
A ``get`` or ``delete`` answered by the transaction's own buffered write reads nothing of the database and
is no read (DESIGN.md, "Isolation"). A one-operation ``kv.set``/``kv.delete`` is a committed transaction
like any.
"""

from __future__ import annotations

import bisect
import dataclasses
import pathlib
from collections.abc import Callable, Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvstore import KV, KVTX, ClosedError, Config, ConflictError, TxClosedError
from kvstore.simfs import SimFS

CONFIG = Config(sync=False, background=False)

X, Y, Z = b"x", b"y", b"z"


def _open(config: Config = CONFIG) -> KV:
    return KV.open("/db", config, fs=SimFS())


@pytest.fixture
def kv() -> Iterator[KV]:
    db = _open()
    yield db
    db.close()


@pytest.fixture
def xy(kv: KV) -> KV:
    """Hermitage's starting state: x = 10, y = 20."""
    kv.set(X, b"10")
    kv.set(Y, b"20")
    return kv


def _state(kv: KV) -> dict[bytes, bytes]:
    return dict(kv.scan())


def _assert_closed(tx: KVTX) -> None:
    """Every call but ``abort()`` raises ``TxClosedError``; ``abort()`` does nothing."""
    calls: list[Callable[[], object]] = [
        lambda: tx.get(X), lambda: tx.set(X, b"v"), lambda: tx.delete(X), lambda: tx.seek(X),
        lambda: tx.seek_for_prev(X), lambda: next(tx.scan()), lambda: tx.commit(),
        lambda: tx.commit(sync=True),
    ]
    for call in calls:
        with pytest.raises(TxClosedError):
            call()
    tx.abort()
    tx.abort()


def _commit_conflicts(kv: KV, tx: KVTX) -> None:
    """``tx.commit()`` raises ``ConflictError``, applies nothing and leaves ``tx`` closed."""
    before = _state(kv)
    seq = kv.stats().sequence
    with pytest.raises(ConflictError):
        tx.commit()
    assert _state(kv) == before
    assert kv.stats().sequence == seq
    _assert_closed(tx)


# ---------------------------------------------------------------- Hermitage anomalies


@pytest.mark.parametrize("first", [1, 2], ids=["t1-commits-first", "t2-commits-first"])
def test_tx_dirty_write_never_mixes_two_transactions(xy: KV, first: int) -> None:
    """G0: T1 and T2 write x and y in turns; each commit lands whole and the last committer wins."""
    t1, t2 = xy.new_tx(), xy.new_tx()
    t1.set(X, b"11")
    t2.set(X, b"12")
    t1.set(Y, b"21")
    t2.set(Y, b"22")
    assert xy.get(X) == b"10" and xy.get(Y) == b"20"  # nothing visible before commit
    order = [(t1, {X: b"11", Y: b"21"}), (t2, {X: b"12", Y: b"22"})]
    if first == 2:
        order.reverse()
    for tx, after in order:
        tx.commit()  # blind writes: no conflict
        assert _state(xy) == after


def test_tx_aborted_read_is_never_seen(xy: KV) -> None:
    """G1a: T2 never sees what T1 wrote and then aborted; T2's own commit does not conflict with it."""
    t1, t2 = xy.new_tx(), xy.new_tx()
    t1.set(X, b"101")
    t1.set(Z, b"new")
    assert t2.get(X) == b"10"
    t1.abort()
    assert t2.get(X) == b"10"
    assert t2.get(Z) is None
    assert list(t2.scan()) == [(X, b"10"), (Y, b"20")]
    t2.set(Y, b"from-t2")
    t2.commit()
    assert _state(xy) == {X: b"10", Y: b"from-t2"}


def test_tx_intermediate_read_is_never_seen(xy: KV) -> None:
    """G1b: T2 never sees T1's intermediate value, before or after T1 commits its final one."""
    t1, t2 = xy.new_tx(), xy.new_tx()
    t1.set(X, b"101")
    assert t2.get(X) == b"10"
    t1.set(X, b"11")
    t1.commit()
    assert t2.get(X) == b"10"
    assert list(t2.scan(reverse=True)) == [(Y, b"20"), (X, b"10")]
    t2.commit()  # read-only: never a conflict
    assert _state(xy) == {X: b"11", Y: b"20"}


def test_tx_circular_information_flow_is_a_conflict(xy: KV) -> None:
    """G1c: T1 writes x and reads y, T2 writes y and reads x; the second to commit conflicts."""
    t1, t2 = xy.new_tx(), xy.new_tx()
    t1.set(X, b"11")
    t2.set(Y, b"22")
    assert t1.get(Y) == b"20"
    assert t2.get(X) == b"10"
    t1.commit()
    _commit_conflicts(xy, t2)
    assert _state(xy) == {X: b"11", Y: b"20"}


def test_tx_lost_update_is_a_conflict(xy: KV) -> None:
    """P4: both read x and write x + 1; the second commit would lose the first one's update."""
    t1, t2 = xy.new_tx(), xy.new_tx()
    v1 = int(t1.get(X) or b"0")
    v2 = int(t2.get(X) or b"0")
    t1.set(X, b"%d" % (v1 + 1))
    t2.set(X, b"%d" % (v2 + 1))
    t1.commit()
    _commit_conflicts(xy, t2)
    assert xy.get(X) == b"11"


def test_tx_read_skew_reads_one_snapshot(xy: KV) -> None:
    """G-single: T2 moves 2 from y to x between T1's reads; T1 still sees x + y = 30, and commits."""
    t1, t2 = xy.new_tx(), xy.new_tx()
    assert t1.get(X) == b"10"
    assert t2.get(X) == b"10" and t2.get(Y) == b"20"
    t2.set(X, b"12")
    t2.set(Y, b"18")
    t2.commit()
    assert t1.get(Y) == b"20"
    assert dict(t1.scan()) == {X: b"10", Y: b"20"}
    with t1.seek_for_prev(b"zz") as cursor:
        assert (cursor.key, cursor.value) == (Y, b"20")
    t1.commit()  # read-only: never a conflict
    assert _state(xy) == {X: b"12", Y: b"18"}


def test_tx_read_skew_with_a_write_is_a_conflict(xy: KV) -> None:
    """G-single with T1 writing: T1 read the old x and y, T2 rewrote both, T1's write must not land."""
    t1, t2 = xy.new_tx(), xy.new_tx()
    assert t1.get(X) == b"10"
    t2.set(X, b"12")
    t2.set(Y, b"18")
    t2.commit()
    assert t1.get(Y) == b"20"
    t1.set(Z, b"%d" % (10 + 20))  # writes what it saw as the total
    _commit_conflicts(xy, t1)
    assert _state(xy) == {X: b"12", Y: b"18"}


def test_tx_write_skew_is_a_conflict(xy: KV) -> None:
    """G2-item: both read x and y; T1 writes x, T2 writes y; the second commit conflicts."""
    t1, t2 = xy.new_tx(), xy.new_tx()
    for tx in (t1, t2):
        assert tx.get(X) == b"10" and tx.get(Y) == b"20"
    t1.set(X, b"11")
    t2.set(Y, b"21")
    t1.commit()
    _commit_conflicts(xy, t2)
    assert _state(xy) == {X: b"11", Y: b"20"}


def _walk_prefix(tx: KVTX, how: str, prefix: bytes) -> list[bytes]:
    """The keys under ``prefix`` in ``tx``'s view, read by ``how`` so that the read covers all of them."""
    if how == "scan":
        return [k for k, _ in tx.scan(prefix, prefix + b"\xff")]
    if how == "reverse-scan":
        return [k for k, _ in tx.scan(prefix, prefix + b"\xff", reverse=True)][::-1]
    if how == "prefix-scan":
        return [k for k, _ in tx.scan(prefix=prefix)]
    keys = []
    if how == "cursor":
        with tx.seek(prefix) as cursor:  # walks until it stands past the prefix
            while cursor.valid and cursor.key.startswith(prefix):
                keys.append(cursor.key)
                cursor.next()
        return keys
    assert how == "seek_for_prev"
    with tx.seek_for_prev(prefix + b"\xff") as cursor:
        while cursor.valid and cursor.key.startswith(prefix):
            keys.append(cursor.key)
            cursor.prev()
    return keys[::-1]


READS = ["scan", "reverse-scan", "prefix-scan", "cursor", "seek_for_prev"]


@pytest.mark.parametrize("how", READS, ids=str)
def test_tx_write_skew_on_a_predicate_is_a_conflict(kv: KV, how: str) -> None:
    """G2: two doctors on call; each transaction reads who is on call and, seeing two, takes one off.
    The second commit conflicts: its read of the range covered the key the first one wrote."""
    kv.set(b"a", b"sentinel")
    kv.set(b"oncall/alice", b"yes")
    kv.set(b"oncall/bob", b"yes")
    kv.set(b"z", b"sentinel")
    t1, t2 = kv.new_tx(), kv.new_tx()
    assert _walk_prefix(t1, how, b"oncall/") == [b"oncall/alice", b"oncall/bob"]
    assert _walk_prefix(t2, how, b"oncall/") == [b"oncall/alice", b"oncall/bob"]
    t1.delete(b"oncall/alice")
    t2.delete(b"oncall/bob")
    t1.commit()
    _commit_conflicts(kv, t2)
    assert [k for k, _ in kv.scan(prefix=b"oncall/")] == [b"oncall/bob"]


@pytest.mark.parametrize("how", READS, ids=str)
def test_tx_phantom_insert_into_a_read_range_is_a_conflict(kv: KV, how: str) -> None:
    """Each transaction counts the tasks under a prefix and inserts one if there are fewer than three.
    The second commit conflicts: the key the first one inserted did not exist when it read (a phantom)."""
    kv.set(b"a", b"sentinel")
    kv.set(b"task/1", b"t")
    kv.set(b"task/2", b"t")
    kv.set(b"z", b"sentinel")
    t1, t2 = kv.new_tx(), kv.new_tx()
    for tx, key in ((t1, b"task/3a"), (t2, b"task/3b")):
        if len(_walk_prefix(tx, how, b"task/")) < 3:
            tx.set(key, b"t")
    t1.commit()
    _commit_conflicts(kv, t2)
    assert [k for k, _ in kv.scan(prefix=b"task/")] == [b"task/1", b"task/2", b"task/3a"]


@pytest.mark.parametrize("how", READS, ids=str)
def test_tx_a_read_range_emptied_after_the_snapshot_is_a_conflict(kv: KV, how: str) -> None:
    """A later commit deletes every key a scan or cursor saw: the reader's write must not land."""
    kv.set(b"a", b"sentinel")
    kv.set(b"job/1", b"j")
    kv.set(b"job/2", b"j")
    kv.set(b"z", b"sentinel")
    tx = kv.new_tx()
    assert len(_walk_prefix(tx, how, b"job/")) == 2
    kv.delete(b"job/1")
    kv.delete(b"job/2")
    tx.set(b"count", b"2")
    _commit_conflicts(kv, tx)


def test_tx_three_transaction_cycle_conflicts_once(kv: KV) -> None:
    """T1 reads x writes y, T2 reads y writes z, T3 reads z writes x.  T1 commits; T2 read y, which T1
    wrote: conflict; T3 read z, which only the failed T2 wrote: it commits."""
    for key in (X, Y, Z):
        kv.set(key, b"0")
    t1, t2, t3 = kv.new_tx(), kv.new_tx(), kv.new_tx()
    t1.set(Y, b"%s+1" % t1.get(X))
    t2.set(Z, b"%s+1" % t2.get(Y))
    t3.set(X, b"%s+1" % t3.get(Z))
    t1.commit()
    _commit_conflicts(kv, t2)
    t3.commit()
    assert _state(kv) == {X: b"0+1", Y: b"0+1", Z: b"0"}


def test_tx_read_made_after_a_later_commit_still_conflicts(xy: KV) -> None:
    """T reads x only after another transaction committed a new x: T sees its snapshot's x, so its
    write, based on a stale x, conflicts."""
    tx = xy.new_tx()
    xy.set(X, b"11")
    assert tx.get(X) == b"10"
    tx.set(Y, b"10 + 20")
    _commit_conflicts(xy, tx)


@pytest.mark.parametrize("writer", ["set", "delete", "tx"], ids=str)
def test_tx_conflicts_with_every_kind_of_later_commit(xy: KV, writer: str) -> None:
    """One-operation ``kv.set`` and ``kv.delete`` are commits like a transaction's."""
    tx = xy.new_tx()
    assert tx.get(X) == b"10"
    tx.set(Y, b"21")
    if writer == "set":
        xy.set(X, b"11")
    elif writer == "delete":
        assert xy.delete(X) is True
    else:
        with xy.new_tx() as other:
            other.set(X, b"11")
    _commit_conflicts(xy, tx)


@pytest.mark.parametrize("existed", [True, False], ids=["existing-key", "missing-key"])
def test_tx_delete_is_a_read(xy: KV, existed: bool) -> None:
    """``tx.delete`` reports whether the key exists, so it reads it: a later commit deleting the key it
    deleted, or creating the key it found missing, conflicts."""
    key = X if existed else b"w"
    t1, t2 = xy.new_tx(), xy.new_tx()
    assert t1.delete(key) is existed
    if existed:
        assert t2.delete(key) is True
        t2.commit()
    else:
        xy.set(key, b"appeared")
    _commit_conflicts(xy, t1)


# ---------------------------------------------------------------- what each read covers

BASE = {b"b": b"B", b"d": b"D", b"f": b"F", b"h": b"H"}  # and b"e" was deleted before the snapshot


def _take(it: Iterator[tuple[bytes, bytes]], n: int) -> list[bytes]:
    return [next(it)[0] for _ in range(n)]


Read = Callable[[KVTX], object]


def _seek(key: bytes, moves: str, for_prev: bool, expected: list[bytes | None]) -> Read:
    def read(tx: KVTX) -> None:
        with (tx.seek_for_prev(key) if for_prev else tx.seek(key)) as cursor:
            seen = [cursor.key if cursor.valid else None]
            for move in moves:
                cursor.next() if move == "n" else cursor.prev()
                seen.append(cursor.key if cursor.valid else None)
            assert seen == expected

    return read


def _scan(start: bytes | None, end: bytes | None, *, prefix: bytes | None = None, reverse: bool = False,
          take: int | None = None, expected: list[bytes]) -> Read:
    def read(tx: KVTX) -> None:
        it = tx.scan(start, end, prefix=prefix, reverse=reverse)
        keys = [k for k, _ in it] if take is None else _take(it, take)
        assert keys == expected

    return read


# (name, read, [(key written by a later commit, whether the reader's commit conflicts)])
COVERAGE: list[tuple[str, Read, list[tuple[bytes, bool]]]] = [
    ("get-existing", lambda tx: tx.get(b"d"), [(b"d", True), (b"c", False), (b"da", False)]),
    ("get-missing", lambda tx: tx.get(b"c"), [(b"c", True), (b"b", False), (b"d", False)]),
    ("get-deleted", lambda tx: tx.get(b"e"), [(b"e", True), (b"f", False)]),
    ("delete-existing", lambda tx: tx.delete(b"d"), [(b"d", True), (b"f", False)]),
    ("delete-missing", lambda tx: tx.delete(b"c"), [(b"c", True), (b"d", False)]),
    ("scan-exhausted", _scan(b"c", b"g", expected=[b"d", b"f"]),
     [(b"c", True), (b"e", True), (b"f", True), (b"fz", True), (b"g", False), (b"b", False), (b"h", False)]),
    ("scan-of-an-empty-range", _scan(b"i", b"k", expected=[]), [(b"i", True), (b"j", True), (b"k", False)]),
    ("scan-stopped-early", _scan(None, None, take=2, expected=[b"b", b"d"]),
     [(b"", True), (b"a", True), (b"c", True), (b"d", True), (b"da", False), (b"e", False), (b"f", False),
      (b"z", False)]),
    ("scan-stopped-at-its-first-key", _scan(b"c", None, take=1, expected=[b"d"]),
     [(b"c", True), (b"cz", True), (b"d", True), (b"b", False), (b"da", False)]),
    ("scan-taking-every-key-without-exhausting", _scan(b"c", b"g", take=2, expected=[b"d", b"f"]),
     [(b"e", True), (b"f", True), (b"fa", False), (b"g", False)]),
    ("reverse-scan-exhausted", _scan(b"c", b"g", reverse=True, expected=[b"f", b"d"]),
     [(b"c", True), (b"e", True), (b"fz", True), (b"g", False), (b"b", False)]),
    ("reverse-scan-stopped-early", _scan(None, None, reverse=True, take=2, expected=[b"h", b"f"]),
     [(b"z", True), (b"h", True), (b"g", True), (b"f", True), (b"ez", False), (b"e", False), (b"d", False)]),
    ("prefix-scan", _scan(None, None, prefix=b"d", expected=[b"d"]),
     [(b"d", True), (b"dz", True), (b"d\xff\xff", True), (b"e", False), (b"c", False)]),
    ("prefix-scan-within-bounds", _scan(b"da", None, prefix=b"d", expected=[]),
     [(b"da", True), (b"dz", True), (b"d", False), (b"e", False)]),
    ("reverse-prefix-scan-stopped-early", _scan(None, None, prefix=b"f", reverse=True, take=1, expected=[b"f"]),
     [(b"fz", True), (b"f", True), (b"ez", False), (b"g", False)]),
    ("seek-onto-its-key", _seek(b"d", "", False, [b"d"]), [(b"d", True), (b"cz", False), (b"da", False)]),
    ("seek-between-keys", _seek(b"c", "", False, [b"d"]),
     [(b"c", True), (b"cz", True), (b"d", True), (b"b", False), (b"da", False)]),
    ("seek-past-the-last-key", _seek(b"i", "", False, [None]),
     [(b"i", True), (b"z", True), (b"h", False), (b"hz", False)]),
    ("seek-then-next", _seek(b"c", "n", False, [b"d", b"f"]),
     [(b"e", True), (b"f", True), (b"fz", False), (b"b", False)]),
    ("seek-then-next-off-the-end", _seek(b"g", "n", False, [b"h", None]),
     [(b"g", True), (b"z", True), (b"f", False)]),
    ("seek-then-prev", _seek(b"e", "p", False, [b"f", b"d"]),
     [(b"d", True), (b"da", True), (b"e", True), (b"f", True), (b"cz", False), (b"fz", False)]),
    ("seek-then-prev-off-the-start", _seek(b"c", "pp", False, [b"d", b"b", None]),
     [(b"", True), (b"a", True), (b"c", True), (b"da", False)]),
    ("seek-then-next-and-back", _seek(b"c", "np", False, [b"d", b"f", b"d"]),
     [(b"e", True), (b"f", True), (b"fa", False), (b"b", False)]),
    ("seek_for_prev-between-keys", _seek(b"e", "", True, [b"d"]),
     [(b"d", True), (b"da", True), (b"e", True), (b"c", False), (b"ea", False)]),
    ("seek_for_prev-onto-its-key", _seek(b"d", "", True, [b"d"]),
     [(b"d", True), (b"cz", False), (b"da", False)]),
    ("seek_for_prev-before-the-first-key", _seek(b"a", "", True, [None]),
     [(b"", True), (b"a", True), (b"aa", False), (b"b", False)]),
    ("seek_for_prev-then-prev", _seek(b"e", "p", True, [b"d", b"b"]),
     [(b"b", True), (b"c", True), (b"a", False), (b"ea", False)]),
    ("seek_for_prev-then-next", _seek(b"g", "n", True, [b"f", b"h"]),
     [(b"g", True), (b"h", True), (b"ha", False), (b"e", False)]),
    ("seek_for_prev-then-next-off-the-end", _seek(b"g", "nn", True, [b"f", b"h", None]),
     [(b"z", True), (b"ez", False)]),
]


def _iterated(tx: KVTX) -> None:
    with tx.seek(b"c") as cursor:
        assert [k for k, _ in cursor] == [b"d", b"f", b"h"]


COVERAGE.append(("cursor-iterated-to-the-end", _iterated, [(b"c", True), (b"z", True), (b"b", False)]))

COVERAGE_CASES = [(read, key, conflict) for _, read, pairs in COVERAGE for key, conflict in pairs]
COVERAGE_IDS = [f"{name}-write-{key.decode('latin-1')!r}-{'conflicts' if conflict else 'commits'}"
                for name, _, pairs in COVERAGE for key, conflict in pairs]


@pytest.mark.parametrize(("read", "key", "conflict"), COVERAGE_CASES, ids=COVERAGE_IDS)
def test_tx_conflicts_exactly_when_a_later_write_lands_in_what_it_read(
        kv: KV, read: Read, key: bytes, conflict: bool) -> None:
    for k, v in BASE.items():
        kv.set(k, v)
    kv.set(b"e", b"E")
    kv.delete(b"e")
    tx = kv.new_tx()
    read(tx)
    tx.set(b"~own", b"T")  # a writer: read-only transactions never conflict
    kv.set(key, b"later")
    if conflict:
        _commit_conflicts(kv, tx)
        assert kv.get(b"~own") is None
    else:
        tx.commit()
        assert kv.get(b"~own") == b"T"


# ---------------------------------------------------------------- what never conflicts


@pytest.mark.parametrize("order", [(0, 1, 2), (2, 1, 0), (1, 2, 0)], ids=["in-order", "reversed", "mixed"])
def test_tx_blind_writes_never_conflict_and_the_last_committer_wins(xy: KV, order: tuple[int, ...]) -> None:
    txs = [xy.new_tx() for _ in range(3)]
    for i, tx in enumerate(txs):
        tx.set(X, b"x%d" % i)
        tx.set(b"only-%d" % i, b"1")
    for i in order:
        txs[i].commit()
    assert xy.get(X) == b"x%d" % order[-1]
    assert all(xy.get(b"only-%d" % i) == b"1" for i in range(3))


def test_tx_read_only_transactions_never_conflict(xy: KV) -> None:
    """A transaction that read everything every way, while others rewrote all of it, commits."""
    reader = xy.new_tx()
    assert reader.get(X) == b"10" and reader.get(b"missing") is None
    assert list(reader.scan()) == [(X, b"10"), (Y, b"20")]
    assert list(reader.scan(reverse=True)) == [(Y, b"20"), (X, b"10")]
    assert list(reader.scan(prefix=b"x")) == [(X, b"10")]
    with reader.seek(b"") as cursor:
        assert [k for k, _ in cursor] == [X, Y]
    with reader.seek_for_prev(b"\xff") as cursor:
        cursor.prev()
        cursor.prev()
        assert not cursor.valid
    xy.set(X, b"11")
    xy.delete(Y)
    xy.set(b"missing", b"now here")
    xy.set(b"a", b"phantom")
    with xy.new_tx() as writer:
        assert writer.get(X) == b"11"
        writer.set(X, b"12")
    assert reader.get(X) == b"10"
    reader.commit()
    with xy.new_tx() as reader_in_with:
        assert reader_in_with.get(X) == b"12"
        xy.set(X, b"13")


def test_tx_disjoint_reads_and_writes_never_conflict(kv: KV) -> None:
    for key in (b"a", b"b", b"c", b"d"):
        kv.set(key, b"0")
    t1, t2 = kv.new_tx(), kv.new_tx()
    assert t1.get(b"a") == b"0" and list(t1.scan(b"a", b"b")) == [(b"a", b"0")]
    assert t2.get(b"c") == b"0" and list(t2.scan(b"c", b"d")) == [(b"c", b"0")]
    t1.set(b"b", b"1")
    t2.set(b"d", b"2")
    t1.commit()
    t2.commit()
    assert _state(kv) == {b"a": b"0", b"b": b"1", b"c": b"0", b"d": b"2"}


@pytest.mark.parametrize("writer", ["set", "tx", "tx-while-an-older-transaction-is-open"], ids=str)
def test_tx_writes_committed_before_the_snapshot_never_conflict(xy: KV, writer: str) -> None:
    """Only commits after ``new_tx()`` count, even while an older transaction keeps their write sets."""
    older = xy.new_tx()
    assert older.get(b"unrelated") is None
    if writer == "set":
        xy.set(X, b"11")
    else:
        other = xy.new_tx()
        assert other.get(X) == b"10"
        other.set(X, b"11")
        other.commit()
    if writer != "tx-while-an-older-transaction-is-open":
        older.abort()
    tx = xy.new_tx()
    assert tx.get(X) == b"11"
    assert list(tx.scan()) == [(X, b"11"), (Y, b"20")]
    tx.set(X, b"12")
    tx.commit()
    assert xy.get(X) == b"12"
    older.abort()


@pytest.mark.parametrize("rival_end", ["abort", "conflict", "dropped"], ids=str)
def test_tx_writes_of_a_rival_that_never_committed_never_conflict(xy: KV, rival_end: str) -> None:
    """A rival that aborted, got ``ConflictError`` or was dropped wrote nothing anyone can conflict with."""
    rival, tx = xy.new_tx(), xy.new_tx()
    assert rival.get(Y) == b"20"
    rival.set(X, b"from the rival")
    assert tx.get(X) == b"10"
    tx.set(Z, b"from tx")
    if rival_end == "abort":
        rival.abort()
    elif rival_end == "conflict":
        xy.set(Y, b"21")  # the rival read y
        _commit_conflicts(xy, rival)
    else:
        del rival
    tx.commit()
    assert xy.get(X) == b"10" and xy.get(Z) == b"from tx"


@pytest.mark.parametrize("own", ["set", "delete"], ids=str)
def test_tx_get_answered_by_its_own_buffered_write_is_not_a_read(xy: KV, own: str) -> None:
    """The choice in DESIGN.md ("Isolation"): a get of a key the transaction already wrote reads its own
    buffer, not the database, so a later commit of that key is no conflict (the writes are blind; the
    last committer wins)."""
    tx = xy.new_tx()
    if own == "set":
        tx.set(X, b"mine")
        assert tx.get(X) == b"mine"
    else:
        tx.set(b"w", b"")
        tx.set(X, b"mine")
        tx.set(X, b"again")
        tx.delete(b"w")  # reads w: that key is its own write too
        assert tx.get(b"w") is None
    xy.set(X, b"theirs")
    xy.set(b"w", b"theirs")
    tx.commit()
    assert xy.get(X) == (b"mine" if own == "set" else b"again")
    assert xy.get(b"w") == (b"theirs" if own == "set" else None)


def test_tx_reads_outside_the_transaction_are_not_its_reads(xy: KV) -> None:
    """``kv.get``, ``kv.scan`` and ``kv.seek`` during a transaction belong to no transaction."""
    tx = xy.new_tx()
    assert xy.get(X) == b"10"
    assert list(xy.scan()) == [(X, b"10"), (Y, b"20")]
    with xy.seek(b"") as cursor:
        cursor.next()
    with xy.seek_for_prev(b"\xff") as cursor:
        cursor.prev()
    tx.set(Z, b"1")
    xy.set(X, b"11")
    xy.set(b"a", b"new")
    tx.commit()
    assert xy.get(Z) == b"1"


def test_scans_and_cursors_outside_a_transaction_never_conflict(xy: KV) -> None:
    """A scan or cursor of the KV has no commit to fail: writes into what it walked all commit, and it
    keeps reading its own snapshot."""
    scan = xy.scan()
    assert next(scan) == (X, b"10")
    cursor = xy.seek(b"")
    cursor.next()
    back = xy.seek_for_prev(b"\xff")
    xy.set(X, b"11")
    with xy.new_tx() as tx:
        assert tx.get(Y) == b"20"
        tx.set(Y, b"21")
        tx.set(b"a", b"phantom")
    assert xy.delete(Y) is True
    assert list(scan) == [(Y, b"20")]
    assert (cursor.key, cursor.value) == (Y, b"20")
    cursor.prev()
    assert (cursor.key, cursor.value) == (X, b"10")
    assert [k for k, _ in back] == [Y]
    cursor.close()
    back.close()
    assert _state(xy) == {b"a": b"phantom", X: b"11"}


def test_one_operation_writes_never_raise_conflict_error(xy: KV) -> None:
    """``kv.set`` and ``kv.delete`` read and write under the commit lock: whatever transactions are open
    and whatever they read or wrote, they never raise ``ConflictError``."""
    t1, t2 = xy.new_tx(), xy.new_tx()
    assert t1.get(X) == b"10"
    t1.set(X, b"t1")
    assert list(t2.scan()) == [(X, b"10"), (Y, b"20")]
    t2.delete(Y)
    for i in range(3):
        xy.set(X, b"%d" % i)
        assert xy.delete(Y) is True
        assert xy.delete(Y) is False
        xy.set(Y, b"y%d" % i)
    t2.set(Z, b"t2")
    _commit_conflicts(xy, t1)
    _commit_conflicts(xy, t2)
    xy.set(X, b"last")
    assert xy.delete(Y) is True
    assert _state(xy) == {X: b"last"}


# ---------------------------------------------------------------- after ConflictError


def test_tx_after_conflict_error_is_closed_and_its_readers_let_go(xy: KV) -> None:
    tx = xy.new_tx()
    assert tx.get(X) == b"10"
    cursor = tx.seek(b"")
    scan = tx.scan()
    assert next(scan) == (X, b"10")
    tx.set(X, b"t")
    tx.set(b"new", b"t")
    tx.delete(Y)
    xy.set(X, b"11")
    assert xy.stats().live_snapshots >= 1
    _commit_conflicts(xy, tx)
    assert _state(xy) == {X: b"11", Y: b"20"}
    with pytest.raises(TxClosedError):
        cursor.next()
    with pytest.raises(TxClosedError):
        next(scan)
    cursor.close()
    assert xy.stats().live_snapshots == 0


def test_tx_context_manager_lets_conflict_error_out(xy: KV) -> None:
    with pytest.raises(ConflictError), xy.new_tx() as tx:
        assert tx.get(X) == b"10"
        tx.set(Y, b"21")
        xy.set(X, b"11")
    assert _state(xy) == {X: b"11", Y: b"20"}
    _assert_closed(tx)


def test_tx_conflict_leaves_the_kv_writable_and_durable() -> None:
    """A conflict is no failure: the KV takes later commits, and a reopen shows exactly what committed."""
    fs = SimFS()
    kv = KV.open("/db", Config(background=False), fs=fs)
    kv.set(X, b"10")
    tx = kv.new_tx()
    assert tx.get(X) == b"10"
    tx.set(Y, b"lost")
    kv.set(X, b"11")
    _commit_conflicts(kv, tx)
    assert kv.stats().failed is None
    with kv.new_tx() as again:
        again.set(Y, b"%s" % again.get(X))
    kv.close()
    with pytest.raises(ClosedError):
        kv.get(X)
    with KV.open("/db", Config(background=False), fs=fs) as reopened:
        assert _state(reopened) == {X: b"11", Y: b"11"}


@pytest.mark.parametrize("background", [False, True], ids=["inline", "background"])
def test_tx_conflict_is_found_after_flushes_and_merges(background: bool) -> None:
    """The write sets of commits after a snapshot outlive the memtables they went to."""
    kv = _open(Config(sync=False, background=background, memtable_size=512, block_size=128))
    try:
        kv.set(X, b"10")
        kv.set(Y, b"20")
        tx = kv.new_tx()
        assert tx.get(X) == b"10"
        kv.set(X, b"11")
        for i in range(300):
            kv.set(b"filler-%04d" % i, b"v" * 20)
        kv.flush()
        kv.compact(full=True)
        for i in range(100):
            kv.set(b"filler-%04d" % i, b"w" * 20)
        assert kv.stats().flushes > 0
        assert tx.get(X) == b"10"
        tx.set(Y, b"10 was read")
        _commit_conflicts(kv, tx)
        assert kv.get(Y) == b"20"
    finally:
        kv.close()


# ---------------------------------------------------------------- kv.transact


def test_transact_retries_a_conflict_in_a_fresh_transaction_that_sees_fresh_data(xy: KV) -> None:
    txs: list[KVTX] = []

    def increment(tx: KVTX) -> int:
        txs.append(tx)
        value = int(tx.get(X) or b"0")
        if len(txs) == 1:
            xy.set(X, b"100")  # a rival commits between this attempt's read and its commit
        tx.set(X, b"%d" % (value + 1))
        return value + 1

    assert xy.transact(increment) == 101
    assert len(txs) == 2 and txs[0] is not txs[1]
    assert xy.get(X) == b"101"
    for tx in txs:
        _assert_closed(tx)


@pytest.mark.parametrize("attempts", [1, 3, None], ids=["one-attempt", "three-attempts", "default-ten"])
def test_transact_lets_conflict_error_out_after_its_attempts(xy: KV, attempts: int | None) -> None:
    calls = 0

    def always_loses(tx: KVTX) -> None:
        nonlocal calls
        calls += 1
        tx.set(Y, b"%s" % tx.get(X))
        xy.set(X, b"rival %d" % calls)

    with pytest.raises(ConflictError):
        if attempts is None:
            xy.transact(always_loses)
        else:
            xy.transact(always_loses, attempts=attempts)
    assert calls == (10 if attempts is None else attempts)
    assert xy.get(Y) == b"20"
    assert xy.get(X) == b"rival %d" % calls


@pytest.mark.parametrize("conflicts_first", [0, 2], ids=["first-attempt", "after-two-conflicts"])
def test_transact_lets_other_exceptions_out_at_once_with_nothing_committed(xy: KV, conflicts_first: int) -> None:
    calls = 0

    def fn(tx: KVTX) -> None:
        nonlocal calls
        calls += 1
        tx.set(b"from-fn", b"%d" % calls)
        tx.set(Y, b"%s" % tx.get(X))
        if calls <= conflicts_first:
            xy.set(X, b"rival %d" % calls)
            return
        raise KeyError("boom")

    with pytest.raises(KeyError):
        xy.transact(fn)
    assert calls == conflicts_first + 1
    assert xy.get(b"from-fn") is None and xy.get(Y) == b"20"


def test_transact_returns_what_fn_returns(xy: KV) -> None:
    result = object()
    assert xy.transact(lambda tx: result) is result
    assert xy.transact(lambda tx: tx.get(X), attempts=1) == b"10"

    def move(tx: KVTX) -> tuple[int, int]:
        x, y = int(tx.get(X) or b"0"), int(tx.get(Y) or b"0")
        tx.set(X, b"%d" % (x - 5))
        tx.set(Y, b"%d" % (y + 5))
        return x - 5, y + 5

    assert xy.transact(move) == (5, 25)
    assert _state(xy) == {X: b"5", Y: b"25"}


# ---------------------------------------------------------------- Hypothesis: interleavings against serial execution

DATA_KEYS = [b"a", b"ab", b"b", b"ba", b"c", b"d"]
POSITIONS = [b"", b"a", b"aa", b"ab", b"b", b"bb", b"c", b"cc", b"d", b"e"]
Range = tuple[bytes, "bytes | None", bool]  # [lo, hi) or [lo, hi] when the flag is set; hi None: no end


@dataclasses.dataclass(frozen=True)
class Op:
    kind: str  # get, set, delete, scan, seek, seek_for_prev
    key: bytes = b""
    end: bytes | None = None
    prefix: bytes | None = None
    reverse: bool = False
    limit: int | None = None  # scan: pairs taken (None: until StopIteration)
    moves: str = ""  # cursor: "n"/"p" steps after the placement
    start_none: bool = False  # scan: start None rather than ``key``


ops = st.one_of(
    st.builds(Op, kind=st.sampled_from(["get", "set", "delete"]), key=st.sampled_from(DATA_KEYS)),
    st.builds(Op, kind=st.just("scan"), key=st.sampled_from(POSITIONS), end=st.none() | st.sampled_from(POSITIONS),
              prefix=st.sampled_from([None, b"a", b"b"]), reverse=st.booleans(),
              limit=st.none() | st.integers(1, 2), start_none=st.booleans()),
    st.builds(Op, kind=st.sampled_from(["seek", "seek_for_prev"]), key=st.sampled_from(POSITIONS),
              moves=st.text(alphabet="np", max_size=3)),
)


def _bounds(op: Op) -> tuple[bytes, bytes | None]:
    """[lo, hi) of a scan, intersected with its prefix (every prefix here is one byte below 0xff)."""
    lo = b"" if op.start_none else op.key
    hi = op.end
    if op.prefix is not None:
        lo = max(lo, op.prefix)
        succ = op.prefix[:-1] + bytes([op.prefix[-1] + 1])
        hi = succ if hi is None else min(hi, succ)
    return lo, hi


def _covers(r: Range, key: bytes) -> bool:
    lo, hi, inclusive = r
    return lo <= key and (hi is None or key < hi or (inclusive and key == hi))


@dataclasses.dataclass
class TxRun:
    """One transaction executed against a view: what it returned, wrote and read (what its reads cover)."""

    results: list[object] = dataclasses.field(default_factory=list)
    writes: dict[bytes, bytes | None] = dataclasses.field(default_factory=dict)
    required: list[Range] = dataclasses.field(default_factory=list)  # reads that count for conflicts
    own: set[bytes] = dataclasses.field(default_factory=set)  # gets/deletes answered by its own writes


def _value(tx: int, i: int) -> bytes:
    return b"t%d.%d" % (tx, i)


def model_tx(base: dict[bytes, bytes], txi: int, tx_ops: list[Op]) -> TxRun:
    """Run ``tx_ops`` of transaction ``txi`` on a copy of ``base`` as docs/transactions.md says a transaction reads."""
    run = TxRun()
    view = dict(base)
    for i, op in enumerate(tx_ops):
        if op.kind == "set":
            view[op.key] = _value(txi, i)
            run.writes[op.key] = view[op.key]
            run.results.append(None)
        elif op.kind in ("get", "delete"):
            if op.key in run.writes:
                run.own.add(op.key)
            else:
                run.required.append((op.key, op.key, True))
            if op.kind == "get":
                run.results.append(view.get(op.key))
            else:
                run.results.append(view.pop(op.key, None) is not None)
                run.writes[op.key] = None
        elif op.kind == "scan":
            lo, hi = _bounds(op)
            items = [(k, v) for k, v in sorted(view.items()) if lo <= k and (hi is None or k < hi)]
            if op.reverse:
                items.reverse()
            taken = items if op.limit is None else items[: op.limit]
            exhausted = op.limit is None or len(items) < op.limit
            run.results.append(taken)
            if exhausted:
                run.required.append((lo, hi, False))
            elif op.reverse:
                run.required.append((taken[-1][0], hi, False))
            else:
                run.required.append((lo, taken[-1][0], True))
        else:
            run.results.append(_model_cursor(view, op, run.required))
    return run


def _model_cursor(view: dict[bytes, bytes], op: Op, required: list[Range]) -> list[bytes | None]:
    keys = sorted(view)
    if op.kind == "seek":
        i = bisect.bisect_left(keys, op.key)
        pos: int | None = i if i < len(keys) else None
        required.append((op.key, None if pos is None else keys[pos], True))
    else:
        i = bisect.bisect_right(keys, op.key) - 1
        pos = i if i >= 0 else None
        required.append((b"" if pos is None else keys[pos], op.key, True))
    seen: list[bytes | None] = [None if pos is None else keys[pos]]
    for move in op.moves:
        if pos is None:
            break
        here = keys[pos]
        if move == "n":
            pos = pos + 1 if pos + 1 < len(keys) else None
            required.append((here, None if pos is None else keys[pos], True))
        else:
            pos = pos - 1 if pos > 0 else None
            required.append((b"" if pos is None else keys[pos], here, True))
        seen.append(None if pos is None else keys[pos])
    return seen


def real_op(tx: KVTX, txi: int, i: int, op: Op) -> object:
    """Run one op on a real transaction; returns what ``model_tx`` records for it."""
    if op.kind == "set":
        tx.set(op.key, _value(txi, i))
        return None
    if op.kind == "get":
        return tx.get(op.key)
    if op.kind == "delete":
        return tx.delete(op.key)
    if op.kind == "scan":
        it = tx.scan(None if op.start_none else op.key, op.end, prefix=op.prefix, reverse=op.reverse)
        if op.limit is None:
            return list(it)
        taken = []
        for _ in range(op.limit):
            pair = next(it, None)
            if pair is None:
                break
            taken.append(pair)
        return taken
    with (tx.seek(op.key) if op.kind == "seek" else tx.seek_for_prev(op.key)) as cursor:
        seen: list[bytes | None] = [cursor.key if cursor.valid else None]
        for move in op.moves:
            if not cursor.valid:
                break
            cursor.next() if move == "n" else cursor.prev()
            seen.append(cursor.key if cursor.valid else None)
        return seen


@st.composite
def histories(draw: st.DrawFn) -> tuple[dict[bytes, bytes], list[list[Op]], list[bool], list[int]]:
    """An initial state, 2-4 transactions (ops, and whether each ends in commit or abort) and an order
    of their steps: each transaction appears len(ops) + 2 times (begin, its ops, its end).  Most
    transactions end with a set (only writers can conflict), and in half the histories every
    transaction begins before any other step (every commit then lands after every snapshot)."""
    initial = draw(st.dictionaries(st.sampled_from(DATA_KEYS), st.sampled_from([b"0", b"1"]), min_size=1,
                                   max_size=len(DATA_KEYS)))
    txs = draw(st.lists(st.lists(ops, min_size=1, max_size=4), min_size=2, max_size=4))
    for tx_ops in txs:
        if draw(st.integers(0, 4)):
            tx_ops.append(Op("set", draw(st.sampled_from(DATA_KEYS))))
    commits = draw(st.lists(st.integers(0, 5).map(bool), min_size=len(txs), max_size=len(txs)))
    if draw(st.booleans()):
        rest = [i for i, tx_ops in enumerate(txs) for _ in range(len(tx_ops) + 1)]
        order = list(range(len(txs))) + draw(st.permutations(rest))
    else:
        order = draw(st.permutations([i for i, tx_ops in enumerate(txs) for _ in range(len(tx_ops) + 2)]))
    return initial, txs, commits, order


@settings(max_examples=10 * settings().max_examples)
@given(histories())
def test_tx_interleavings_match_a_serial_execution_in_commit_order(
        history: tuple[dict[bytes, bytes], list[list[Op]], list[bool], list[int]]) -> None:
    """Interleave a few transactions in one thread, then check:

    - every transaction's reads are those of its snapshot plus its own writes (snapshot isolation);
    - every committed writer's reads equal what it reads when run serially at its commit position, and
      a committed read-only transaction's at its snapshot (serializability in commit order);
    - the final state is the serial application of the committed transactions' writes in commit order;
    - a transaction gets ``ConflictError`` exactly when a transaction that committed after its
      ``new_tx()`` and before its ``commit()`` wrote a key its reads cover (the module docstring's rule).
      Two leeways, where the contract's words allow either outcome: a get or delete answered by the
      transaction's own write may count as a read or not (the deterministic test above pins "not"), and
      a committed delete of a key that was absent may count as a write of it or not.
    """
    initial, txs, commits, order = history
    kv = _open(Config(sync=False, background=False, memtable_size=256, block_size=64))
    try:
        for k, v in initial.items():
            kv.set(k, v)
        committed = dict(initial)  # the serial state: initial plus the committed writes, in commit order
        # per committed writer, in commit order: the keys it wrote, and the keys it deleted that were absent
        # (a no-op delete may count as a write of its key or not)
        log: list[tuple[set[bytes], set[bytes]]] = []
        real: list[KVTX | None] = [None] * len(txs)
        begun_at = [0] * len(txs)  # len(log) at new_tx()
        snapshot: list[dict[bytes, bytes]] = [{} for _ in txs]
        results: list[list[object]] = [[] for _ in txs]
        step = [0] * len(txs)
        for t in order:
            n = step[t]
            step[t] += 1
            if n == 0:
                real[t] = kv.new_tx()
                begun_at[t] = len(log)
                snapshot[t] = dict(committed)
                continue
            tx = real[t]
            assert tx is not None
            if n <= len(txs[t]):
                results[t].append(real_op(tx, t, n - 1, txs[t][n - 1]))
                continue
            at_snapshot = model_tx(snapshot[t], t, txs[t])
            assert results[t] == at_snapshot.results, f"T{t} did not read its snapshot"
            if not commits[t]:
                tx.abort()
                continue
            wrote: set[bytes] = set().union(*(w for w, _ in log[begun_at[t]:]))
            noop: set[bytes] = set().union(*(n for _, n in log[begun_at[t]:]))
            writer = bool(at_snapshot.writes)  # read-only transactions never conflict
            must = writer and any(_covers(r, k) for r in at_snapshot.required for k in wrote)
            may = writer and (any(_covers(r, k) for r in at_snapshot.required for k in wrote | noop)
                              or bool(at_snapshot.own & (wrote | noop)))
            before = _state(kv)
            try:
                tx.commit()
            except ConflictError:
                assert may, f"T{t}: ConflictError, but no later commit wrote what it read"
                assert _state(kv) == before, f"T{t}: a conflicting commit applied writes"
                with pytest.raises(TxClosedError):
                    tx.get(b"a")
                continue
            assert not must, f"T{t} committed although a later commit wrote what it read"
            if at_snapshot.writes:
                in_order = model_tx(committed, t, txs[t])
                assert results[t] == in_order.results, f"T{t}'s reads differ from a serial run at its commit"
                noop_deletes = {k for k, v in at_snapshot.writes.items() if v is None and k not in committed}
                for key, value in at_snapshot.writes.items():
                    if value is None:
                        committed.pop(key, None)
                    else:
                        committed[key] = value
                log.append((set(at_snapshot.writes) - noop_deletes, noop_deletes))
            assert _state(kv) == committed
        kv._check()
    finally:
        kv.close()


def test_a_tx_scan_sees_a_write_made_after_it_passed_earlier_keys(tmp_path: pathlib.Path) -> None:
    # documented (docs/transactions.md): the transaction's own writes are a live level of its scans; a key
    # written ahead of the scan's position is seen when the scan reaches it, however many keys it passed
    with KV.open(str(tmp_path / "db")) as kv:
        kv.set(b"b", b"table")
        tx = kv.new_tx()
        for key in (b"a", b"c", b"e", b"g"):
            tx.set(key, b"tx")
        scan = tx.scan()
        assert [next(scan)[0], next(scan)[0], next(scan)[0]] == [b"a", b"b", b"c"]
        tx.set(b"f", b"later")
        assert list(scan) == [(b"e", b"tx"), (b"f", b"later"), (b"g", b"tx")]
        tx.abort()


def test_a_tx_scan_or_cursor_sees_a_write_between_its_position_and_its_next_row(tmp_path: pathlib.Path) -> None:
    # the transaction's own writes are a live level whatever they were when the scan started: none at all,
    # or a next row already read ahead; an overwrite of a row not yet reached shows its new value
    with KV.open(str(tmp_path / "db")) as kv:
        kv.set(b"b", b"table")
        kv.set(b"h", b"table")
        tx = kv.new_tx()
        scan, backward, cursor = tx.scan(), tx.scan(reverse=True), tx.seek(b"a")
        assert next(scan) == (b"b", b"table") and next(backward) == (b"h", b"table")
        assert cursor.key == b"b"
        tx.set(b"c", b"tx")
        tx.set(b"g", b"tx")
        assert next(scan) == (b"c", b"tx")
        tx.set(b"d", b"tx")
        tx.set(b"g", b"tx again")
        assert list(scan) == [(b"d", b"tx"), (b"g", b"tx again"), (b"h", b"table")]
        assert list(backward) == [(b"g", b"tx again"), (b"d", b"tx"), (b"c", b"tx"), (b"b", b"table")]
        cursor.next()
        assert (cursor.key, cursor.value) == (b"c", b"tx")
        tx.set(b"ca", b"tx")
        cursor.next()
        assert cursor.key == b"ca"
        tx.delete(b"d")
        cursor.next()
        assert (cursor.key, cursor.value) == (b"g", b"tx again")
        tx.abort()
