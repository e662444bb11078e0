"""Write the seed corpus, fuzz/corpus/<harness>/, from the files of a real small database.

Run from anywhere: ``python fuzz/make_corpus.py``.  It builds a database with a tiny memtable (so it has
several tables, merged ones among them, and a log with unflushed commits), copies its files as a crash
would leave them, and cuts each harness's seeds from them.  Deterministic: the same code writes the same
files.  Keep the corpus small (well under 1 MiB); it is committed.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import struct
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import FIX, KINDS, pack_files

from kvstore import KV, Config, block, rangedel, record

CORPUS = pathlib.Path(__file__).resolve().parent / "corpus"
CONFIG = Config(background=False, memtable_size=1024, block_size=128, sync=False)


def build(path: pathlib.Path) -> pathlib.Path:
    """A database with tables (flushed and merged), deletes, range deletes (in a table, kept by a snapshot,
    and in the log), and unflushed commits; returns a crash copy."""
    with KV.open(path, CONFIG) as kv:
        for i in range(60):
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
    out["wal_record"] = [f for log in logs for f in frames(log)][:8]
    out["wal_replay"] = [bytes([flags]) + log for log in logs for flags in (2, FIX | 2, FIX | 4)]
    out["wal_replay"].append(bytes([FIX | 2]) + logs[-1][: len(logs[-1]) - 7])  # a torn tail
    out["table_block"] = [bytes([FIX]) + b for b in blocks(tables[0])[:6]] + [bytes([FIX]) + blocks(tables[-1])[0]]
    out["table"] = [bytes([flags]) + t for t in tables[:2] for flags in (0, FIX | 2)]
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
            for old in target.glob("seed-*"):  # regress-* files are inputs that found bugs: kept
                old.unlink()
            for i, data in enumerate(items):
                (target / f"seed-{i:02d}").write_bytes(data)
    total = sum(f.stat().st_size for f in CORPUS.rglob("*") if f.is_file())
    print(f"wrote {CORPUS} ({total} bytes)")


if __name__ == "__main__":
    main()
