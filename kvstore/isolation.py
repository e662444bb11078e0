"""Serializable isolation: a transaction's pending writes and reads, the write sets kept for conflict
checks, and the conflict check itself (DESIGN.md, "Isolation"; docs/transactions.md).

A transaction reads one snapshot.  What it read from the database (keys by
``get`` and ``delete``, ranges its scans and cursors covered) is checked at
commit against every commit after its snapshot: a key one of those wrote
inside what it read is a conflict.  Committed write sets are kept only while
a live transaction's snapshot is older than them; a range is kept as its
bounds, never as the keys it covers.

Invariants (``WriteSets._check``):
  - ``recent_keys[k]`` is the newest sequence in ``recent_log`` that wrote ``k``;
  - ``recent_log`` is in ascending sequence order and holds only sequences above the oldest live
    transaction snapshot once ``forget()`` has run.
"""

from __future__ import annotations

import collections
from bisect import bisect_left, bisect_right
from collections.abc import Iterator

from kvstore.expiry import expires_at
from kvstore.rangedel import Fragments
from kvstore.record import EXPIRY, Expiring, RangeEnd

__all__ = ["Pending", "Range", "TxState", "WriteSets"]

Item = tuple[bytes, "bytes | None"]


class Pending:
    """A transaction's buffered writes, readable as the newest level (a value of None is a delete), and
    its range deletes."""

    __slots__ = ("writes", "_sorted", "ranges", "_fragments", "ttls", "changes")

    #: the sequence a pending range delete hides below: every version a transaction reads is older
    NEWEST = (1 << 64) - 1

    def __init__(self) -> None:
        self.writes: dict[bytes, bytes | None] = {}
        self._sorted: list[bytes] | None = []  # the keys in order, None once a new key came in
        self.ranges: list[tuple[bytes, bytes]] = []  # [start, end) deleted, in call order
        self._fragments: Fragments | None = None
        #: the ttl of each key of ``writes`` set with one; it counts from the commit (``commit_writes``)
        self.ttls: dict[bytes, float] = {}
        #: counts the writes over keys already written and the range deletes buffered: with the number of
        #: keys written, what tells a scan or cursor under way that the writes moved (``moved``)
        self.changes = 0

    def delete_range(self, start: bytes, end: bytes) -> None:
        """Delete ``[start, end)`` (``start < end``): the transaction's own writes in it are dropped, and
        every key of the snapshot in it reads as absent."""
        keys = self._keys()
        for key in keys[bisect_left(keys, start) : bisect_left(keys, end)]:
            del self.writes[key]
            self.ttls.pop(key, None)
        self._sorted = None
        self.ranges.append((start, end))
        self._fragments = None
        self.changes += 1

    def mark(self) -> tuple[int, int]:
        """Where the writes stand: what ``moved`` compares with."""
        return self.changes, len(self.writes)

    def moved(self, mark: tuple[int, int]) -> bool:
        """Whether a write or a range delete was buffered since ``mark`` was taken: a new key changes the
        count of keys written (only a range delete, which counts in ``changes``, takes keys away), any
        other write ``changes``."""
        return self.changes != mark[0] or len(self.writes) != mark[1]

    def fragments(self) -> Fragments:
        """The range deletes as fragments, each at ``NEWEST``."""
        if self._fragments is None:
            self._fragments = Fragments.of((s, e, self.NEWEST) for s, e in self.ranges)
        return self._fragments

    def covers(self, key: bytes) -> bool:
        """Whether a range delete of this transaction covers ``key``."""
        return bool(self.ranges) and self.fragments().covering(key, self.NEWEST) > 0

    def commit_writes(self, now: float) -> list[tuple[bytes, bytes | None]]:
        """What the commit logs: the writes in key order (each value set with a ttl expiring that long
        after ``now``, the commit's clock), then the range deletes joined into disjoint ranges in order,
        each as ``(start, RangeEnd(end))``."""
        out: list[tuple[bytes, bytes | None]] = sorted(self.writes.items())
        ttls = self.ttls
        if ttls:  # each value set with a ttl (a key of ttls holds a value, never a delete) stamped with now
            expires_at(now, max(ttls.values()))  # ValueError when the latest expiry passes what a float holds
            pack = EXPIRY.pack
            out = [(key, value if key not in ttls else Expiring(pack(now + ttls[key]) + value))  # type: ignore[operator]
                   for key, value in out]
        if not self.ranges:
            return out
        joined: list[list[bytes]] = []
        for start, end in sorted(self.ranges):
            if joined and start <= joined[-1][1]:
                joined[-1][1] = max(joined[-1][1], end)
            else:
                joined.append([start, end])
        out += [(start, RangeEnd(end)) for start, end in joined]
        return out

    def put(self, key: bytes, value: bytes | None) -> None:
        """Buffer ``key = value`` (None: a delete), without a ttl."""
        if key not in self.writes:
            self._sorted = None
        if self.ttls:
            self.ttls.pop(key, None)
        self.writes[key] = value
        self.changes += 1  # counted even for a new key: plain and simple on a path that is not hot

    def _keys(self) -> list[bytes]:
        if self._sorted is None:
            self._sorted = sorted(self.writes)
        return self._sorted

    def items(self, start: bytes | None, snapshot: int, reverse: bool = False,
              inclusive: bool = True) -> Iterator[Item]:
        """Live: writes made while iterating are seen when the iterator reaches them."""
        last = start
        while True:
            keys = self._keys()
            if not reverse:
                if last is None:
                    i = 0
                else:
                    i = bisect_left(keys, last) if inclusive else bisect_right(keys, last)
                if i >= len(keys):
                    return
            else:
                if last is None:
                    i = len(keys) - 1
                else:
                    i = (bisect_right(keys, last) if inclusive else bisect_left(keys, last)) - 1
                if i < 0:
                    return
            key = keys[i]
            yield key, self.writes[key]
            last = key
            inclusive = False


class Range:
    """A key range a transaction's scan or cursor covered: ``[lo, hi]`` or ``[lo, hi)``; None is unbounded.

    It grows while the scan or cursor moves; until it covers a key it covers nothing (``active`` False).
    """

    __slots__ = ("lo", "hi", "hi_inclusive", "active")

    def __init__(self) -> None:
        self.lo: bytes | None = None
        self.hi: bytes | None = None
        self.hi_inclusive = True
        self.active = False

    def place(self, key: bytes) -> None:
        """Cover ``[key, key]`` (a cursor placed by a seek from ``key``)."""
        self.lo = self.hi = key
        self.hi_inclusive = True
        self.active = True

    def reach(self, key: bytes | None, forward: bool) -> None:
        """Widen to ``key``, reached moving ``forward`` or backward; None means past that end."""
        if forward:
            if key is None:
                self.hi = None
            elif self.hi is not None and (key > self.hi or (key == self.hi and not self.hi_inclusive)):
                self.hi = key
                self.hi_inclusive = True
        elif key is None:
            self.lo = None
        elif self.lo is not None and key < self.lo:
            self.lo = key

    def reach_bound(self, bound: bytes, forward: bool) -> None:
        """Widen to the end of a key space walked past moving ``forward`` (up to ``bound``, excluded) or
        backward (down to ``bound``, included): a cursor that ran off its collection read no other's keys."""
        if forward:
            if self.hi is not None and (bound > self.hi or (bound == self.hi and self.hi_inclusive)):
                self.hi = bound
                self.hi_inclusive = False
        elif self.lo is not None and bound < self.lo:
            self.lo = bound

    def first_in(self, keys: list[bytes]) -> bytes | None:
        """The first of the sorted ``keys`` inside this range, or None."""
        if not self.active:
            return None
        lo, hi = self.lo, self.hi
        i = 0 if lo is None else bisect_left(keys, lo)
        if i < len(keys):
            key = keys[i]
            if hi is None or key < hi or (self.hi_inclusive and key == hi):
                return key
        return None


class TxState:
    """Whether a transaction has ended, and what it read; shared by the KVTX and its reader.

    ``reads`` holds the keys read from the database by ``get`` and
    ``delete`` (not those served from the transaction's own writes);
    ``ranges`` what its scans and cursors covered (docs/transactions.md).
    """

    __slots__ = ("closed", "reads", "ranges")

    def __init__(self) -> None:
        self.closed = False
        self.reads: set[bytes] = set()
        self.ranges: list[Range] = []


class WriteSets:
    """Live transactions' snapshots and the write sets of the commits they may conflict with
    (under the KV's ``_lock``, but for ``conflict``, which the write queue's leader calls)."""

    __slots__ = ("snapshots", "recent_keys", "recent_log", "recent_ranges")

    def __init__(self) -> None:
        self.snapshots: dict[int, int] = {}  # snapshot -> live transactions reading it
        self.recent_keys: dict[bytes, int] = {}  # key -> last sequence that wrote it, while a tx may conflict
        self.recent_log: collections.deque[tuple[int, list[bytes]]] = collections.deque()  # (seq, sorted keys)
        # (seq, start, end) of each range delete committed while a tx may conflict: a range is one entry
        self.recent_ranges: collections.deque[tuple[int, bytes, bytes]] = collections.deque()

    def hold(self, snapshot: int) -> None:
        """A transaction reading ``snapshot`` began."""
        self.snapshots[snapshot] = self.snapshots.get(snapshot, 0) + 1

    def release(self, snapshot: int) -> None:
        """A transaction reading ``snapshot`` ended."""
        count = self.snapshots[snapshot] - 1
        if count:
            self.snapshots[snapshot] = count
        else:
            del self.snapshots[snapshot]

    def record(self, accepted: list[tuple[int, list[tuple[bytes, bytes | None]]]]) -> None:
        """Remember what the commits ``accepted`` wrote (only called while a transaction is live)."""
        recent = self.recent_keys
        for number, writes in accepted:
            keys = [k for k, _ in writes]
            if writes and type(writes[-1][1]) is RangeEnd:  # range deletes come last in a commit
                keys = [k for k, v in writes if type(v) is not RangeEnd]
                self.recent_ranges.extend((number, k, bytes(v)) for k, v in writes if type(v) is RangeEnd)
            self.recent_log.append((number, keys))
            for key in keys:
                recent[key] = number

    def forget(self) -> None:
        """Drop write sets no live transaction can conflict with."""
        log_ = self.recent_log
        if not log_:
            return
        oldest = min(self.snapshots) if self.snapshots else None
        if oldest is None:
            log_.clear()
            self.recent_keys.clear()
            self.recent_ranges.clear()
            return
        ranges = self.recent_ranges
        while ranges and ranges[0][0] <= oldest:
            ranges.popleft()
        recent = self.recent_keys
        while log_ and log_[0][0] <= oldest:
            seq, keys = log_.popleft()
            for key in keys:
                if recent.get(key) == seq:
                    del recent[key]

    def tracked(self) -> int:
        """Keys of committed write sets kept for conflict checks."""
        return sum(len(keys) for _, keys in self.recent_log) + len(self.recent_ranges)

    def conflict(self, tx: TxState, snapshot: int, ahead: dict[bytes, bytes | None]) -> bytes | None:
        """A key that ``tx`` read (by get, delete, or inside a covered range) and that a commit after its
        snapshot wrote, or that a member ahead in this group writes; None when there is none."""
        reads, ranges = tx.reads, [r for r in tx.ranges if r.active]
        if not reads and not ranges:
            return None
        recent = self.recent_keys
        if len(reads) <= len(recent):
            for key in reads:
                if recent.get(key, 0) > snapshot:
                    return key
        else:
            for key, seq in recent.items():
                if seq > snapshot and key in reads:
                    return key
        if ranges:
            for seq, keys in reversed(self.recent_log):
                if seq <= snapshot:
                    break
                for r in ranges:
                    found = r.first_in(keys)
                    if found is not None:
                        return found
        if self.recent_ranges and self.recent_ranges[-1][0] > snapshot:
            found = _range_deleted(self.recent_ranges, snapshot, sorted(reads), ranges)
            if found is not None:
                return found
        if ahead:
            return _first_written(reads, ranges, ahead)
        return None

    def _check(self) -> None:
        assert all(self.recent_keys[k] >= seq for seq, keys in self.recent_log for k in keys)


def _range_deleted(deleted: collections.deque[tuple[int, bytes, bytes]], snapshot: int, reads: list[bytes],
                   ranges: list[Range]) -> bytes | None:
    """A key of ``reads`` (sorted) that a range delete committed after ``snapshot`` covers, or the start
    of such a range delete that meets one of ``ranges``; None when none does."""
    for seq, start, end in reversed(deleted):
        if seq <= snapshot:
            break
        i = bisect_left(reads, start)
        if i < len(reads) and reads[i] < end:
            return reads[i]
        for r in ranges:
            if (r.lo is None or r.lo < end) and (r.hi is None or start < r.hi or (r.hi_inclusive and start == r.hi)):
                return max(start, r.lo) if r.lo is not None else start
    return None


def _first_written(reads: set[bytes], ranges: list[Range], ahead: dict[bytes, bytes | None]) -> bytes | None:
    """A key the members ahead in the group write that ``reads`` or ``ranges`` hold; None when none."""
    for key in reads:
        if key in ahead:
            return key
    if ranges:
        keys = sorted(ahead)
        for r in ranges:
            found = r.first_in(keys)
            if found is not None:
                return found
    return None
