"""The ``kvstore`` command (also ``python -m kvstore``): read, edit, verify, back up and inspect a database.

Built on argparse; ``main(argv)`` parses, runs one subcommand and returns
its exit code (DESIGN.md, "Command line"):

  0  done                      3  the database is locked by another KV
  1  get, ttl: no such key;    4  the database (or the file inspect reads) is corrupt,
     check: problems found        missing or otherwise unusable
  2  usage: bad arguments or input (a bad escape, a malformed dump)

Keys and values are read from arguments, and shown, as the body of a
Python bytes literal (``--hex``: as hex); JSON carries base64.

Invariants:
  - commands that only read (get, ttl, trace, scan, dump, stats, check, inspect, backup's source) open the database
    read-only and never create one; put, load and shell create a missing one;
  - stdout carries only answers; every message goes to stderr as one line, never a traceback;
  - progress is drawn on stderr only when it is a terminal.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable
from importlib import metadata
from typing import NoReturn

from kvstore import bench
from kvstore.commands import (
    EXIT_BROKEN_PIPE,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_LOCKED,
    EXIT_OK,
    EXIT_UNUSABLE,
    EXIT_USAGE,
    LOAD_BATCH_BYTES,
    Streams,
    UsageError,
    cmd_backup,
    cmd_check,
    cmd_collections,
    cmd_compact,
    cmd_delete,
    cmd_delete_range,
    cmd_dump,
    cmd_get,
    cmd_inspect,
    cmd_load,
    cmd_put,
    cmd_scan,
    cmd_serve,
    cmd_shell,
    cmd_stats,
    cmd_trace,
    cmd_ttl,
)
from kvstore.dumpfile import DumpError
from kvstore.errors import CorruptionError, KeyOrValueTooLargeError, LockedError, UnsupportedFormatError
from kvstore.report import SHOWN
from kvstore.shell import ArgumentError, add_scan_arguments

__all__ = ["COMMANDS", "FORWARDED", "build_parser", "main"]

#: Subcommands that hand every argument after their name to another module's ``main(argv) -> int``:
#: name -> (one-line help, main).
FORWARDED: dict[str, tuple[str, Callable[[list[str]], int]]] = {
    "bench": ("run LevelDB db_bench's workloads on a fresh database (--compare sqlite3 beside it)",
              lambda argv: bench.main(argv, prog="kvstore bench")),
}

#: The subcommands ``build_parser`` defines.
COMMANDS = ("get", "put", "ttl", "trace", "delete", "delete-range", "scan", "dump", "load", "stats", "check",
            "compact", "backup", "inspect", "shell", "serve")


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error raised as ``UsageError`` (one line, exit 2) instead of printed."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _version() -> str:
    try:
        return metadata.version("kvstore")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


# ---------------------------------------------------------------------- the parser


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``kvstore``: one subparser per command, each with ``handler`` set."""
    parser = _Parser(
        prog="kvstore",
        description="Read, edit, verify, back up and inspect a kvstore database (PATH is its directory). "
                    "Keys and values are written as the body of a Python bytes literal (a\\x00b, \\\\), "
                    "or as hex with --hex; JSON output carries them in base64.",
        epilog="exit codes: 0 ok, 1 key not found (get, ttl) or problems found (check), 2 usage error, "
               "3 database locked, 4 database (or inspected file) corrupt, missing or unusable",
    )
    parser.add_argument("--version", action="version", version=f"kvstore {_version()}")
    sub = _Subcommands(parser)
    _add_key_commands(sub)
    _add_database_commands(sub)
    _add_inspect_command(sub)
    p = sub.add("shell", cmd_shell, "an interactive prompt (commands also from stdin)", hexed=True)
    p.add_argument("--read-only", action="store_true", help="open read-only (no put, del or commit)")
    p = sub.add("serve", cmd_serve, "serve an HTTP JSON API, /metrics and a live dashboard (the serve extra)")
    p.add_argument("--host", default="127.0.0.1", help="the address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8470, help="the port (default 8470; 0: any free port)")
    p.add_argument("--writable", action="store_true", help="accept writes (else the database opens read-only)")
    p.add_argument("--token", help="require Authorization: Bearer TOKEN on every request (default: "
                   "$KVSTORE_TOKEN); needed to listen on any other address than loopback")
    p.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                   help="a host name clients may use in the Host header (repeatable)")
    for name, (text, _) in FORWARDED.items():
        sub.forward(name, text)
    return parser


class _Subcommands:
    """The subcommands of a parser, and ``hexed``, the parent parser of the ``--hex`` option."""

    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self._sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=_Parser)
        self.hexed = _Parser(add_help=False)
        self.hexed.add_argument("--hex", action="store_true", help="keys and values as hex, in arguments and output")
        self.spaced = _Parser(add_help=False)
        self.spaced.add_argument("--collection", metavar="NAME",
                                 help="the keys of collection NAME instead of the database's own")

    def add(self, name: str, handler: Callable[[argparse.Namespace, Streams], int], text: str, *,
            path: bool = True, hexed: bool = False, spaced: bool = False) -> argparse.ArgumentParser:
        """A subcommand ``name`` run by ``handler``, with a PATH argument unless not ``path``; ``hexed``:
        with ``--hex``; ``spaced``: with ``--collection NAME``."""
        parents = ([self.hexed] if hexed else []) + ([self.spaced] if spaced else [])
        p: argparse.ArgumentParser = self._sub.add_parser(name, help=text, description=text, parents=parents)
        if path:
            p.add_argument("path", metavar="PATH", help="the database directory")
        p.set_defaults(handler=handler)
        return p

    def forward(self, name: str, text: str) -> None:
        """A subcommand ``name`` that takes every argument after it as they are (see ``FORWARDED``)."""
        f = self._sub.add_parser(name, help=text, add_help=False)
        f.add_argument("args", nargs=argparse.REMAINDER)


def _add_key_commands(sub: _Subcommands) -> None:
    """get, put, ttl, delete, delete-range and scan: the commands that read keys and values from their
    arguments."""
    p = sub.add("get", cmd_get, "print the value of KEY (exit 1 when absent)", hexed=True, spaced=True)
    p.add_argument("key", metavar="KEY")
    p.add_argument("--raw", action="store_true", help="write the value's bytes as they are, with no newline")

    p = sub.add("put", cmd_put, "set KEY to VALUE (creates the database when missing)", hexed=True, spaced=True)
    p.add_argument("key", metavar="KEY")
    p.add_argument("value", metavar="VALUE", nargs="?")
    p.add_argument("--stdin", action="store_true", help="read the value's bytes, as they are, from stdin")
    p.add_argument("--ttl", metavar="SECONDS", help="the key expires SECONDS (a number above 0) after the commit")

    p = sub.add("ttl", cmd_ttl, "print the seconds KEY has left before it expires (exit 1 when absent)", hexed=True,
                spaced=True)
    p.add_argument("key", metavar="KEY")

    p = sub.add("trace", cmd_trace, "trace a get of KEY: each memtable and table consulted, blocks read, the "
                "version found", hexed=True, spaced=True)
    p.add_argument("key", metavar="KEY")
    p.add_argument("--json", action="store_true", help="JSON (keys and values in base64)")

    p = sub.add("delete", cmd_delete, "delete keys in one transaction", hexed=True, spaced=True)
    p.add_argument("keys", metavar="KEY", nargs="+")

    p = sub.add("delete-range", cmd_delete_range, "delete every key in [START, END) with one range tombstone",
                hexed=True, spaced=True)
    p.add_argument("start", metavar="START")
    p.add_argument("end", metavar="END")

    p = sub.add("scan", cmd_scan, "print pairs in key order: key TAB value per line", hexed=True, spaced=True)
    add_scan_arguments(p)


def _add_database_commands(sub: _Subcommands) -> None:
    """dump, load, stats, check, compact and backup: the commands on a whole database."""
    p = sub.add("dump", cmd_dump, "write every pair as JSON lines (the dump format)", spaced=True)
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")

    p = sub.add("load", cmd_load, "set every pair of a dump (creates the database when missing)", spaced=True)
    p.add_argument("-i", "--input", metavar="FILE", help="read FILE instead of stdin")
    p.add_argument("--batch-bytes", type=int, default=LOAD_BATCH_BYTES, metavar="N",
                   help=f"commit each time N bytes of keys and values are pending (default {LOAD_BATCH_BYTES})")

    sub.add("collections", cmd_collections, "list the collections that hold at least one key")
    p = sub.add("stats", cmd_stats, "tables (newest first), memtable, WAL, sizes and counters", hexed=True)
    shown = p.add_mutually_exclusive_group()
    shown.add_argument("--json", action="store_true", help="JSON (keys in base64)")
    shown.add_argument("--prometheus", action="store_true", help="the metrics in the Prometheus text format")

    p = sub.add("check", cmd_check, "verify every checksum, order and reference; exit 1 on any problem")
    p.add_argument("--json", action="store_true", help="JSON: {path, ok, problems}")

    p = sub.add("compact", cmd_compact, "merge tables by the growth-factor policy, and report sizes")
    p.add_argument("--full", action="store_true", help="merge everything into one table")

    p = sub.add("backup", cmd_backup, "copy the database, as of one snapshot, into DEST (new or empty)")
    p.add_argument("dest", metavar="DEST", help="a directory that does not exist or is empty")


def _add_inspect_command(sub: _Subcommands) -> None:
    """inspect wal|sst|meta: one file decoded, with the options of how its keys and values are shown."""
    p = sub.add("inspect", cmd_inspect, "decode one file and print its structure", path=False)
    what = p.add_subparsers(dest="what", metavar="KIND", required=True, parser_class=_Parser)
    shown = _Parser(add_help=False, parents=[sub.hexed])
    shown.add_argument("--json", action="store_true", help="JSON (keys and values in base64)")
    shown.add_argument("--full", action="store_true", help=f"show whole keys and values (else cut at {SHOWN} bytes)")
    w = what.add_parser("wal", parents=[shown], help="a log file NNNNNN.log: header, frames, commits, damage")
    w.add_argument("file", metavar="FILE")
    s = what.add_parser("sst", parents=[shown], help="a table file NNNNNN.sst: header, footer, blocks")
    s.add_argument("file", metavar="FILE")
    s.add_argument("--entries", action="store_true", help="every entry of every block too")
    m = what.add_parser("meta", parents=[shown], help="the meta slots of database PATH and its files")
    m.add_argument("file", metavar="PATH")


# ---------------------------------------------------------------------- main


def _oserror_text(exc: OSError) -> str:
    if exc.filename is not None and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    return str(exc)


def _failure(exc: BaseException) -> tuple[int, str] | None:
    """The exit code and message for an error a command let out; None for one that is a bug."""
    if isinstance(exc, UsageError | ArgumentError | DumpError | KeyOrValueTooLargeError):
        return EXIT_USAGE, str(exc)
    if isinstance(exc, LockedError):
        return EXIT_LOCKED, f"{_oserror_text(exc)} (another KV has the database open)"
    if isinstance(exc, CorruptionError | UnsupportedFormatError):
        return EXIT_UNUSABLE, f"database unusable: {exc}"
    if isinstance(exc, OSError):
        return EXIT_UNUSABLE, _oserror_text(exc)
    return None


def main(argv: list[str] | None = None) -> int:
    """Run the ``kvstore`` command with ``argv`` (default: the process's arguments); returns the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    io = Streams(sys.stdin, sys.stdout, sys.stderr)
    name = "kvstore"
    try:
        if argv and argv[0] in FORWARDED:
            name = f"kvstore {argv[0]}"
            return FORWARDED[argv[0]][1](argv[1:])
        parser = build_parser()
        if argv and argv[0] in COMMANDS:
            name = f"kvstore {argv[0]}"
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # --help and --version
            return exc.code if isinstance(exc.code, int) else EXIT_OK
        handler: Callable[[argparse.Namespace, Streams], int] = args.handler
        code = handler(args, io)
        io.out.flush()
        return code
    except KeyboardInterrupt:
        io.err.write(f"{name}: interrupted\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # the reader went away (``kvstore scan db | head``): stop quietly, as a process killed by SIGPIPE
        with contextlib.suppress(OSError, ValueError, AttributeError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), io.out.fileno())
        return EXIT_BROKEN_PIPE
    except Exception as exc:  # every error becomes one line and an exit code (re-raised when it is a bug)
        failure = _failure(exc)
        if failure is None:
            if os.environ.get("KVSTORE_TRACEBACK"):
                raise
            io.err.write(f"{name}: internal error: {type(exc).__name__}: {exc} (KVSTORE_TRACEBACK=1 shows where)\n")
            return EXIT_INTERNAL
        code, message = failure
        io.err.write(f"{name}: {message}\n")
        return code
