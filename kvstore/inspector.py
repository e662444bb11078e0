"""Decoders that show one file of a database as it is on disk: a log's frames, a table's chunks, the meta slots.

Each ``inspect_*`` function reads its file through the codecs of ``record``
and returns a plain structure (dicts, lists, ints, strings and ``bytes``)
that ``kvstore inspect`` prints as text or JSON.  Unlike the engine, which
stops at the first damage, an inspector decodes every part it can and
records each problem in ``problems`` beside where it was found, so a person
can see both the format (DESIGN.md, "On-disk formats") and the damage.

Invariants:
  - a structure's ``problems`` is empty exactly when the engine would read the file without complaint
    (for a log: as the last log of a database);
  - nothing here writes a byte.
"""

from __future__ import annotations

import os
from typing import Any

from kvstore import filenames, record
from kvstore.errors import CorruptionError, UnsupportedFormatError
from kvstore.filenames import META_NAMES
from kvstore.fs import FileSystem, OSFileSystem
from kvstore.metadata import MetaStore
from kvstore.wal import replay_log

__all__ = ["inspect_meta", "inspect_sst", "inspect_wal"]

Tree = dict[str, Any]


def _read(fs: FileSystem, path: str) -> bytes:
    file = fs.open(path)
    try:
        return file.pread(file.size(), 0)
    finally:
        file.close()


def _header(buf: bytes, path: str, magic: bytes, problems: list[str]) -> Tree:
    """The file header's fields, checked as the engine checks them (the file number against itself)."""
    if len(buf) < record.FILE_HEADER.size:
        problems.append(f"{path} at offset 0: file header is {len(buf)} bytes, needs {record.FILE_HEADER.size}")
        return {"ok": False}
    got, version, reserved, number, stored = record.FILE_HEADER.unpack_from(buf, 0)
    tree: Tree = {"magic": got.decode("latin-1"), "version": version, "reserved": reserved, "file_number": number,
                  "crc": f"0x{stored:08x}", "ok": True}
    try:
        record.decode_file_header(buf, path, magic, number)
    except (CorruptionError, UnsupportedFormatError) as exc:
        tree["ok"] = False
        problems.append(str(exc))
    return tree


def _name_number(path: str, kind: str) -> int | None:
    parsed = filenames.parse(os.path.basename(path))
    return parsed[0] if parsed is not None and parsed[1] == kind else None


def _check_name(path: str, kind: str, header: Tree, problems: list[str]) -> None:
    named = _name_number(path, kind)
    if named is not None and header.get("ok") and named != header["file_number"]:
        problems.append(f"{path} at offset 0: header names file number {header['file_number']}, the name {named}")


def inspect_wal(path: str, fs: FileSystem | None = None) -> Tree:
    """A log file: its header, every intact frame with its commit unit, and where (and why) decoding
    stopped, with the engine's verdict on that damage when this is the last log: a torn tail that a
    writable open cuts, or corruption that an open refuses."""
    fs = OSFileSystem() if fs is None else fs
    buf = _read(fs, path)
    problems: list[str] = []
    header = _header(buf, path, record.WAL_MAGIC, problems)
    _check_name(path, filenames.LOG, header, problems)
    number = header.get("file_number", _name_number(path, filenames.LOG) or 0)
    frames: list[Tree] = []
    tree: Tree = {"kind": "wal", "file": path, "size": len(buf), "header": header, "frames": frames,
                  "problems": problems}
    if not header["ok"]:
        return tree
    pos = record.FILE_HEADER.size
    fsize = record.WAL_FRAME.size
    while pos < len(buf):
        if len(buf) - pos < fsize:
            break
        stored, length, rtype = record.WAL_FRAME.unpack_from(buf, pos)
        frame: Tree = {"offset": pos, "length": length, "type": rtype, "crc": f"0x{stored:08x}"}
        if rtype != record.RecordType.COMMIT or length > len(buf) - pos - fsize:
            break
        payload = buf[pos + fsize : pos + fsize + length]
        if record.frame_crc(number, length, rtype, payload) != stored:
            break
        try:
            seq, durable, writes = record.decode_commit(payload, path, pos)
        except CorruptionError:
            break  # replay_log below names it
        frame.update(sequence=seq, durable_offset=durable,
                     writes=[{"key": k, "value": v, "kind": "delete" if v is None else "value"} for k, v in writes])
        frames.append(frame)
        pos += fsize + length
    tree["valid_end"] = pos
    try:
        result = replay_log(fs, path, number, last=True, strict=False)
    except (CorruptionError, UnsupportedFormatError) as exc:
        problems.append(f"{exc} (an open refuses this log)")
        return tree
    if result.damage is not None:
        offset, reason = result.damage
        verdict = ("corruption before the durable point: an open refuses it (recovery='salvage' keeps the "
                   "frames before it)" if result.salvaged else
                   "a torn tail: a writable open cuts the log here, losing no acknowledged durable commit")
        tree["damage"] = {"offset": offset, "reason": reason, "verdict": verdict, "torn_tail": not result.salvaged}
        problems.append(f"{path} at offset {offset}: {reason}; {verdict}")
    return tree


def _chunk(buf: bytes, path: str, number: int, place: tuple[int, int], what: str, lo: int, hi: int) -> bytes:
    off, size = place
    if off < lo or size < 4 or off + size > hi:
        raise CorruptionError(path, off, f"the {what} chunk ({off}, {size}) lies outside [{lo}, {hi})")
    return record.open_chunk(buf[off : off + size], path, number, off)


def inspect_sst(path: str, *, entries: bool = False, fs: FileSystem | None = None) -> Tree:
    """A table: header, footer, properties, bloom filter, index and every data block (with every
    entry when ``entries``), each checked on its own."""
    buf = _read(OSFileSystem() if fs is None else fs, path)
    problems: list[str] = []
    header = _header(buf, path, record.TABLE_MAGIC, problems)
    _check_name(path, filenames.TABLE, header, problems)
    number = header.get("file_number", _name_number(path, filenames.TABLE) or 0)
    tree: Tree = {"kind": "sst", "file": path, "size": len(buf), "header": header, "problems": problems}
    foot_at = len(buf) - record.FOOTER.size
    if foot_at < record.FILE_HEADER.size:
        problems.append(f"{path} at offset 0: table of {len(buf)} bytes is shorter than header and footer")
        return tree
    foot = buf[foot_at:]
    io, isz, bo, bsz, po, psz, fnum, magic, version, _, stored = record.FOOTER.unpack(foot)
    tree["footer"] = {"offset": foot_at, "index": [io, isz], "bloom": [bo, bsz], "properties": [po, psz],
                      "file_number": fnum, "magic": magic.decode("latin-1"), "version": version,
                      "crc": f"0x{stored:08x}", "ok": True}
    try:
        index, bloom, props = record.decode_footer(foot, path, foot_at, number)
    except (CorruptionError, UnsupportedFormatError) as exc:
        tree["footer"]["ok"] = False
        problems.append(str(exc))
        return tree
    lo = record.FILE_HEADER.size
    try:
        e, d, smin, smax, small, large = record.decode_props(_chunk(buf, path, number, props, "properties", lo,
                                                                    foot_at), path, props[0])
        tree["properties"] = {"entries": e, "deletes": d, "min_seq": smin, "max_seq": smax, "smallest": small,
                              "largest": large}
    except CorruptionError as exc:
        problems.append(str(exc))
    try:
        payload = _chunk(buf, path, number, bloom, "bloom", lo, foot_at)
        tree["bloom"] = {"bits": 8 * max(0, len(payload) - 1), "probes": payload[-1] if payload else 0}
    except CorruptionError as exc:
        problems.append(str(exc))
    try:
        ikeys, _, ivalues = record.decode_block(_chunk(buf, path, number, index, "index", lo, foot_at), path,
                                                index[0])
    except CorruptionError as exc:
        problems.append(str(exc))
        return tree
    blocks: list[Tree] = []
    tree["blocks"] = blocks
    total = 0
    for last_key, value in zip(ikeys, ivalues):
        if value is None or len(value) != record.INDEX_VALUE.size:
            problems.append(f"{path} at offset {index[0]}: index entry is not an (offset, size) pair")
            break
        off, size = record.INDEX_VALUE.unpack(value)
        block: Tree = {"offset": off, "size": size, "index_key": last_key}
        blocks.append(block)
        try:
            keys, seqs, values = record.decode_block(_chunk(buf, path, number, (off, size), "data block", lo,
                                                            index[0]), path, off)
        except CorruptionError as exc:
            block["error"] = str(exc)
            problems.append(str(exc))
            continue
        block.update(count=len(keys), first_key=keys[0] if keys else None, last_key=keys[-1] if keys else None)
        total += len(keys)
        if keys and keys[-1] != last_key:
            problems.append(f"{path} at offset {off}: index key differs from the block's last key")
        if entries:
            block["entries"] = [{"key": k, "sequence": s, "value": v, "kind": "delete" if v is None else "value"}
                                for k, s, v in zip(keys, seqs, values)]
    if "properties" in tree and not problems and total != tree["properties"]["entries"]:
        problems.append(f"{path}: properties count {tree['properties']['entries']} entries, blocks hold {total}")
    return tree


def inspect_meta(dirpath: str, fs: FileSystem | None = None) -> Tree:
    """Both meta slots of a database directory (absent, invalid with the reason, or valid with their
    fields; which one is newest), and each numbered file with what the newest meta makes of it."""
    fs = OSFileSystem() if fs is None else fs
    if not fs.isdir(dirpath):
        raise NotADirectoryError(f"{dirpath} is not a directory")
    store = MetaStore(fs, dirpath)
    problems: list[str] = []
    slots: list[Tree] = []
    metas = []
    for slot in (0, 1):
        entry: Tree = {"name": META_NAMES[slot], "present": False, "valid": False, "newest": False}
        try:
            state = store.read_slot(slot)
        except UnsupportedFormatError as exc:
            entry.update(present=True, error=str(exc))
            problems.append(str(exc))
            slots.append(entry)
            continue
        entry["present"] = state.present
        if state.error is not None:
            entry["error"] = str(state.error)
            problems.append(str(state.error))
        if state.meta is not None:
            m = state.meta
            entry.update(valid=True, version=m.version, next_file=m.next_file, log_number=m.log_number,
                         last_sequence=m.last_sequence, tables=list(m.tables))
            metas.append((m.version, slot, m))
        slots.append(entry)
    tree: Tree = {"kind": "meta", "directory": dirpath, "slots": slots, "newest": None, "problems": problems}
    if not metas:
        if any(s["present"] for s in slots):
            problems.append(f"{dirpath}: no valid meta slot: the database does not open")
        return tree
    _, newest_slot, newest = max(metas, key=lambda t: t[:2])
    slots[newest_slot]["newest"] = True
    tree["newest"] = META_NAMES[newest_slot]
    other = {t for _, _, m in metas for t in m.tables} - set(newest.tables)
    files: list[Tree] = []
    for name in sorted(fs.listdir(dirpath)):
        parsed = filenames.parse(name)
        if parsed is None:
            continue
        n, kind = parsed
        if kind == filenames.TABLE:
            role = "live table" if n in newest.tables else ("table the older slot names" if n in other else
                                                             "orphan table (a writable open deletes it)")
        else:
            role = "live log" if n >= newest.log_number else "old log (deleted once no slot needs it)"
        files.append({"name": name, "role": role})
    for n in newest.tables:
        table = filenames.table_path(dirpath, n)
        if not fs.exists(table):
            problems.append(f"{table}: table named by the meta is missing")
    tree["files"] = files
    return tree
