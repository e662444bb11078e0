"""Text and JSON renderings of what the command line reports: stats, check results, inspected files.

Text shows keys and values in a ``BytesForm`` (escaped or hex), cut to a
readable length with the full size beside them; JSON carries every byte,
base64-encoded, and nothing else differs between the two (DESIGN.md,
"Command line").

Invariants:
  - ``jsonable`` output holds only JSON types; each ``bytes`` becomes its base64 text;
  - text renderings never cut a key or value without saying how long it is.
"""

from __future__ import annotations

import base64
from typing import Any

from kvstore.display import BytesForm, human_bytes, moment
from kvstore.errors import CorruptionError
from kvstore.keyspace import split
from kvstore.store import Stats
from kvstore.trace import Step, Trace

__all__ = ["inspect_lines", "jsonable", "shorten", "stats_lines", "stats_tree", "stored_key", "trace_lines"]

#: Bytes of a key or value shown in summaries before it is cut.
SHOWN = 48


def jsonable(obj: Any) -> Any:
    """``obj`` with every ``bytes`` inside it replaced by its base64 text (tuples become lists)."""
    if isinstance(obj, bytes):
        return base64.b64encode(obj).decode("ascii")
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    return obj


def shorten(data: bytes | None, form: BytesForm, limit: int = SHOWN) -> str:
    """``data`` in ``form``, cut after ``limit`` bytes with its length beside it; ``-`` for None."""
    if data is None:
        return "-"
    if limit and len(data) > limit:
        return f"{form.show(data[:limit])}... ({len(data):,} bytes)"
    return form.show(data)


def stored_key(data: bytes | None, form: BytesForm, limit: int = SHOWN, spaces: bool = True) -> str:
    """A stored key as ``shorten`` shows it, by its key space (``spaces``; a database of meta format 1 has
    none): a collection's key as ``[name] key``, a key of the KV's own from ``FF`` without the byte its
    storing adds; a key no space produces as it is stored."""
    if not spaces or data is None or data[:1] != b"\xff":
        return shorten(data, form, limit)
    try:
        name, key = split(data)
    except CorruptionError:
        return shorten(data, form, limit)
    if name is None:
        return shorten(key, form, limit)
    return f"[{name}] {shorten(key, form, limit)}" if key else f"[{name}]"


def stats_tree(stats: Stats, path: str) -> dict[str, Any]:
    """The fields ``kvstore stats --json`` prints (keys as bytes; pass through ``jsonable``)."""
    return {
        "path": path,
        "sequence": stats.sequence,
        "tables": [{"name": t.name, "file_number": t.file_number, "entries": t.entries, "deletes": t.deletes,
                    "bytes": t.bytes, "smallest": t.smallest, "largest": t.largest,
                    "min_sequence": t.min_sequence, "max_sequence": t.max_sequence, "expiring": t.expiring}
                   for t in stats.tables],
        "memtable": {"entries": stats.memtable_entries, "bytes": stats.memtable_bytes,
                     "immutable": stats.immutable_memtables},
        "wal_bytes": stats.wal_bytes,
        "disk_bytes": stats.disk_bytes,
        "bytes_written": stats.bytes_written,
        "user_bytes": stats.user_bytes,
        "write_amplification": stats.write_amplification if stats.user_bytes else None,
        "flushes": stats.flushes,
        "merges": stats.merges,
        "expired": stats.expired,
        "live_snapshots": stats.live_snapshots,
        "cache": {"hits": stats.cache_hits, "misses": stats.cache_misses},
        "recovery": list(stats.recovery),
        "failed": stats.failed,
        "collections": [{"name": c.name, "keys": c.keys, "bytes": c.bytes, "exact": c.exact}
                        for c in stats.collections],
    }


def stats_lines(stats: Stats, path: str, form: BytesForm, spaces: bool = True) -> list[str]:
    """``kvstore stats`` as text: one line per fact, then one per table, newest first, and one per
    collection; keys shown by their key space (``stored_key``)."""
    n = len(stats.tables)
    lines = [
        f"path          {path}",
        f"sequence      {stats.sequence:,}",
        f"tables        {n} (newest first)" if n else "tables        none",
    ]
    for t in stats.tables:
        lines.append(f"  {t.name}  {t.entries:>10,} entries {t.deletes:>8,} deletes {human_bytes(t.bytes):>10}"
                     f"  seq {t.min_sequence}..{t.max_sequence}  keys {stored_key(t.smallest, form, 24, spaces)}"
                     f" .. {stored_key(t.largest, form, 24, spaces)}"
                     + (f"  {t.expiring:,} expiring" if t.expiring else ""))
    amp = f"{stats.write_amplification:.2f}" if stats.user_bytes else "n/a: nothing written since open"
    lines += [
        f"memtable      {stats.memtable_entries:,} entries, {human_bytes(stats.memtable_bytes)}"
        f" ({stats.immutable_memtables} frozen)",
        f"wal           {human_bytes(stats.wal_bytes)}",
        f"disk          {human_bytes(stats.disk_bytes)}",
        f"written       {human_bytes(stats.bytes_written)} by the engine for {human_bytes(stats.user_bytes)}"
        f" of keys and values since open; write amplification {amp}",
        f"work          {stats.flushes} flushes, {stats.merges} merges since open"
        + (f", {stats.expired:,} expired entries dropped" if stats.expired else ""),
        f"snapshots     {stats.live_snapshots} live",
        f"cache         {stats.cache_hits:,} hits, {stats.cache_misses:,} misses",
    ]
    lines += [f"recovery      {note}" for note in stats.recovery]
    if stats.failed is not None:
        lines.append(f"failed        {stats.failed}")
    n = len(stats.collections)
    lines.append(f"collections   {n} holding keys" if n else "collections   none")
    for c in stats.collections:
        how = "counted" if c.exact else "estimated"
        lines.append(f"  {c.name:<20} {c.keys:>10,} key{'s' if c.keys != 1 else ' '} {human_bytes(c.bytes):>10}"
                     f"  ({how})")
    return lines


def _header_line(h: dict[str, Any]) -> str:
    if "magic" not in h:
        return "header    (cut short)"
    state = "ok" if h["ok"] else "BAD"
    return (f"header    magic {h['magic']}  version {h['version']}  file number {h['file_number']}"
            f"  crc {h['crc']} {state}")


def _expiry(write: dict[str, Any]) -> str:
    """What follows a write or entry that expires in text: ``  expires at`` and its expiry."""
    return f"  expires at {moment(write['expires'])}" if "expires" in write else ""


def _wal_lines(tree: dict[str, Any], form: BytesForm, limit: int) -> list[str]:
    lines = [f"log       {tree['file']}  {tree['size']:,} bytes", _header_line(tree["header"])]
    for f in tree["frames"]:
        lines.append(f"frame @{f['offset']}  {f['length']} bytes  crc {f['crc']}  sequence {f['sequence']}"
                     f"  durable offset {f['durable_offset']}  {len(f['writes'])} writes")
        for w in f["writes"]:
            if w["kind"] == "range delete":
                lines.append(f"    delete range [{stored_key(w['key'], form, limit)},"
                             f" {stored_key(w['value'], form, limit)})")
            elif w["value"] is None:
                lines.append(f"    delete {stored_key(w['key'], form, limit)}")
            else:
                lines.append(f"    set    {stored_key(w['key'], form, limit)} = {shorten(w['value'], form, limit)}"
                             f"{_expiry(w)}")
    if "valid_end" in tree:
        lines.append(f"end       {len(tree['frames'])} frames, valid up to offset {tree['valid_end']}"
                     f" of {tree['size']}")
    return lines


def _sst_lines(tree: dict[str, Any], form: BytesForm, limit: int) -> list[str]:
    lines = [f"table     {tree['file']}  {tree['size']:,} bytes", _header_line(tree["header"])]
    foot = tree.get("footer")
    if foot is not None:
        lines.append(f"footer    @{foot['offset']}  index @{foot['index'][0]} ({foot['index'][1]} bytes)"
                     f"  bloom @{foot['bloom'][0]} ({foot['bloom'][1]})  properties @{foot['properties'][0]}"
                     f" ({foot['properties'][1]})  file number {foot['file_number']}  crc {foot['crc']}"
                     f" {'ok' if foot['ok'] else 'BAD'}")
    props = tree.get("properties")
    if props is not None:
        lines.append(f"props     {props['entries']:,} entries ({props['deletes']:,} deletes)  sequences"
                     f" {props['min_seq']}..{props['max_seq']}  keys {stored_key(props['smallest'], form, limit)}"
                     f" .. {stored_key(props['largest'], form, limit)}")
        if props["expiring"]:
            lines.append(f"expiring  {props['expiring']:,} entries, the earliest at {moment(props['earliest_expiry'])}")
    for r in tree.get("range_tombstones", ()):
        lines.append(f"range     [{stored_key(r['start'], form, limit)}, {stored_key(r['end'], form, limit)})"
                     " deleted at"
                     f" sequence{'s' if len(r['sequences']) > 1 else ''} {', '.join(map(str, r['sequences']))}")
    bloom = tree.get("bloom")
    if bloom is not None:
        shape = f" ({bloom['lines']:,} line{'s' if bloom['lines'] != 1 else ''} of 512)" if "lines" in bloom else ""
        lines.append(f"bloom     {bloom['kind']}, {bloom['bits']:,} bits{shape}, {bloom['probes']} probes"
                     if bloom["bits"] else "bloom     none")
    for i, b in enumerate(tree.get("blocks", ())):
        if "error" in b:
            lines.append(f"block {i:<4}@{b['offset']}  {b['size']} bytes  BAD: {b['error']}")
            continue
        lines.append(f"block {i:<4}@{b['offset']}  {b['size']} bytes  {b['count']} entries"
                     f"  {stored_key(b['first_key'], form, limit)} .. {stored_key(b['last_key'], form, limit)}")
        for e in b.get("entries", ()):
            shown = "DELETE" if e["value"] is None else shorten(e["value"], form, limit)
            lines.append(f"    {stored_key(e['key'], form, limit)} @{e['sequence']} = {shown}{_expiry(e)}")
    return lines


def _meta_lines(tree: dict[str, Any]) -> list[str]:
    lines = [f"directory {tree['directory']}"]
    for s in tree["slots"]:
        if not s["present"]:
            lines.append(f"{s['name']}     absent")
        elif not s["valid"]:
            lines.append(f"{s['name']}     INVALID: {s.get('error')}")
        else:
            mark = "  <- newest" if s["newest"] else ""
            lines.append(f"{s['name']}     valid  version {s['version']}  next_file {s['next_file']}"
                         f"  log_number {s['log_number']}  last_sequence {s['last_sequence']}"
                         f"  tables {s['tables']}{mark}")
    for f in tree.get("files", ()):
        lines.append(f"  {f['name']}  {f['role']}")
    return lines


def inspect_lines(tree: dict[str, Any], form: BytesForm, limit: int = SHOWN) -> list[str]:
    """A tree of ``kvstore.inspector`` as text, its problems last (``limit`` 0 shows every byte)."""
    kind = tree["kind"]
    if kind == "wal":
        lines = _wal_lines(tree, form, limit)
    elif kind == "sst":
        lines = _sst_lines(tree, form, limit)
    else:
        lines = _meta_lines(tree)
    lines += [f"PROBLEM   {p}" for p in tree["problems"]]
    return lines


def trace_lines(trace: Trace, form: BytesForm, limit: int = SHOWN) -> list[str]:
    """``kvstore trace`` as text: the key, one line per level consulted (and one per block it read), then
    the answer and the time taken."""
    stored = "" if trace.stored_key == trace.key else f" (stored as {shorten(trace.stored_key, form, limit)})"
    lines = [f"trace of {shorten(trace.key, form, limit)}{stored} at sequence {trace.snapshot:,}"]
    for n, step in enumerate(trace.steps, 1):
        span = ("empty" if step.smallest is None else
                f"keys {stored_key(step.smallest, form, 24)} .. {stored_key(step.largest, form, 24)}")
        bloom = "" if step.bloom is None else f"  bloom {step.bloom}"
        place = "" if step.in_range else "  (key outside its range)"
        lines.append(f"{n:>3}. {step.name:<18} {span}{bloom}{place}")
        for b in step.blocks:
            lines.append(f"       block {b.index} @{b.offset} ({b.size:,} bytes): "
                         f"{'cache hit' if b.cached else 'cache miss, read from the file'}")
        if step.range_tombstone is not None:
            lines.append(f"       range tombstone over the key at sequence {step.range_tombstone:,}")
        lines.append(f"       -> {_trace_outcome(step)}")
    found = "" if trace.sequence is None else f" at sequence {trace.sequence:,}"
    expiry = "" if trace.expires is None else f", expires at {moment(trace.expires)}"
    value = f" = {shorten(trace.value, form, limit)}" if trace.value is not None else ""
    lines.append(f"answer    {trace.answer}{found}{expiry}{value}  in {trace.seconds * 1e6:,.1f} µs")
    return lines


def _trace_outcome(step: Step) -> str:
    seq = f" at sequence {step.sequence:,}" if step.sequence is not None else ""
    return {
        "none": "no version of the key here: on to the next level",
        "skipped": "ruled out by the bloom filter: nothing read",
        "value": f"value found{seq}",
        "delete": f"delete found{seq}: the key is absent",
        "range-deleted": "a range tombstone newer than any version here: the key is absent",
        "expired": f"value found{seq}, expired: the key reads as absent",
    }[step.outcome]
