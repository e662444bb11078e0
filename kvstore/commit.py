"""The commit pipeline (Pebble's ``commit.go``): the write queue, group building, the WAL write and fsync,
sequence assignment and publication (DESIGN.md, "Threads and locks", "Group commit").

Every write is a request in one queue.  The writer at its head is the
*leader*: it takes the commits queued behind it as one group, checks each
for conflicts against everything committed after its snapshot and against
the members ahead of it (``isolation``), gives each a sequence number,
writes the group to the WAL with one append and at most one fsync, applies
it to the memtable and publishes it by moving ``Core._seq``; then it wakes
the members with their outcome and hands the lead to the next writer
(LevelDB's write group).  The pipeline reaches the rest of the KV only
through the ``Core`` fields and the ``make_room`` callback.

Invariants:
  - only the leader appends to the WAL, applies to the memtable or moves ``_seq``;
  - sequences are published in the order they are logged, each exactly once: an error between a
    group's WAL write and its publication stops the KV;
  - a request taken into a group is answered (``done``) by its leader, error or not.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import threading
from collections.abc import Callable, Iterator
from time import perf_counter_ns

from kvstore.core import Core, closed_error
from kvstore.errors import ConflictError, FailedError
from kvstore.isolation import TxState
from kvstore.metrics import SAMPLE
from kvstore.record import RangeEnd
from kvstore.snapshot import Reader, get_in
from kvstore.sorted_array import Memtable

__all__ = ["BARRIER", "COMMIT", "DELETE", "GROUP_BYTES", "ROTATE", "CommitPipeline", "Writer"]

#: The kinds of request: a commit, a one-operation delete (its read and write in the commit order), a
#: memtable swap, and a barrier (``check()`` and ``close()`` lead the queue with nothing to write).
COMMIT, DELETE, ROTATE, BARRIER = range(4)
#: Bytes of keys and values one commit group takes at most (a bigger single commit goes alone).
GROUP_BYTES = 1 << 20

Writes = list[tuple[bytes, "bytes | None"]]


class Writer:
    """One request in the write queue and, once answered, its outcome."""

    __slots__ = ("kind", "writes", "sync", "tx", "snapshot", "cond", "done", "error", "existed", "frozen", "reader",
                 "taken")

    def __init__(self, kind: int, writes: Writes, sync: bool, reader: Reader | None = None) -> None:
        self.kind = kind
        self.writes = writes
        self.sync = sync
        self.reader = reader  # a committing transaction's reader, let go once published
        self.tx: TxState | None = None if reader is None else reader.tx
        self.snapshot = 0 if reader is None else reader.snapshot
        self.cond: threading.Condition | None = None  # made when the writer has to wait
        self.done = False
        self.error: BaseException | None = None
        self.existed = True
        self.frozen: Memtable | None = None  # the memtable a ROTATE request froze
        self.taken = False  # a leader took it into its group: the leader answers it and takes it off


def _ranged(w: Writer) -> bool:
    """Whether the request writes range deletes (they come last in a commit's writes)."""
    return bool(w.writes) and type(w.writes[-1][1]) is RangeEnd


def _copy_error(exc: BaseException) -> BaseException:
    """A fresh exception like ``exc`` for another thread to raise (one object raised twice shares a traceback)."""
    try:
        copy = type(exc)(*exc.args)
    except Exception:  # noqa: BLE001 - an exception type with another constructor: raise it as it is
        return exc
    copy.__cause__ = exc.__cause__
    return copy


class CommitPipeline:
    """The write queue of one open database; ``lock`` says who leads."""

    def __init__(self, kv: Core, make_room: Callable[[], Memtable | None]) -> None:
        self._kv = kv
        self._make_room = make_room  # freeze a full memtable (``jobs.Jobs.make_room``), as the leader
        self.lock = threading.Lock()
        self.writers: collections.deque[Writer] = collections.deque()

    def write(self, kind: int, writes: Writes, sync: bool, reader: Reader | None = None) -> Writer:
        """Queue one request and wait until a leader (this thread or another) has carried it out; a commit
        that succeeds is timed into ``metrics.Metrics.commit``: a durable one always, about one in
        ``metrics.SAMPLE`` of the others."""
        start = perf_counter_ns() if sync or not self._kv._seq & (SAMPLE - 1) else 0
        with self.lock:
            self._kv._check_writable()
            w = Writer(kind, writes, sync, reader)
            writers = self.writers
            if not writers and not sync and kind == COMMIT:
                # nobody leads and nothing waits for an fsync: carry it out holding the queue's lock (a
                # writer arriving meanwhile waits for the lock instead of for its turn)
                self._carry_out([w])
                group = None
            else:
                writers.append(w)
                if len(writers) > 1:
                    self._wait_turn(w)
                group = None if w.done else self._take_group(w)
        if group is not None:
            self._lead(group)
        if w.error is not None:
            raise w.error
        if start and kind <= DELETE:
            self._kv._metrics.commit.observe(perf_counter_ns() - start)
        return w

    def set_one(self, writes: Writes, sync: bool) -> None:
        """Commit a one-operation set (``kv.set``): when nobody leads or waits and no fsync is asked, carry
        it out holding the queue's lock with no request in the queue (no group to build, no one to
        answer); otherwise as ``write``."""
        if not sync and not self.writers:
            start = 0 if self._kv._seq & (SAMPLE - 1) else perf_counter_ns()  # one in ``SAMPLE`` is timed
            with self.lock:
                if not self.writers:
                    kv = self._kv
                    kv._check_writable()
                    try:
                        self._commit_one(writes)
                    except OSError as exc:
                        if isinstance(exc, FailedError):
                            raise
                        raise kv._fail(exc, "writing the WAL") from exc
                    if start:
                        kv._metrics.commit.observe(perf_counter_ns() - start)
                    return
        self.write(COMMIT, writes, sync)

    def _commit_one(self, writes: Writes) -> None:
        """Log, apply and publish one commit with no conflict to check, at the next sequence (under
        ``lock``, the queue empty: nothing else commits)."""
        kv = self._kv
        wal = kv._wal
        assert wal is not None
        seq = kv._seq + 1
        before = wal.size
        try:
            wal.append(seq, writes, False)
        except OSError as exc:
            raise kv._fail(exc, "writing the WAL") from exc
        try:
            self._publish([(seq, writes)], seq, wal.size - before)
        except BaseException as exc:  # the frame is in the log: going on would reuse its sequence
            failed = kv._fail(exc, "applying a commit")
            if not isinstance(exc, Exception):  # KeyboardInterrupt, SystemExit: stopped, and let through
                raise
            raise failed from exc
        if kv._mem.bytes >= kv._config.memtable_size:
            self._make_room()

    def _take_group(self, head: Writer) -> list[Writer]:
        """The requests the leader ``head`` carries out together (under ``lock``): the commits queued
        behind it, up to ``GROUP_BYTES`` of keys and values; any other request goes alone.  A commit with
        range deletes is a group's last member, so no member's conflict check or delete looks past one."""
        writers = self.writers
        if len(writers) == 1 or head.kind > DELETE or _ranged(head):
            return [head]
        group = [head]
        size = sum(len(k) + len(v or b"") for k, v in head.writes)
        for w in itertools.islice(writers, 1, None):
            if w.kind > DELETE or size > GROUP_BYTES:
                break
            size += sum(len(k) + len(v or b"") for k, v in w.writes)
            w.taken = True
            group.append(w)
            if _ranged(w):
                break
        return group

    def _lead(self, group: list[Writer]) -> None:
        """Carry out ``group``, at the head of the write queue (this thread's request first), then
        answer its members and wake the next head."""
        try:
            self._carry_out(group)
        finally:
            with self.lock:
                popleft = self.writers.popleft
                for w in group:
                    popped = popleft()
                    assert popped is w
                    w.done = True
                    if w.cond is not None:
                        w.cond.notify()
                self._wake_head()

    def _carry_out(self, group: list[Writer]) -> None:
        """Do what ``group`` asks; an error becomes every unanswered member's outcome."""
        kv = self._kv
        head = group[0]
        try:
            kv._check_writable(queued=True)
            if head.kind == ROTATE:
                head.frozen = self._make_room()
                if head.frozen is None and kv._imms:  # nothing new: wait for what is already frozen
                    head.frozen = kv._imms[0].mem
            elif head.kind == COMMIT or head.kind == DELETE:
                self._commit_group(group)
        except BaseException as exc:  # noqa: BLE001 - every member not yet answered shares the outcome
            if isinstance(exc, OSError) and not isinstance(exc, FailedError):
                exc = kv._fail(exc, "writing the WAL")
            for w in group:
                if not w.done and w.error is None:
                    if w is head:
                        w.error = exc
                    elif kv._failed is not None and not isinstance(exc, FailedError):
                        w.error = kv._failed_error()
                    else:
                        w.error = _copy_error(exc)

    def _wait_turn(self, w: Writer) -> None:
        """Wait (under ``lock``) until ``w`` is answered or at the head of the queue.  Interrupted
        (``KeyboardInterrupt`` in the wait), it leaves the queue, so the writers behind it go on."""
        try:
            while not w.done and self.writers[0] is not w:
                if w.cond is None:
                    w.cond = threading.Condition(self.lock)
                w.cond.wait()
        except BaseException:
            if not w.done and not w.taken:
                if self.writers and self.writers[0] is w:
                    self.writers.popleft()
                    self._wake_head()
                else:
                    self.writers.remove(w)
            raise

    def _wake_head(self) -> None:
        """Wake the writer now at the head of the queue (under ``lock``)."""
        if self.writers:
            head = self.writers[0]
            if head.cond is not None:
                head.cond.notify()

    # ------------------------------------------------------------------ one group

    def _commit_group(self, group: list[Writer]) -> None:
        """Check, number, log, apply and publish one group; the lead is held, so nothing else commits."""
        kv = self._kv
        accepted, members, seq = self._number(group)
        wal = kv._wal
        assert wal is not None
        if not accepted:
            if any(w.sync for w in group if w.error is None):  # a sync asked for: all before it durable
                try:
                    wal.sync()
                except OSError as exc:
                    raise kv._fail(exc, "syncing the WAL") from exc
            return
        before = wal.size
        try:
            wal.append_many(accepted, any(w.sync for w in members))
        except OSError as exc:
            raise kv._fail(exc, "writing the WAL") from exc
        try:
            self._publish(accepted, seq, wal.size - before)
        except BaseException as exc:  # the frames are in the log: going on would reuse their sequences
            failed = kv._fail(exc, "applying a commit")
            if not isinstance(exc, Exception):  # KeyboardInterrupt, SystemExit: stopped, and let through
                raise
            raise failed from exc
        for w in members:  # a committed transaction's snapshot keeps nothing alive from here on
            if w.reader is not None:
                w.reader.release()
        if kv._mem.bytes >= kv._config.memtable_size:
            self._make_room()

    def _number(self, group: list[Writer]) -> tuple[list[tuple[int, Writes]], list[Writer], int]:
        """The members of ``group`` that commit, with their sequences, and the last sequence given: a
        conflicting transaction gets ``ConflictError``, a delete of an absent key writes nothing."""
        kv = self._kv
        accepted: list[tuple[int, Writes]] = []
        members: list[Writer] = []
        ahead: dict[bytes, bytes | None] = {}  # what the accepted members ahead wrote
        seq = kv._seq
        last = group[-1]
        for w in group:
            if not w.writes:
                continue  # a transaction that wrote nothing: no conflict, no sequence (it may sync)
            if w.kind == DELETE:
                key = w.writes[0][0]
                w.existed = ahead[key] is not None if key in ahead else self._exists(key)
                if not w.existed:
                    continue  # deleting an absent key writes nothing
            elif w.tx is not None:
                clash = kv._writesets.conflict(w.tx, w.snapshot, ahead)
                if clash is not None:
                    kv._metrics.conflicts += 1
                    w.error = ConflictError(f"a transaction that committed after this one's snapshot wrote "
                                            f"{clash!r}, which this one read")
                    continue
            seq += 1
            accepted.append((seq, w.writes))
            members.append(w)
            if w is not last:
                ahead.update(w.writes)
        return accepted, members, seq

    def _publish(self, accepted: list[tuple[int, Writes]], seq: int, logged: int) -> None:
        """Apply a logged group to the memtable and make it visible at sequence ``seq``."""
        kv = self._kv
        user = kv._mem.apply_many(accepted)
        with kv._lock:
            metrics = kv._metrics
            metrics.engine_bytes += logged
            metrics.user_bytes += user
            writesets = kv._writesets
            if writesets.snapshots:  # a live transaction may conflict with these: remember what they wrote
                writesets.record(accepted)
            if writesets.recent_log:
                writesets.forget()
            kv._seq = seq

    def _exists(self, key: bytes) -> bool:
        """Whether ``key`` has a value at the latest sequence (the caller leads the write queue)."""
        kv = self._kv
        view, snapshot = kv._pin()
        try:
            return get_in(view, key, snapshot, kv._clock) is not None
        finally:
            kv._unpin(view)

    # ------------------------------------------------------------------ leading with nothing to write

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Lead the write queue for the block: no commit or memtable swap runs until it ends."""
        with self.lock:
            if self._kv._closing:
                raise closed_error()
            w = Writer(BARRIER, [], False)
            self.writers.append(w)
            self._wait_turn(w)
            if w.done:  # answered by close(): it never led
                raise w.error if w.error is not None else closed_error()
        try:
            yield
        finally:
            with self.lock:
                popped = self.writers.popleft()
                assert popped is w
                self._wake_head()

    def begin_close(self) -> bool:
        """Refuse new writes and lead the queue once the writes queued before are done; False when
        another thread already began closing."""
        kv = self._kv
        with self.lock:
            closing = kv._closing
            kv._closing = True  # new writes raise ClosedError from here on
            if not closing:
                w = Writer(BARRIER, [], False)
                self.writers.append(w)
                self._wait_turn(w)
        return not closing

    def end_close(self) -> None:
        """Leave the queue ``begin_close`` led, answering anything left in it with ``ClosedError``."""
        with self.lock:
            self.writers.popleft()
            for waiting in self.writers:  # none can have queued, but never leave one hanging
                waiting.error = closed_error()
                waiting.done = True
                if waiting.cond is not None:
                    waiting.cond.notify()
            self.writers.clear()
