"""What range tombstones hide from a scan: a level's rows filtered by the tombstones of newer levels and by
its own (DESIGN.md, "Range tombstones").

A read merges levels newest first (``merge.merge_chunks``).  Every version in
a level is older than every range tombstone of a newer level, so a tombstone
visible at the read's snapshot hides *every* row of an older level in its
range: ``hidden_by_newer`` drops them, and when a chunk of the level ends
inside a tombstone's range it positions the level again past that range
instead of reading on through keys that are all hidden (a scan's cost does not
grow with the keys a range delete covered, as Pebble's merging iterator seeks
a lower level past a tombstone).  A level's own tombstones hide only its
versions older than themselves: ``own_hidden`` asks the level for the
sequence of each row in a piece's range and turns a row older than the piece's
tombstone into a delete, which also hides the key in older levels.

Both work on chunks as ``chunks.py`` defines them (ascending within a chunk,
in the direction of travel from chunk to chunk) and cost nothing to a level
that no tombstone reaches.
"""

from __future__ import annotations

import bisect
import operator
from collections.abc import Callable, Iterator

from kvstore.chunks import Chunk
from kvstore.rangedel import Fragments

__all__ = ["hidden_by_newer", "own_hidden", "visible"]

#: positions a level's rows from a key on: (start, inclusive) -> chunks in the direction of travel
Positioner = Callable[[bytes | None, bool], Iterator[Chunk]]
#: a level's newest version of a key at the snapshot, (sequence, value or None), or None
Getter = Callable[[bytes, int], "tuple[int, bytes | None] | None"]

_KEY = operator.itemgetter(0)


def visible(fragments: Fragments, snapshot: int) -> Fragments | None:
    """The pieces of ``fragments`` a reader at ``snapshot`` sees (each with its sequences at or below it),
    or None when there are none."""
    if not fragments:
        return None
    if fragments.max_seq() <= snapshot:
        return fragments
    starts: list[bytes] = []
    ends: list[bytes] = []
    seqs: list[tuple[int, ...]] = []
    for start, end, qs in zip(fragments.starts, fragments.ends, fragments.seqs):
        seen = tuple(q for q in qs if q <= snapshot)
        if seen:
            starts.append(start)
            ends.append(end)
            seqs.append(seen)
    return Fragments(starts, ends, seqs) if starts else None


def _piece_over(fragments: Fragments, key: bytes) -> int:
    """The index of the piece whose range holds ``key``, or -1."""
    i = bisect.bisect_right(fragments.starts, key) - 1
    return i if i >= 0 and key < fragments.ends[i] else -1


def _outside(chunk: Chunk, fragments: Fragments) -> Chunk:
    """The rows of ascending ``chunk`` that no piece covers (``chunk`` itself when none is)."""
    starts, ends = fragments.starts, fragments.ends
    count = len(starts)
    low, high = chunk[0][0], chunk[-1][0]
    i = bisect.bisect_right(starts, low) - 1
    if i < 0 or ends[i] <= low:
        i += 1
    if i == count or starts[i] > high:
        return chunk
    out: Chunk = []
    pos = 0
    while i < count and starts[i] <= high:
        a = bisect.bisect_left(chunk, starts[i], pos, key=_KEY)
        out += chunk[pos:a]
        pos = bisect.bisect_left(chunk, ends[i], a, key=_KEY)
        i += 1
    out += chunk[pos:]
    return out


def hidden_by_newer(position: Positioner, start: bytes | None, inclusive: bool, reverse: bool,
                    above: Fragments) -> Iterator[Chunk]:
    """The chunks ``position(start, inclusive)`` yields, less every row a piece of ``above`` (the visible
    tombstones of newer levels) covers; where a chunk ends inside a piece, the level is positioned again
    at the piece's far end (its end going forward, below its start going backward)."""
    chunks = position(start, inclusive)
    while True:
        for chunk in chunks:
            kept = _outside(chunk, above)
            if kept:
                yield kept
            i = _piece_over(above, chunk[0][0] if reverse else chunk[-1][0])
            if i >= 0:  # the level goes on under this piece: skip to its far end
                chunks = position(above.starts[i], False) if reverse else position(above.ends[i], True)
                break
        else:
            return


def own_hidden(chunks: Iterator[Chunk], own: Fragments, get: Getter, snapshot: int) -> Iterator[Chunk]:
    """``chunks`` of one level with every row that a tombstone of the same level (``own``, visible at
    ``snapshot``) covers and is newer than turned into a delete."""
    for chunk in chunks:
        if _outside(chunk, own) is chunk:
            yield chunk
            continue
        out = list(chunk)
        for n, (key, value) in enumerate(chunk):
            cover = own.covering(key, snapshot)
            if cover and value is not None:
                found = get(key, snapshot)
                if found is not None and found[0] < cover:
                    out[n] = (key, None)
        yield out
