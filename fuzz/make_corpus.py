"""Write the seed corpus, fuzz/corpus/<harness>/, from the files of a real small database.

Run from anywhere: ``python fuzz/make_corpus.py``.  It builds a database with a tiny memtable (so it has
several tables, merged ones among them, and a log with unflushed commits; values that expire among them,
by a clock that stands still), copies its files as a crash would leave them, and cuts each harness's seeds
from them.  Deterministic: the same code writes the same files.  Keep the corpus small (well under 1 MiB);
it is committed.

It writes ``seed-NN`` files only, in the formats this code writes, and replaces the ones there.  When a
format moves on, the seeds an older kvstore wrote are kept beside them, renamed ``seed-vN-NN`` with N the
version of that harness's format they hold (the table's for ``table`` and ``table_block``, the log's for
``wal_record`` and ``wal_replay``, the tables' for ``directory``, as ``tests/data/format_vN`` is named), so
the fuzzers keep reaching the code that reads every version; ``regress-*`` files, inputs that found a bug,
are kept too.
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import struct
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import FIX, KINDS, pack_files

from kvstore import KV, Config, block, rangedel, record

CORPUS = pathlib.Path(__file__).resolve().parent / "corpus"
CONFIG = Config(background=False, memtable_size=1024, block_size=128, sync=False)
#: the clock of the database the seeds are cut from: it stands still, so nothing expires while it is built
#: and the expiries are the same at every run; fuzz_directory opens the seeds at ``fuzz_directory.NOW``, by
#: which the values set with a ttl under ``NOW - BUILT_AT`` have expired and the others have not
BUILT_AT = 1767225600.0 - 1000.0
#: what ``make_corpus`` writes and replaces: older seeds (``seed-vN-*``) and ``regress-*`` files stay
SEED = re.compile(r"seed-\d+")


def build(path: pathlib.Path) -> pathlib.Path:
    """A database with tables (flushed and merged), deletes, range deletes (in a table, kept by a snapshot,
    and in the log), values that expire (in tables and in the log), and unflushed commits; returns a crash
    copy."""
    with KV.open(path, CONFIG, clock=lambda: BUILT_AT) as kv:
        for i in range(60):
            if i % 5 == 2:  # expiring at BUILT_AT + 100 .. 2200: some before fuzz_directory's clock, some after
                kv.set(b"key%03d" % (i * 7 % 60), b"expiring-%d" % i, ttl=100.0 + 35 * i)
            else:
                kv.set(b"key%03d" % (i * 7 % 60), b"value-%d" % i)
            if i % 9 == 8:
                kv.delete(b"key%03d" % (i % 60))
        held = kv.new_tx()
        kv.delete_range(b"key010", b"key020")
        kv.delete_range(b"key015", b"key030")
        kv.compact(full=True)
        held.abort()
        for i in range(30):
            with kv.new_tx() as tx:
                if i % 3 == 1:
                    tx.set(b"k%02d" % i, b"v" * (i % 5), ttl=500.0 + 100 * i)
                else:
                    tx.set(b"k%02d" % i, b"v" * (i % 5))
                tx.set(b"", b"empty key")
                if i % 4 == 0:
                    tx.delete(b"key%03d" % i)
                if i % 7 == 3:
                    tx.delete_range(b"key%03d" % i, b"key%03d" % (i + 5))
        copy = path.parent / "crashed"
        shutil.copytree(path, copy, ignore=shutil.ignore_patterns("LOCK"))
    return copy


def frames(log: bytes) -> list[bytes]:
    """Each whole frame of a log, header and payload."""
    out = []
    pos = record.FILE_HEADER.size
    while pos + record.WAL_FRAME.size <= len(log):
        _, length, _ = record.WAL_FRAME.unpack_from(log, pos)
        end = pos + record.WAL_FRAME.size + length
        out.append(log[pos:end])
        pos = end
    return out


def expiring_frame(frame: bytes) -> bool:
    """Whether a frame's commit holds an expiring value."""
    writes = record.decode_commit(frame[record.WAL_FRAME.size :], "", 0)[2]
    return any(type(value) is record.Expiring for _, value in writes)


def expiring_block(payload: bytes) -> bool:
    """Whether a block holds an expiring entry."""
    return any(type(value) is record.Expiring for value in block.decode_block(payload, "", 0)[2])


def expiring_table(table: bytes) -> bool:
    """Whether a table's properties count expiring entries."""
    foot = len(table) - record.FOOTER.size
    version = record.FOOTER.unpack_from(table, foot)[8]
    po, psz = record.FOOTER.unpack_from(table, foot)[4:6]
    return record.decode_props(table[po : po + psz - 4], "", po, version).expiry[0] > 0


def blocks(table: bytes) -> list[bytes]:
    """The payloads of a table's data blocks and its index."""
    foot = len(table) - record.FOOTER.size
    io, isz = record.FOOTER.unpack_from(table, foot)[:2]
    index = table[io : io + isz - 4]
    out = [index]
    for value in block.decode_block(index, "", io)[2]:
        assert value is not None
        off, size = record.INDEX_VALUE.unpack(value)
        out.append(table[off : off + size - 4])
    return out


def seeds(db: pathlib.Path) -> dict[str, list[bytes]]:
    files = {name: (db / name).read_bytes() for name in sorted(os.listdir(db))}
    logs = [data for name, data in files.items() if name.endswith(".log")]
    tables = sorted((data for name, data in files.items() if name.endswith(".sst")), key=len)
    metas = [files.get("meta0", b""), files.get("meta1", b"")]
    out: dict[str, list[bytes]] = {}
    every_frame = [f for log in logs for f in frames(log)]
    expiring = [f for f in every_frame if expiring_frame(f)]
    assert expiring, "the log holds no expiring value"
    out["wal_record"] = every_frame[:8] + [f for f in expiring if f not in every_frame[:8]][:2]
    out["wal_replay"] = [bytes([flags]) + log for log in logs for flags in (2, FIX | 2, FIX | 4)]
    out["wal_replay"].append(bytes([FIX | 2]) + logs[-1][: len(logs[-1]) - 7])  # a torn tail
    kept = [*blocks(tables[0])[:6], blocks(tables[-1])[0]]
    expiring = [b for t in tables for b in blocks(t)[1:] if expiring_block(b)]
    assert expiring, "no table block holds an expiring entry"
    out["table_block"] = [bytes([FIX]) + b for b in kept + [b for b in expiring if b not in kept][:2]]
    picked = tables[:2]
    if not any(map(expiring_table, picked)):
        picked = picked + [t for t in tables[2:] if expiring_table(t)][:1]
    assert any(map(expiring_table, picked)), "no table holds an expiring entry"
    out["table"] = [bytes([flags]) + t for t in picked for flags in (0, FIX | 2)]
    out["meta"] = [struct.pack("<BH", flags, len(metas[0])) + metas[0] + metas[1] for flags in (6, FIX | 6, FIX | 2)]
    sections = [rangedel.encode(rangedel.Fragments.of(t)) for t in (
        [(b"a", b"m", 5), (b"f", b"z", 7)], [(b"", b"\xff", 1)],
        [(b"k%02d" % i, b"k%02d\0" % i, i + 1) for i in range(8)])]
    out["range_section"] = [bytes([FIX]) + s for s in sections] + [bytes([0]) + sections[0]]
    packed = []
    for name, data in files.items():
        if name in KINDS[:2]:
            packed.append((KINDS.index(name), 0, data))
        elif name.endswith((".sst", ".log")):
            number, ext = name.split(".")
            packed.append((KINDS.index(ext), int(number), data))
    container = pack_files(packed)
    out["directory"] = [bytes([flags]) + container for flags in (0, 2, FIX, FIX | 4, FIX | 8)]
    return out


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        crashed = build(pathlib.Path(tmp) / "db")
        for name, items in seeds(crashed).items():
            target = CORPUS / name
            target.mkdir(parents=True, exist_ok=True)
            for old in target.glob("seed-*"):  # seed-vN-* (older formats) and regress-* files are kept
                if SEED.fullmatch(old.name):
                    old.unlink()
            for i, data in enumerate(items):
                (target / f"seed-{i:02d}").write_bytes(data)
    total = sum(f.stat().st_size for f in CORPUS.rglob("*") if f.is_file())
    print(f"wrote {CORPUS} ({total} bytes)")


if __name__ == "__main__":
    main()
