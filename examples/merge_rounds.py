"""The read merge (``merge.merge_chunks``) over two levels, ``COUNT`` times: for counting instructions per row.

    python examples/merge_rounds.py SHAPE COUNT        SHAPE: sparse shadowed interleaved

Two levels of 100-byte values, newest first, handed over in chunks as a table hands them (8 rows, then up
to 256): ``sparse`` is 1,000 keys over 20,000 (a memtable holding a few overwrites above a table, the
rounds lopsided), ``shadowed`` the same 20,000 keys in both (every key overwritten), ``interleaved`` two
disjoint halves, alternating.  Under callgrind, ``(Ir(SHAPE, COUNT) - Ir(SHAPE, 0)) / (COUNT * 20,000)``
is the instructions the merge spends per row it yields (DESIGN.md, "Where the time goes"):

    PYTHONHASHSEED=0 PYTHONPATH=CHECKOUT valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        python examples/merge_rounds.py sparse 2
"""

from __future__ import annotations

import random
import sys

from kvstore.chunks import chunks_of
from kvstore.merge import merge_chunks

SHAPES = ("sparse", "shadowed", "interleaved")


def levels(shape: str) -> list[list[tuple[bytes, bytes | None]]]:
    """The two levels of ``shape``, newest first, each a sorted list of (key, value)."""
    keys = [b"%016d" % i for i in range(20_000)]
    value = b"v" * 100
    table = [(k, value) for k in keys]
    if shape == "sparse":
        return [sorted((k, value) for k in random.Random(1).sample(keys, 1_000)), table]
    if shape == "shadowed":
        return [[(k, b"w" * 100) for k in keys], table]
    return [[(k, value) for k in keys[::2]], [(k, value) for k in keys[1::2]]]


def main(shape: str, count: int) -> None:
    if shape not in SHAPES:
        raise SystemExit(f"SHAPE must be one of {', '.join(SHAPES)}")
    data = levels(shape)
    for _ in range(count):
        for _chunk in merge_chunks([chunks_of(iter(level), False, 8, 256) for level in data]):
            pass


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
