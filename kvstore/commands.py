"""The subcommands of ``kvstore``: one function per command, from parsed arguments to an exit code.

Each ``cmd_NAME(args, io)`` takes what ``cli.build_parser`` parsed and the
standard streams, does its work and returns the exit code; a bad argument
raises ``UsageError`` (a key or value that does not parse: the shell's
``ArgumentError``, from the one parser both use) and any other error
propagates for ``cli.main`` to turn into its exit code and one line
(DESIGN.md, "Command line").

Invariants:
  - commands that only read (get, ttl, scan, dump, stats, check, inspect, backup's source) open the database
    read-only and never create one; put, load and shell create a missing one;
  - answers go to ``io.out``; progress goes to ``io.err`` only when it is a terminal.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import stat
from collections.abc import Iterator
from typing import Any, TextIO

from kvstore.config import MAX_KEY_SIZE_CAP, MAX_VALUE_SIZE_CAP, Config
from kvstore.display import ESCAPED, HEX, BytesForm, Progress, Ticker, human_bytes
from kvstore.dumpfile import DumpError, LoadReport, expiries, load, read_dump, write_dump
from kvstore.errors import CorruptionError
from kvstore.inspector import inspect_meta, inspect_sst, inspect_wal
from kvstore.report import SHOWN, inspect_lines, jsonable, stats_lines, stats_tree, trace_lines
from kvstore.shell import Shell, parse_bytes, parse_ttl, scan_lines, ttl_line
from kvstore.store import KV, Stats

__all__ = [
    "EXIT_BROKEN_PIPE", "EXIT_INTERNAL", "EXIT_INTERRUPTED", "EXIT_LOCKED", "EXIT_NOT_FOUND", "EXIT_OK",
    "EXIT_UNUSABLE", "EXIT_USAGE", "LOAD_BATCH_BYTES", "Streams", "UsageError", "cmd_backup", "cmd_check",
    "cmd_compact", "cmd_delete", "cmd_delete_range", "cmd_dump", "cmd_get", "cmd_inspect", "cmd_load", "cmd_put",
    "cmd_scan", "cmd_serve", "cmd_shell", "cmd_stats", "cmd_trace", "cmd_ttl", "open_config",
]

EXIT_OK = 0
#: ``get``, ``ttl``: the key is absent; ``check``: problems were found.
EXIT_NOT_FOUND = 1
EXIT_USAGE = 2
EXIT_LOCKED = 3
EXIT_UNUSABLE = 4
EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141

#: Keys and values committed per transaction by ``load`` (one big pair makes its own transaction).
LOAD_BATCH_BYTES = 1 << 20


class UsageError(Exception):
    """A bad argument or bad input: exit 2 with this message."""


class Streams:
    """The standard streams a command uses (``sys``'s at the time ``main`` runs)."""

    def __init__(self, inp: TextIO, out: TextIO, err: TextIO) -> None:
        self.inp = inp
        self.out = out
        self.err = err

    def say(self, line: str) -> None:
        """One line of answer on stdout."""
        self.out.write(line + "\n")


# ---------------------------------------------------------------------- helpers


def _form(args: argparse.Namespace) -> BytesForm:
    return HEX if getattr(args, "hex", False) else ESCAPED


def open_config(*, write: bool, create: bool) -> Config:
    """The ``Config`` of the command's opens: read-only unless ``write``; keys and values up to what the
    formats hold (not the defaults' 64 MiB), so that a dump of any database loads back."""
    return Config(read_only=not write, create_if_missing=create, max_key_size=MAX_KEY_SIZE_CAP,
                  max_value_size=MAX_VALUE_SIZE_CAP)


def _open(args: argparse.Namespace, *, write: bool = False, create: bool = False) -> KV:
    return KV.open(args.path, open_config(write=write, create=create))


def _space(kv: KV, args: argparse.Namespace) -> Any:
    """``kv``, or its collection ``--collection NAME``; a bad name is a usage error."""
    name = getattr(args, "collection", None)
    if name is None:
        return kv
    try:
        return kv.collection(name)
    except ValueError as exc:
        raise UsageError(f"--collection: {exc}") from None


def _count(n: int, word: str, plural: str | None = None) -> str:
    """``n`` and ``word``, plural unless ``n`` is 1: ``1 table``, ``3 tables``."""
    return f"{n:,} {word}" if n == 1 else f"{n:,} {plural or word + 's'}"


# ---------------------------------------------------------------------- commands


def cmd_get(args: argparse.Namespace, io: Streams) -> int:
    """``get PATH KEY``: print the value; 1 when the key is absent."""
    form = _form(args)
    key = parse_bytes(args.key, form, "KEY")
    with _open(args) as kv:
        value = _space(kv, args).get(key)
    if value is None:
        io.err.write(f"kvstore get: key {form.show(key)} not found\n")
        return EXIT_NOT_FOUND
    if args.raw:
        io.out.flush()
        io.out.buffer.write(value)
        io.out.buffer.flush()
    else:
        io.say(form.show(value))
    return EXIT_OK


def cmd_put(args: argparse.Namespace, io: Streams) -> int:
    """``put PATH KEY VALUE`` (or ``--stdin``) ``[--ttl SECONDS]``: set one key, creating the database when
    missing; with ``--ttl`` the key expires SECONDS after the commit."""
    form = _form(args)
    if (args.value is None) != args.stdin:
        raise UsageError("give either VALUE or --stdin (see 'kvstore put --help')")
    ttl = None if args.ttl is None else parse_ttl(args.ttl)
    key = parse_bytes(args.key, form, "KEY")
    value = io.inp.buffer.read() if args.stdin else parse_bytes(args.value, form, "VALUE")
    with _open(args, write=True, create=True) as kv:
        _space(kv, args).set(key, value, ttl=ttl)
    return EXIT_OK


def cmd_ttl(args: argparse.Namespace, io: Streams) -> int:
    """``ttl PATH KEY``: print the seconds KEY has left, or ``does not expire``; 1 when the key is absent."""
    form = _form(args)
    key = parse_bytes(args.key, form, "KEY")
    with _open(args) as kv:
        line = ttl_line(_space(kv, args), key)
    if line is None:
        io.err.write(f"kvstore ttl: key {form.show(key)} not found\n")
        return EXIT_NOT_FOUND
    io.say(line)
    return EXIT_OK


def cmd_trace(args: argparse.Namespace, io: Streams) -> int:
    """``trace PATH KEY [--json]``: what a get of KEY does, level by level (``KV.trace``)."""
    form = _form(args)
    key = parse_bytes(args.key, form, "KEY")
    with _open(args) as kv:
        try:
            traced = kv.trace(key, collection=args.collection)
        except ValueError as exc:
            raise UsageError(f"--collection: {exc}") from None
    if args.json:
        io.say(json.dumps(jsonable(traced.as_dict()), indent=2))
    else:
        for line in trace_lines(traced, form):
            io.say(line)
    return EXIT_OK


def cmd_delete(args: argparse.Namespace, io: Streams) -> int:
    """``delete PATH KEY...``: delete keys in one transaction and say how many existed."""
    form = _form(args)
    keys = [parse_bytes(k, form, "KEY") for k in args.keys]
    with _open(args, write=True) as kv, kv.new_tx() as tx:
        target = tx if args.collection is None else tx.collection(_space(kv, args).name)
        existed = sum(target.delete(k) for k in keys)
    io.say(f"deleted {existed} of {_count(len(keys), 'key')}")
    return EXIT_OK


def cmd_delete_range(args: argparse.Namespace, io: Streams) -> int:
    """``delete-range PATH START END``: delete every key in ``[START, END)`` with one range tombstone (nothing
    when START >= END)."""
    form = _form(args)
    start, end = parse_bytes(args.start, form, "START"), parse_bytes(args.end, form, "END")
    with _open(args, write=True) as kv:
        _space(kv, args).delete_range(start, end)
    io.say(f"deleted [{form.show(start)}, {form.show(end)})" if start < end else
           "nothing deleted: START is not below END")
    return EXIT_OK


def cmd_scan(args: argparse.Namespace, io: Streams) -> int:
    """``scan PATH [options]``: print pairs in key order, as text or JSON lines."""
    with _open(args) as kv:
        for line in scan_lines(_space(kv, args), args, _form(args)):
            io.say(line)
    return EXIT_OK


def cmd_dump(args: argparse.Namespace, io: Streams) -> int:
    """``dump PATH [-o FILE]``: write every pair of one snapshot in the dump format."""
    with _open(args) as kv:
        sequence = kv.stats().sequence
        target = io.out
        if args.output is not None:
            try:
                target = open(args.output, "w", encoding="utf-8", newline="\n")  # noqa: SIM115 - closed below
            except OSError as exc:
                raise UsageError(f"cannot write {args.output}: {exc.strerror}") from None
        try:
            with Progress(io.err, "dumping", None) as bar:
                if args.collection is None:  # every key: the database's own, then each collection's
                    names = kv.collections()
                    own, own_expiries = kv.scan(), expiries(kv)
                else:  # one collection's keys only
                    names = [_space(kv, args).name]
                    own, own_expiries = iter(()), None
                sections = [(name, kv.collection(name).scan(), expiries(kv, name)) for name in names]
                count = write_dump(own, target, sequence=sequence, progress=bar.update,
                                   expiries=own_expiries, collections=sections)
        finally:
            if target is not io.out:
                target.close()
    if args.output is not None:
        io.say(f"dumped {_count(count, 'pair')} at sequence {sequence} to {args.output}")
    return EXIT_OK


def _input_lines(args: argparse.Namespace, io: Streams, bar_label: str) -> tuple[Iterator[str], Progress, str]:
    if args.input is not None:
        try:
            source: TextIO = open(args.input, encoding="utf-8")  # noqa: SIM115 - closed by the generator
        except OSError as exc:
            raise UsageError(f"cannot read {args.input}: {exc.strerror}") from None
        name = args.input
    else:
        source, name = io.inp, "<stdin>"
    total = None
    with contextlib.suppress(OSError, ValueError, AttributeError):
        st = os.fstat(source.fileno())
        if stat.S_ISREG(st.st_mode):
            total = st.st_size
    bar = Progress(io.err, bar_label, total, as_bytes=True)

    def lines() -> Iterator[str]:
        read = 0
        try:
            for line in source:
                read += len(line)
                bar.update(read)
                yield line
        finally:
            if source is not io.inp:
                source.close()

    return lines(), bar, name


def cmd_load(args: argparse.Namespace, io: Streams) -> int:
    """``load PATH [-i FILE]``: set every pair of a dump in bounded transactions (skipping and counting
    those whose expiry has passed); 2 on a bad dump."""
    if args.batch_bytes < 1:
        raise UsageError(f"--batch-bytes must be at least 1, got {args.batch_bytes}")
    lines, bar, name = _input_lines(args, io, "loading")
    report = LoadReport()
    with _open(args, write=True, create=True) as kv, bar:
        try:
            rows = read_dump(lines, name)
            if args.collection is not None:  # every pair into collection NAME
                into = _space(kv, args).name
                rows = ((key, value, expires, into) for key, value, expires, _ in rows)
            load(kv, rows, report, batch_bytes=args.batch_bytes)
        except (DumpError, UnicodeDecodeError) as exc:
            raise UsageError(f"{exc}; {_loaded(report)} were committed before it") from None
    skipped = f"; skipped {_count(report.expired, 'pair')} whose expiry had passed" if report.expired else ""
    io.say(f"loaded {_loaded(report)}{skipped}")
    return EXIT_OK


def _loaded(report: LoadReport) -> str:
    return f"{_count(report.pairs, 'pair')} in {_count(report.transactions, 'transaction')}"


def cmd_collections(args: argparse.Namespace, io: Streams) -> int:
    """``collections PATH``: the names of the collections that hold at least one key, one per line."""
    with _open(args) as kv:
        for name in kv.collections():
            io.say(name)
    return EXIT_OK


def cmd_stats(args: argparse.Namespace, io: Streams) -> int:
    """``stats PATH [--json | --prometheus]``: tables newest first, memtable, WAL, sizes and counters; or
    ``KV.metrics_text()``."""
    with _open(args) as kv:
        if args.prometheus:
            io.out.write(kv.metrics_text())
            return EXIT_OK
        stats = kv.stats()
        spaces = not kv._legacy  # a database of meta format 1 opened read-only: keys as they are stored
    if args.json:
        io.say(json.dumps(jsonable(stats_tree(stats, args.path)), indent=2))
    else:
        for line in stats_lines(stats, args.path, _form(args), spaces):
            io.say(line)
    return EXIT_OK


def cmd_check(args: argparse.Namespace, io: Streams) -> int:
    """``check PATH [--json]``: ``kv.check()``, plus damage that stops the open; 1 on any problem."""
    with Ticker(io.err, "checking"):
        try:
            with _open(args) as kv:
                problems = kv.check()
        except CorruptionError as exc:  # damage found while opening is a finding like any other
            problems = [str(exc)]
    if args.json:
        io.say(json.dumps({"path": args.path, "ok": not problems, "problems": problems}, indent=2))
    elif not problems:
        io.say("OK")
    else:
        for p in problems:
            io.say(p)
        io.say(_count(len(problems), "problem"))
    return EXIT_NOT_FOUND if problems else EXIT_OK


def _size_line(stats: Stats) -> str:
    entries = _count(stats.memtable_entries, "memtable entry", "memtable entries")
    return (f"{_count(len(stats.tables), 'table')}, {entries}, "
            f"{human_bytes(stats.disk_bytes)} on disk ({stats.disk_bytes:,} bytes)")


def cmd_compact(args: argparse.Namespace, io: Streams) -> int:
    """``compact PATH [--full]``: merge tables and print the sizes before and after."""
    with Ticker(io.err, "compacting"):
        with _open(args, write=True) as kv:
            before = kv.stats()
            kv.compact(full=args.full)
        with _open(args) as kv:  # after close(): the memtable flushed and dropped files deleted
            after = kv.stats()
    io.say(f"before  {_size_line(before)}")
    change = (after.disk_bytes - before.disk_bytes) / before.disk_bytes * 100 if before.disk_bytes else 0.0
    io.say(f"after   {_size_line(after)}, {change:+.1f}%")
    return EXIT_OK


def cmd_backup(args: argparse.Namespace, io: Streams) -> int:
    """``backup PATH DEST``: ``kv.backup(DEST)`` on a read-only open, then open the copy to prove it."""
    dest = args.dest
    if os.path.exists(dest) and (not os.path.isdir(dest) or os.listdir(dest)):
        raise UsageError(f"{dest} exists and is not an empty directory")
    with _open(args) as kv:
        bar = Progress(io.err, "backing up", None)

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done, force=done == total)

        try:
            with bar:
                done = kv.backup(dest, progress=progress)
        except FileExistsError as exc:
            raise UsageError(str(exc)) from None
    with KV.open(dest, open_config(write=False, create=False)) as copy:  # the copy opens as a database
        stats = copy.stats()
    hows = [how for _, how in done]
    io.say(f"backup of {args.path} at sequence {stats.sequence} in {dest}: {_count(len(done), 'table')}"
           f" ({hows.count('linked')} linked, {hows.count('copied')} copied, {hows.count('written')} written"
           f" from the memtable), {human_bytes(stats.disk_bytes)}")
    return EXIT_OK


def cmd_inspect(args: argparse.Namespace, io: Streams) -> int:
    """``inspect wal|sst|meta FILE``: decode one file; 4 when it is damaged."""
    if args.what == "wal":
        tree = inspect_wal(args.file)
    elif args.what == "sst":
        tree = inspect_sst(args.file, entries=args.entries)
    else:
        tree = inspect_meta(args.file)
    if args.json:
        io.say(json.dumps(jsonable(tree), indent=2))
    else:
        for line in inspect_lines(tree, _form(args), 0 if args.full else SHOWN):
            io.say(line)
    problems = tree["problems"]
    if problems:
        io.err.write(f"kvstore inspect: {_count(len(problems), 'problem')} in {args.file}\n")
        return EXIT_UNUSABLE
    return EXIT_OK


def cmd_serve(args: argparse.Namespace, io: Streams) -> int:
    """``serve PATH``: the HTTP API, ``/metrics`` and the dashboard (``kvstore.serve``), until Ctrl-C."""
    try:
        from kvstore import serve
    except ImportError as exc:
        raise UsageError(f"serve needs the serve extra: pip install 'kvstore[serve]' ({exc})") from None
    token = args.token or os.environ.get("KVSTORE_TOKEN") or None
    if not serve.loopback(args.host) and token is None:
        raise UsageError(f"--host {args.host} is not a loopback address: give a token (--token or KVSTORE_TOKEN), "
                         "which every request must then present")
    if args.host in ("0.0.0.0", "::") and not args.allow_host:
        raise UsageError(f"--host {args.host} listens on every address: name the host names clients use with "
                         "--allow-host (requests for any other Host get 403)")
    with _open(args, write=args.writable, create=args.writable):
        pass  # a missing, locked or damaged database stops here, with the command line's exit codes
    settings = serve.Settings(path=args.path, host=args.host, port=args.port, writable=args.writable, token=token,
                              allow_hosts=tuple(args.allow_host))
    mode = "read-write" if args.writable else "read-only"

    def announce(url: str) -> None:
        io.err.write(f"kvstore serve: {mode} on {url} (Ctrl-C stops it)\n")
        io.err.flush()

    with contextlib.suppress(KeyboardInterrupt):
        serve.serve(settings, announce)
    io.err.write("kvstore serve: stopped, database closed\n")
    return EXIT_OK


def cmd_shell(args: argparse.Namespace, io: Streams) -> int:
    """``shell PATH``: the interactive prompt; 1 when any of its commands failed."""
    with _open(args, write=not args.read_only, create=not args.read_only) as kv:
        return Shell(kv, args.path, _form(args), io.inp, io.out, io.err).run()
