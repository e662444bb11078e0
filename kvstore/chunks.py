"""Rows in chunks: the shape in which levels hand their rows to a merge (``merge.merge_chunks``).

A *chunk* is a non-empty list of rows ``(key, value)`` (a value of None is
a delete), one row per key, in ascending key order.  A level read forward
yields chunks each above the one before; read backward, each below the one
before, every chunk still ascending.  Handing rows over a list at a time
lets the merge do its per-row work in C builtins (DESIGN.md, "Reads").
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

__all__ = ["Chunk", "Row", "chunks_of"]

Row = tuple[bytes, "bytes | None"]
Chunk = list[Row]


def chunks_of(rows: Iterator[Row], reverse: bool = False, first: int = 1, size: int = 256) -> Iterator[Chunk]:
    """``rows`` (in the direction of travel) as chunks: ``first`` rows, then ``size`` at a time; going
    backward each chunk is turned to ascending order.

    >>> list(chunks_of(iter([(b"c", b"3"), (b"b", b"2"), (b"a", None)]), reverse=True, first=1, size=2))
    [[(b'c', b'3')], [(b'a', None), (b'b', b'2')]]
    """
    islice = itertools.islice
    count = first
    while True:
        chunk = list(islice(rows, count))
        if not chunk:
            return
        if reverse:
            chunk.reverse()
        yield chunk
        count = size
