"""``KV.trace(key)``: what a ``get`` of one key does, level by level (DESIGN.md, "Lookup traces").

A trace walks the levels of one view in the order ``snapshot.get_in`` does
(the memtable, the frozen memtables newest first, then the tables newest
first), with the same rules, and notes at each level what it consulted: the
table's key range, its bloom filter's answer, each block read and whether
the block cache held it, a range tombstone over the key, and the version
found.  It stops where the get stops.  Its answer is the get's: a test
checks the two agree on every key of randomly built databases.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable
from typing import Any

import attrs

from kvstore import record
from kvstore.core import Core
from kvstore.filenames import table_name
from kvstore.runs import Run
from kvstore.sorted_array import Memtable
from kvstore.sorted_file import TableReader
from kvstore.view import View

__all__ = ["BlockRead", "Step", "Trace", "trace"]


@attrs.frozen
class BlockRead:
    """One data block a lookup read."""

    index: int
    """Its place among the table's blocks."""
    offset: int
    """Its byte offset in the table file."""
    size: int
    """Its size in bytes on disk."""
    cached: bool
    """Whether the block cache held it (else it was read from the file and cached)."""


@attrs.frozen
class Step:
    """One level a lookup consulted, in the order it did."""

    level: str
    """``memtable``, ``frozen memtable`` or ``table``."""
    name: str
    """The memtable (``memtable``, ``frozen memtable 1``...) or the table's file name."""
    smallest: bytes | None
    """The level's smallest stored key (range tombstones' bounds included); None for an empty memtable."""
    largest: bytes | None
    """Its largest stored key, as ``smallest``."""
    bloom: str | None
    """A table's bloom filter's answer: ``negative`` (the key is not in the table: nothing read),
    ``positive``, or ``none`` (a table without a filter); None for a memtable."""
    in_range: bool
    """Whether the key lies within the level's key range (of a run of tables, only the table whose range
    holds the key is consulted)."""
    blocks: tuple[BlockRead, ...]
    """The data blocks read, in order."""
    range_tombstone: int | None
    """The sequence of the newest range tombstone of this level over the key (at or below the snapshot)."""
    sequence: int | None
    """The sequence of the version of the key found at this level; None when it holds none."""
    outcome: str
    """``none`` (no version here: the lookup goes on), ``value``, ``delete`` (a tombstone),
    ``range-deleted`` (a range tombstone newer than this level's version), ``expired`` (a value past its
    expiry) or ``skipped`` (ruled out by the bloom filter)."""


@attrs.frozen
class Trace:
    """What a ``get`` of one key did (``KV.trace``): the levels consulted and the answer."""

    key: bytes
    """The key looked up, as given."""
    stored_key: bytes
    """The key as stored (DESIGN.md, "Collections"): differs for a collection's key or one from ``FF``."""
    snapshot: int
    """The sequence number the lookup read at."""
    steps: tuple[Step, ...]
    """Each level consulted, in order; the last is the one that answered (when one did)."""
    value: bytes | None
    """The answer: the value ``get`` returns, or None."""
    sequence: int | None
    """The sequence number of the version that answered; None when no level holds the key."""
    expires: float | None
    """When the version found expires, by the KV's clock; None when it does not."""
    answer: str
    """``value``, ``absent`` (no version anywhere), ``delete``, ``range-deleted`` or ``expired``."""
    seconds: float
    """The time the traced lookup took (the trace's own notes included)."""

    def as_dict(self) -> dict[str, Any]:
        """The trace as plain data (keys and values as ``bytes``), for JSON."""
        return attrs.asdict(self)


def trace(kv: Core, key: bytes, stored: bytes, clock: Callable[[], float]) -> Trace:
    """Trace a get of ``stored`` (the stored form of ``key``) in ``kv`` at the latest sequence."""
    start = time.perf_counter()
    view, snapshot = kv._pin()
    try:
        steps, found = _walk(view, stored, snapshot)
    finally:
        kv._unpin(view)
    value: bytes | None = None
    expires = None
    sequence = None if found is None else found[0]
    if steps and steps[-1].outcome == "range-deleted":
        answer = "range-deleted"
    elif found is None:
        answer = "absent"
    elif found[1] is None:
        answer = "delete"
    else:
        raw = found[1]
        if type(raw) is record.Expiring:
            expires = raw.expires
            value = raw.alive(clock())
            answer = "value" if value is not None else "expired"
            if value is None:
                steps[-1] = attrs.evolve(steps[-1], outcome="expired")
        else:
            value, answer = raw, "value"
    return Trace(key, stored, snapshot, tuple(steps), value, sequence, expires, answer,
                 time.perf_counter() - start)


def _walk(view: View, key: bytes, snapshot: int) -> tuple[list[Step], tuple[int, Any] | None]:
    """The steps of a lookup of ``key`` in ``view`` at ``snapshot`` and the version found (None when no
    level holds one), by ``snapshot.get_in``'s rules."""
    steps: list[Step] = []
    for i, mem in enumerate(view.mems):
        name = "memtable" if i == 0 else f"frozen memtable {i}"
        step, found = _in_memtable(mem, name, key, snapshot)
        steps.append(step)
        if step.outcome != "none":
            return steps, found
    for level in view.runs:
        cover = level.fragments.covering(key, snapshot) if level.ranged else 0
        holder = _holder(level.readers, key) if isinstance(level, Run) else level
        if holder is None:  # a run none of whose tables holds the key: none is read
            if cover:
                assert isinstance(level, Run)
                steps.append(Step("table", f"run of {len(level.readers)} tables", level.smallest, level.largest,
                                  None, False, (), cover, None, "range-deleted"))
                return steps, None
            continue
        step, found = _in_table(holder, key, snapshot, cover)
        steps.append(step)
        if step.outcome not in ("none", "skipped"):
            return steps, found
    return steps, None


def _holder(readers: tuple[TableReader, ...], key: bytes) -> TableReader | None:
    """The table of a run (disjoint key ranges) whose key range holds ``key`` (``Run.get``)."""
    i = bisect.bisect_right([r.lo for r in readers], key) - 1
    return readers[i] if i >= 0 and key <= readers[i].hi else None


def _decide(found: tuple[int, Any] | None, cover: int) -> str:
    if cover and (found is None or found[0] < cover):
        return "range-deleted"
    if found is None:
        return "none"
    return "delete" if found[1] is None else "value"


def _in_memtable(mem: Memtable, name: str, key: bytes, snapshot: int) -> tuple[Step, tuple[int, Any] | None]:
    found = mem.get(key, snapshot)
    cover = mem.fragments().covering(key, snapshot) if mem.ranges else 0
    lo, hi = mem.bounds()
    outcome = _decide(found, cover)
    step = Step("memtable" if name == "memtable" else "frozen memtable", name, lo, hi, None, True, (),
                cover or None, None if found is None else found[0], outcome)
    return step, found


def _in_table(reader: TableReader, key: bytes, snapshot: int,
              cover: int) -> tuple[Step, tuple[int, Any] | None]:
    """The lookup in one table: ``TableReader.get`` step by step; ``cover``: the sequence of its level's
    newest range tombstone over the key (0 when none)."""
    name, lo, hi = table_name(reader.file_number), reader.lo, reader.hi
    in_range = lo <= key <= hi
    if not reader.has_filter():
        bloom = "none"
    else:
        bloom = "positive" if reader.may_contain(record.key_hash(key)) else "negative"
    if bloom == "negative":
        return Step("table", name, lo, hi, bloom, in_range, (), cover or None, None,
                    _decide(None, cover) if cover else "skipped"), None
    blocks, found = _blocks(reader, key, snapshot)
    return Step("table", name, lo, hi, bloom, in_range, tuple(blocks), cover or None,
                None if found is None else found[0], _decide(found, cover)), found


def _blocks(reader: TableReader, key: bytes, snapshot: int) -> tuple[list[BlockRead], tuple[int, Any] | None]:
    """The blocks ``TableReader.get`` reads for ``key``, and the version it finds."""
    reads: list[BlockRead] = []
    index_keys = reader.index_keys()
    i = bisect.bisect_left(index_keys, key)
    while i < len(index_keys):
        offset, size = reader.block_place(i)
        cached = reader.cached(i)
        block = reader.block(i)
        reads.append(BlockRead(i, offset, size, cached))
        j = block.find(key)
        n = block.count
        while j < n and block.key_at(j) == key:
            seq = block.seq(j)
            if seq <= snapshot:
                return reads, (seq, block.value(j))
            j += 1
        if j < n or index_keys[i] != key:
            break
        i += 1
    return reads, None
