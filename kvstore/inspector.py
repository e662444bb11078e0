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
  - a value that expires shows as its own bytes with its expiry beside it (``expires``), never with the
    8 bytes of the expiry before it;
  - nothing here writes a byte.
"""

from __future__ import annotations

import os
from typing import Any

from kvstore import bloom, filenames, rangedel, record
from kvstore.block import decode_block
from kvstore.errors import CorruptionError, UnsupportedFormatError
from kvstore.filenames import META_NAMES
from kvstore.fs import FileSystem, OSFileSystem
from kvstore.metadata import Meta, MetaStore
from kvstore.wal import replay_log

__all__ = ["inspect_meta", "inspect_sst", "inspect_wal"]

Tree = dict[str, Any]


def _read(fs: FileSystem, path: str) -> bytes:
    file = fs.open(path)
    try:
        return file.pread(file.size(), 0)
    finally:
        file.close()


def _kind(value: bytes | None) -> str:
    if value is None:
        return "delete"
    return "range delete" if type(value) is record.RangeEnd else "value"


def _write(key: bytes, value: bytes | None, **more: Any) -> Tree:
    """One write or entry: its key, its value and its kind, and for a value that expires the value's own
    bytes and ``expires``, the expiry (seconds by the clock of the KV that wrote it)."""
    if type(value) is record.Expiring:
        return {"key": key, **more, "value": value.data, "kind": "value", "expires": value.expires}
    return {"key": key, **more, "value": value, "kind": _kind(value)}


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


def _named_header(buf: bytes, path: str, magic: bytes, kind: str, problems: list[str]) -> tuple[Tree, int]:
    """The header, checked also against the number in the file's name (when it is a ``kind`` name
    kvstore could have written), and the number frames and chunks are checked with: the header's,
    else the name's, else 0."""
    header = _header(buf, path, magic, problems)
    parsed = filenames.parse(os.path.basename(path))
    named = parsed[0] if parsed is not None and parsed[1] == kind else None
    if named is not None and header["ok"] and named != header["file_number"]:
        problems.append(f"{path} at offset 0: header names file number {header['file_number']}, the name {named}")
    return header, header.get("file_number", named or 0)


# ---------------------------------------------------------------------- logs


def inspect_wal(path: str, fs: FileSystem | None = None) -> Tree:
    """A log file: its header, every intact frame with its commit unit, and where (and why) decoding
    stopped, with the engine's verdict on that damage when this is the last log: a torn tail that a
    writable open cuts, or corruption that an open refuses."""
    fs = OSFileSystem() if fs is None else fs
    buf = _read(fs, path)
    problems: list[str] = []
    header, number = _named_header(buf, path, record.WAL_MAGIC, filenames.LOG, problems)
    frames: list[Tree] = []
    tree: Tree = {"kind": "wal", "file": path, "size": len(buf), "header": header, "frames": frames,
                  "problems": problems}
    if not header["ok"]:
        return tree
    tree["valid_end"] = _frames(buf, path, number, frames)
    _wal_damage(fs, path, number, tree)
    return tree


def _frames(buf: bytes, path: str, number: int, frames: list[Tree]) -> int:
    """Each intact frame after the header, appended to ``frames``; returns the offset where they end."""
    pos = record.FILE_HEADER.size
    while len(buf) - pos >= record.WAL_FRAME.size:
        frame = _frame(buf, path, number, pos)
        if frame is None:
            break
        frames.append(frame)
        pos += record.WAL_FRAME.size + frame["length"]
    return pos


def _frame(buf: bytes, path: str, number: int, pos: int) -> Tree | None:
    """The commit frame at ``pos`` with its writes; None when it is not whole and intact."""
    fsize = record.WAL_FRAME.size
    stored, length, rtype = record.WAL_FRAME.unpack_from(buf, pos)
    if rtype != record.RecordType.COMMIT or length > len(buf) - pos - fsize:
        return None
    payload = buf[pos + fsize : pos + fsize + length]
    if record.frame_crc(number, length, rtype, payload) != stored:
        return None
    try:
        seq, durable, writes = record.decode_commit(payload, path, pos)
    except CorruptionError:
        return None  # _wal_damage names it
    return {"offset": pos, "length": length, "type": rtype, "crc": f"0x{stored:08x}", "sequence": seq,
            "durable_offset": durable, "writes": [_write(k, v) for k, v in writes]}


def _wal_damage(fs: FileSystem, path: str, number: int, tree: Tree) -> None:
    """The engine's verdict on the log as the last log of a database, in ``tree`` and its problems."""
    problems = tree["problems"]
    try:
        result = replay_log(fs, path, number, last=True, strict=False)
    except (CorruptionError, UnsupportedFormatError) as exc:
        problems.append(f"{exc} (an open refuses this log)")
        return
    if result.damage is None:
        return
    offset, reason = result.damage
    verdict = ("corruption before the durable point: an open refuses it (recovery='salvage' keeps the "
               "frames before it)" if result.salvaged else
               "a torn tail: a writable open cuts the log here, losing no acknowledged durable commit")
    tree["damage"] = {"offset": offset, "reason": reason, "verdict": verdict, "torn_tail": not result.salvaged}
    problems.append(f"{path} at offset {offset}: {reason}; {verdict}")


# ---------------------------------------------------------------------- tables


class _Table:
    """The bytes of one table under inspection, and the chunks cut out of them."""

    def __init__(self, buf: bytes, path: str, number: int) -> None:
        self.buf = buf
        self.path = path
        self.number = number
        self.footer_at = len(buf) - record.FOOTER.size

    def chunk(self, place: tuple[int, int], what: str, hi: int | None = None) -> bytes:
        """The payload of the chunk at ``place`` (offset, size), which must lie between the header and
        ``hi`` (default: the footer); raises ``CorruptionError`` when it does not or fails its check."""
        off, size = place
        lo, hi = record.FILE_HEADER.size, self.footer_at if hi is None else hi
        if off < lo or size < 4 or off + size > hi:
            raise CorruptionError(self.path, off, f"the {what} chunk ({off}, {size}) lies outside [{lo}, {hi})")
        return record.open_chunk(self.buf[off : off + size], self.path, self.number, off)


def inspect_sst(path: str, *, entries: bool = False, fs: FileSystem | None = None) -> Tree:
    """A table: header, footer, properties, bloom filter, index and every data block (with every
    entry when ``entries``), each checked on its own."""
    buf = _read(OSFileSystem() if fs is None else fs, path)
    problems: list[str] = []
    header, number = _named_header(buf, path, record.TABLE_MAGIC, filenames.TABLE, problems)
    tree: Tree = {"kind": "sst", "file": path, "size": len(buf), "header": header, "problems": problems}
    table = _Table(buf, path, number)
    places = _footer(table, tree)
    if places is not None:
        index, filter_at, props = places
        _properties(table, props, tree["footer"]["version"], tree)
        _bloom(table, filter_at, tree["footer"]["version"], tree)
        _blocks(table, index, entries, tree)
    return tree


def _footer(table: _Table, tree: Tree) -> tuple[tuple[int, int], ...] | None:
    """The footer's fields in ``tree``; returns the places of index, bloom and properties, or None
    when the footer is damaged."""
    buf, path, foot_at, problems = table.buf, table.path, table.footer_at, tree["problems"]
    if foot_at < record.FILE_HEADER.size:
        problems.append(f"{path} at offset 0: table of {len(buf)} bytes is shorter than header and footer")
        return None
    foot = buf[foot_at:]
    io, isz, bo, bsz, po, psz, fnum, magic, version, _, stored = record.FOOTER.unpack(foot)
    tree["footer"] = {"offset": foot_at, "index": [io, isz], "bloom": [bo, bsz], "properties": [po, psz],
                      "file_number": fnum, "magic": magic.decode("latin-1"), "version": version,
                      "crc": f"0x{stored:08x}", "ok": True}
    try:
        header = tree["header"]
        return record.decode_footer(foot, path, foot_at, table.number, header["version"] if header["ok"] else None)
    except (CorruptionError, UnsupportedFormatError) as exc:
        tree["footer"]["ok"] = False
        problems.append(str(exc))
        return None


def _properties(table: _Table, place: tuple[int, int], version: int, tree: Tree) -> None:
    """The properties in ``tree``, and (version 3) the range tombstones they place, one row per piece."""
    try:
        props = record.decode_props(table.chunk(place, "properties"), table.path, place[0], version)
    except CorruptionError as exc:
        tree["problems"].append(str(exc))
        return
    ranges = props.ranges
    tree["properties"] = {"entries": props.entries, "deletes": props.deletes, "min_seq": props.min_seq,
                          "max_seq": props.max_seq, "smallest": props.smallest, "largest": props.largest,
                          "expiring": props.expiry[0], "earliest_expiry": props.expiry[1]}
    tree["range_tombstones"] = []
    if ranges == (0, 0):
        return
    try:
        fragments = rangedel.decode(table.chunk(ranges, "range tombstones"), table.path, ranges[0])
    except (CorruptionError, UnsupportedFormatError) as exc:
        tree["problems"].append(str(exc))
        return
    tree["range_tombstones"] = [{"start": start, "end": end, "sequences": list(seqs)}
                                for start, end, seqs in zip(fragments.starts, fragments.ends, fragments.seqs)]


def _bloom(table: _Table, place: tuple[int, int], version: int, tree: Tree) -> None:
    """The filter as the table's format ``version`` reads it: its kind ("blocked" in version 2,
    "double hashing" in version 1, "none"), its bits, probes and (version 2) lines."""
    try:
        payload = table.chunk(place, "bloom")
        found = bloom.decode(payload, version, table.path, place[0])
    except CorruptionError as exc:
        tree["problems"].append(str(exc))
        return
    if isinstance(found, bloom.BlockedBloom):
        tree["bloom"] = {"kind": "blocked", "bits": bloom.LINE_BITS * len(found.lines), "probes": found.k,
                         "lines": len(found.lines)}
    elif isinstance(found, bloom.Bloom) and found.bits_or_none() is not None:
        tree["bloom"] = {"kind": "double hashing", "bits": 8 * (len(payload) - 1), "probes": found.k}
    else:
        tree["bloom"] = {"kind": "none", "bits": 0, "probes": 0}


def _blocks(table: _Table, index: tuple[int, int], entries: bool, tree: Tree) -> None:
    """Every data block the index names, in ``tree["blocks"]``, and whether together they hold as
    many entries as the properties count."""
    problems = tree["problems"]
    try:
        ikeys, _, ivalues = decode_block(table.chunk(index, "index"), table.path, index[0])
    except CorruptionError as exc:
        problems.append(str(exc))
        return
    blocks: list[Tree] = []
    tree["blocks"] = blocks
    total = 0
    for last_key, value in zip(ikeys, ivalues):
        if value is None or len(value) != record.INDEX_VALUE.size:
            problems.append(f"{table.path} at offset {index[0]}: index entry is not an (offset, size) pair")
            break
        block = _block(table, record.INDEX_VALUE.unpack(value), last_key, index[0], entries, problems)
        blocks.append(block)
        total += block.get("count", 0)
    if "properties" in tree and not problems and total != tree["properties"]["entries"]:
        problems.append(f"{table.path}: properties count {tree['properties']['entries']} entries, blocks hold {total}")


def _block(table: _Table, place: tuple[int, int], last_key: bytes, hi: int, entries: bool,
           problems: list[str]) -> Tree:
    """The data block at ``place`` (which must end before ``hi``, the index), checked against the
    index's ``last_key``; with its entries when ``entries``."""
    off, size = place
    block: Tree = {"offset": off, "size": size, "index_key": last_key}
    try:
        keys, seqs, values = decode_block(table.chunk(place, "data block", hi), table.path, off)
    except CorruptionError as exc:
        block["error"] = str(exc)
        problems.append(str(exc))
        return block
    block.update(count=len(keys), first_key=keys[0] if keys else None, last_key=keys[-1] if keys else None)
    if keys and keys[-1] != last_key:
        problems.append(f"{table.path} at offset {off}: index key differs from the block's last key")
    if entries:
        block["entries"] = [_write(k, v, sequence=s) for k, s, v in zip(keys, seqs, values)]
    return block


# ---------------------------------------------------------------------- meta


def inspect_meta(dirpath: str, fs: FileSystem | None = None) -> Tree:
    """Both meta slots of a database directory (absent, invalid with the reason, or valid with their
    fields; which one is newest), and each numbered file with what the newest meta makes of it."""
    fs = OSFileSystem() if fs is None else fs
    if not fs.isdir(dirpath):
        raise NotADirectoryError(f"{dirpath} is not a directory")
    store = MetaStore(fs, dirpath)
    problems: list[str] = []
    slots: list[Tree] = []
    metas: list[tuple[int, int, Meta]] = []
    for slot in (0, 1):
        entry, meta = _slot(store, slot, problems)
        slots.append(entry)
        if meta is not None:
            metas.append((meta.version, slot, meta))
    tree: Tree = {"kind": "meta", "directory": dirpath, "slots": slots, "newest": None, "problems": problems}
    if not metas:
        if any(s["present"] for s in slots):
            problems.append(f"{dirpath}: no valid meta slot: the database does not open")
        return tree
    _, newest_slot, newest = max(metas, key=lambda t: t[:2])
    slots[newest_slot]["newest"] = True
    tree["newest"] = META_NAMES[newest_slot]
    older = {t for _, _, m in metas for t in m.tables} - set(newest.tables)
    tree["files"] = _files(fs, dirpath, newest, older)
    for n in newest.tables:
        table = filenames.table_path(dirpath, n)
        if not fs.exists(table):
            problems.append(f"{table}: table named by the meta is missing")
    return tree


def _slot(store: MetaStore, slot: int, problems: list[str]) -> tuple[Tree, Meta | None]:
    """What meta slot ``slot`` holds, and its meta when it is valid."""
    entry: Tree = {"name": META_NAMES[slot], "present": False, "valid": False, "newest": False}
    try:
        state = store.read_slot(slot)
    except UnsupportedFormatError as exc:
        entry.update(present=True, error=str(exc))
        problems.append(str(exc))
        return entry, None
    entry["present"] = state.present
    if state.error is not None:
        entry["error"] = str(state.error)
        problems.append(str(state.error))
    m = state.meta
    if m is not None:
        entry.update(valid=True, version=m.version, next_file=m.next_file, log_number=m.log_number,
                     last_sequence=m.last_sequence, tables=list(m.tables))
    return entry, m


def _files(fs: FileSystem, dirpath: str, newest: Meta, older: set[int]) -> list[Tree]:
    """Each table and log of the directory, in name order, with its role under the ``newest`` meta
    (``older``: the tables only the other slot names)."""
    files: list[Tree] = []
    for name in sorted(fs.listdir(dirpath)):
        parsed = filenames.parse(name)
        if parsed is not None:
            files.append({"name": name, "role": _role(*parsed, newest, older)})
    return files


def _role(number: int, kind: str, newest: Meta, older: set[int]) -> str:
    if kind == filenames.LOG:
        return "live log" if number >= newest.log_number else "old log (deleted once no slot needs it)"
    if number in newest.tables:
        return "live table"
    return "table the older slot names" if number in older else "orphan table (a writable open deletes it)"
