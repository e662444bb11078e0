"""Fuzz a table's range tombstone section: its checked chunk and its fragments (``rangedel.decode``), then
every lookup and merge rule over what decoded.

Property: any bytes either decode or raise ``CorruptionError``/``UnsupportedFormatError``; nothing else
escapes and nothing hangs; what decodes keeps the fragments' invariants (it encodes back to the same
payload, and the lookups and merge rules agree with a scan of its tombstones).
Input: a flags byte (``FIX``: the rest is a payload, sealed with a good checksum before decoding;
otherwise the rest is a whole chunk, checksum included), then the bytes.
"""

from __future__ import annotations

import itertools

from harness import ALLOWED, FIX, run

from kvstore import rangedel, record

NUMBER = 7
OFFSET = 500


def check(data: bytes) -> None:
    """The property: decodes (and holds the invariants), or raises an allowed error."""
    if not data:
        return
    flags, body = data[0], data[1:]
    chunk = record.seal_chunk(NUMBER, OFFSET, body) if flags & FIX else body
    try:
        fragments = rangedel.decode(record.open_chunk(chunk, "fuzz.sst", NUMBER, OFFSET), "fuzz.sst", OFFSET)
    except ALLOWED:
        return
    payload = chunk[:-record.CHUNK_CRC.size]
    assert rangedel.encode(fragments) == payload
    tombstones = fragments.tombstones()
    probes = sorted({b for s, e, _ in tombstones for b in (s, e, s + b"\0")} | {b"", b"\xff" * 3})
    seqs = sorted({q for _, _, q in tombstones})
    for key, snapshot in itertools.product(probes[:40], [0, *seqs[:4], 1 << 63]):
        expected = max((q for s, e, q in tombstones if s <= key < e and q <= snapshot), default=0)
        assert fragments.covering(key, snapshot) == expected
    snapshots = seqs[::2]
    kept = fragments.retained(snapshots, bottom=False)  # the newest sequence over every key stays
    rebuilt = rangedel.Fragments.of(tombstones)  # the same tombstones, pieces with equal sequences joined
    for key in probes[:40]:
        newest = fragments.covering(key, 1 << 64)
        assert kept.covering(key, 1 << 64) == newest == rebuilt.covering(key, 1 << 64)
    keys = probes[:40]
    drops = fragments.drops(keys, [1] * len(keys), snapshots)
    assert len(drops) == len(keys)


def main() -> None:
    run(check)


if __name__ == "__main__":
    main()
