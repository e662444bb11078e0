"""How many keys and bytes each collection holds, for ``KV.stats()``: counted exactly for a small
collection, estimated from the tables' block indexes for a large one (``CollectionStats.exact`` says which).

A collection is a range of stored keys (``keyspace``).  Its keys are counted
with one scan of at most ``EXACT_UP_TO`` keys; when it holds more, each table
contributes its entries and bytes in proportion to the blocks its index places
in the range, and each memtable the keys its sorted list places there (every
version counted, so an estimate runs high after overwrites until merges).
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterator

import attrs

from kvstore.keyspace import Space
from kvstore.view import View

__all__ = ["EXACT_UP_TO", "CollectionStats", "collection_stats"]

#: A collection of at most this many keys is counted exactly.
EXACT_UP_TO = 1024


@attrs.frozen
class CollectionStats:
    """One collection's share of the database, as ``Stats.collections`` lists them."""

    name: str
    """The collection's name."""
    keys: int
    """Its live keys: exact when ``exact``, else an estimate from the tables' block indexes."""
    bytes: int
    """Bytes of its keys and values (stored keys, prefix included): exact or estimated as ``keys``."""
    exact: bool
    """Whether ``keys`` and ``bytes`` were counted (a collection of at most 1,024 keys) or estimated."""


def collection_stats(name: str, space: Space, rows: Iterator[tuple[bytes, bytes]], view: View) -> CollectionStats:
    """The stats of collection ``name`` (key space ``space``) from ``rows``, a scan of it, and ``view``,
    the levels of the same snapshot."""
    counted = list(itertools.islice(rows, EXACT_UP_TO + 1))
    if len(counted) <= EXACT_UP_TO:
        counted_bytes = sum(len(k) + len(v) for k, v in counted)  # stored keys: the prefix included
        return CollectionStats(name, len(counted), counted_bytes, True)
    keys = 0.0
    size = 0.0
    lo, hi = space.lo, space.hi
    for mem in view.mems:
        inside = mem._keys.bisect_left(hi) - mem._keys.bisect_left(lo)
        if inside and len(mem):
            keys += inside
            size += mem.bytes * inside / len(mem)
    for reader in view.readers:
        index = reader._index_keys
        if not index or reader.largest < lo or reader.smallest >= hi:
            continue
        first = bisect.bisect_left(index, lo)
        last = min(len(index) - 1, bisect.bisect_left(index, hi))
        blocks = max(0, last - first + 1)
        share = blocks / len(index)
        keys += reader.num_entries * share
        size += sum(reader._sizes[first : last + 1])
    return CollectionStats(name, int(keys), int(size), False)
