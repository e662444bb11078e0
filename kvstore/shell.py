"""``kvstore shell``: an interactive prompt on one open KV, also driven line by line from a script's stdin.

Commands: get, put (``--ttl SECONDS``: the key expires), ttl, del, delete-range, scan, begin, commit, abort,
stats, help, quit.
Arguments are split as a POSIX shell does (quotes group, backslashes are
kept) and read in the session's ``BytesForm``; between ``begin`` and
``commit``/``abort`` every command goes through one transaction.  On a
terminal the prompt keeps a history (``~/.kvstore_history``, or
``$KVSTORE_HISTORY``); from a pipe there is no prompt, so stdout holds only
answers.  The scan options live here too, shared with ``kvstore scan``.

Invariants:
  - answers go to stdout, errors and notices to stderr, one line each;
  - a transaction still open at the end of input is aborted, never committed.
"""

from __future__ import annotations

import argparse
import base64
import cmd
import contextlib
import json
import os
import shlex
from collections.abc import Iterator
from typing import Any, TextIO

from kvstore.display import BytesForm
from kvstore.errors import ConflictError, KVError
from kvstore.expiry import check_ttl
from kvstore.report import stats_lines, trace_lines
from kvstore.store import KV
from kvstore.transaction import KVTX

__all__ = ["ArgumentError", "Shell", "add_scan_arguments", "parse_bytes", "parse_ttl", "scan_lines", "ttl_line"]


class ArgumentError(ValueError):
    """Raised when a command's arguments do not parse (the command line exits 2; the shell goes on)."""


def add_scan_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``scan``, in ``kvstore scan`` and in the shell alike."""
    parser.add_argument("--from", dest="start", metavar="K", help="first key (inclusive)")
    parser.add_argument("--to", dest="end", metavar="K", help="end key (exclusive)")
    parser.add_argument("--prefix", metavar="P", help="only keys starting with P")
    parser.add_argument("--reverse", action="store_true", help="descending key order")
    parser.add_argument("--limit", type=int, metavar="N", help="at most N pairs")
    parser.add_argument("--keys-only", action="store_true", help="print keys without values")
    parser.add_argument("--format", choices=("text", "jsonl"), default="text",
                        help="text: key TAB value per line (default); jsonl: base64 JSON per line")


def parse_bytes(text: str, form: BytesForm, what: str) -> bytes:
    """The bytes ``text`` stands for in ``form``, for the command line and the shell alike; raises
    ``ArgumentError`` naming the argument ``what`` when ``text`` does not parse."""
    try:
        return form.parse(text)
    except ValueError as exc:
        raise ArgumentError(f"{what}: {exc}") from None


def parse_ttl(text: str) -> float:
    """The seconds of a ``--ttl`` argument, for the command line and the shell alike; raises
    ``ArgumentError`` unless ``text`` is a finite number above 0."""
    try:
        return check_ttl(float(text))
    except ValueError:
        raise ArgumentError(f"--ttl must be a finite number of seconds above 0, got {text!r}") from None


def ttl_line(source: KV | KVTX, key: bytes) -> str | None:
    """What ``ttl`` prints for ``key`` in ``source``: the seconds it has left (to the millisecond), or
    ``does not expire``; None when it is absent (or expired)."""
    left = source.ttl(key)
    if left is not None:
        return f"{left:.3f}"
    # asked after ttl: a key that expired since would read absent here (the clock never goes back)
    return None if source.get(key) is None else "does not expire"


def _optional_bytes(text: str | None, form: BytesForm, what: str) -> bytes | None:
    return None if text is None else parse_bytes(text, form, what)


def scan_lines(source: KV | KVTX, args: argparse.Namespace, form: BytesForm) -> Iterator[str]:
    """The lines ``scan`` prints for ``args`` (parsed by ``add_scan_arguments``) over ``source``."""
    if args.limit is not None and args.limit < 0:
        raise ArgumentError(f"--limit must be 0 or more, got {args.limit}")
    start = _optional_bytes(args.start, form, "--from")
    end = _optional_bytes(args.end, form, "--to")
    prefix = _optional_bytes(args.prefix, form, "--prefix")
    if args.limit == 0:
        return
    scan = source.scan(start, end, prefix=prefix, reverse=args.reverse)
    n = 0
    try:
        for key, value in scan:
            if args.format == "jsonl":
                obj = {"key": base64.b64encode(key).decode("ascii")}
                if not args.keys_only:
                    obj["value"] = base64.b64encode(value).decode("ascii")
                yield json.dumps(obj)
            elif args.keys_only:
                yield form.show(key)
            else:
                yield f"{form.show(key)}\t{form.show(value)}"
            n += 1
            if n == args.limit:
                return
    finally:
        close = getattr(scan, "close", None)
        if close is not None:
            close()


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:
        raise ArgumentError(f"{self.prog}: {message}")


def split(line: str) -> list[str]:
    """``line`` split into words as a POSIX shell does, except that backslashes are kept for the
    bytes form to read: ``put "a key" a\\x00`` gives ``['put', 'a key', 'a\\\\x00']``."""
    lex = shlex.shlex(line, posix=True)
    lex.whitespace_split = True
    lex.escape = ""
    lex.commenters = ""
    try:
        return list(lex)
    except ValueError as exc:
        raise ArgumentError(f"cannot split the line: {exc}") from None


class Shell(cmd.Cmd):
    """The prompt.  ``errors`` counts the commands that failed; ``run()`` returns 1 when any did."""

    intro_text = "kvstore shell: get, put, ttl, del, delete-range, scan, begin, commit, abort, stats, help, quit"

    def __init__(self, kv: KV, path: str, form: BytesForm, stdin: TextIO, stdout: TextIO, stderr: TextIO) -> None:
        super().__init__(stdin=stdin, stdout=stdout)
        self.kv = kv
        self.path = path
        self.form = form
        self.stderr = stderr
        self.interactive = stdin.isatty()
        self.use_rawinput = self.interactive
        self.tx: KVTX | None = None
        self.errors = 0
        self._update_prompt()
        scan = _Parser(prog="scan", add_help=False)
        add_scan_arguments(scan)
        self._scan_parser = scan

    # ------------------------------------------------------------------ plumbing

    def _update_prompt(self) -> None:
        if not self.interactive:
            self.prompt = ""
        else:
            self.prompt = "kvstore (tx)> " if self.tx is not None else "kvstore> "

    def _say(self, text: str) -> None:
        print(text, file=self.stdout)

    def _fail(self, text: str) -> None:
        self.errors += 1
        print(f"error: {text}", file=self.stderr)

    def _args(self, arg: str, least: int, most: int | None, usage: str) -> list[bytes]:
        words = split(arg)
        if len(words) < least or (most is not None and len(words) > most):
            raise ArgumentError(f"usage: {usage}")
        return [parse_bytes(w, self.form, "argument") for w in words]

    @property
    def _source(self) -> KV | KVTX:
        return self.tx if self.tx is not None else self.kv

    def onecmd(self, line: str) -> bool:
        """Run one line; errors are reported and counted, never raised."""
        if line.lstrip().startswith("#"):
            return False
        words = line.split(None, 1)
        if words and words[0] == "delete-range":  # cmd reads a command name as one identifier
            line = "delete_range " + (words[1] if len(words) > 1 else "")
        try:
            return super().onecmd(line)
        except (ArgumentError, KVError, OSError) as exc:
            self._fail(str(exc))
            return False

    def emptyline(self) -> bool:
        return False  # an empty line does nothing (cmd would repeat the last command)

    def default(self, line: str) -> None:
        self._fail(f"unknown command {line.split()[0]!r} (try help)")

    def postcmd(self, stop: bool, line: str) -> bool:
        self._update_prompt()
        return stop

    def run(self) -> int:
        """Read commands until quit or end of input; 0 when every command succeeded, else 1."""
        history = os.environ.get("KVSTORE_HISTORY") or os.path.expanduser("~/.kvstore_history")
        readline: Any = None
        if self.interactive:
            with contextlib.suppress(ImportError):
                import readline  # line editing and history, where the platform has it
            if readline is not None:
                with contextlib.suppress(OSError):
                    readline.read_history_file(history)
        try:
            intro: str | None = self.intro_text if self.interactive else None
            while True:
                try:
                    self.cmdloop(intro)
                    break
                except KeyboardInterrupt:
                    if not self.interactive:
                        raise
                    print("^C (quit, or end of input, leaves the shell)", file=self.stderr)  # drop the line
                    intro = self.intro = None
        finally:
            if self.tx is not None:
                self.tx.abort()
                self.tx = None
                print("the open transaction was aborted (no commit before the end)", file=self.stderr)
            if readline is not None:
                with contextlib.suppress(OSError):
                    readline.write_history_file(history)
        return 1 if self.errors else 0

    # ------------------------------------------------------------------ commands

    def do_get(self, arg: str) -> None:
        """get KEY: print the value of KEY (nothing, and a note on stderr, when it is absent)."""
        (key,) = self._args(arg, 1, 1, "get KEY")
        value = self._source.get(key)
        if value is None:
            print(f"not found: {self.form.show(key)}", file=self.stderr)
        else:
            self._say(self.form.show(value))

    def do_put(self, arg: str) -> None:
        """put [--ttl SECONDS] KEY VALUE: set KEY to VALUE (with --ttl, expiring SECONDS after the commit)."""
        usage = "put [--ttl SECONDS] KEY VALUE"
        words = split(arg)
        ttl = None
        if len(words) == 3 and words[0].startswith("--ttl="):
            ttl, words = parse_ttl(words[0].removeprefix("--ttl=")), words[1:]
        elif len(words) == 4 and words[0] == "--ttl":
            ttl, words = parse_ttl(words[1]), words[2:]
        elif len(words) != 2:
            raise ArgumentError(f"usage: {usage}")
        key, value = (parse_bytes(w, self.form, "argument") for w in words)
        self._source.set(key, value, ttl=ttl)

    def do_ttl(self, arg: str) -> None:
        """ttl KEY: print the seconds KEY has left or "does not expire" (when absent: a note on stderr)."""
        (key,) = self._args(arg, 1, 1, "ttl KEY")
        line = ttl_line(self._source, key)
        if line is None:
            print(f"not found: {self.form.show(key)}", file=self.stderr)
        else:
            self._say(line)

    def do_trace(self, arg: str) -> None:
        """trace KEY: what a get of KEY does, level by level (the database's latest state, not a transaction's
        writes)."""
        (key,) = self._args(arg, 1, 1, "trace KEY")
        for line in trace_lines(self.kv.trace(key), self.form):
            self._say(line)

    def do_del(self, arg: str) -> None:
        """del KEY...: delete keys (in one transaction); says how many existed."""
        keys = self._args(arg, 1, None, "del KEY...")
        if self.tx is not None:
            existed = sum(self.tx.delete(k) for k in keys)
        else:
            with self.kv.new_tx() as tx:
                existed = sum(tx.delete(k) for k in keys)
        self._say(f"deleted {existed} of {len(keys)}")

    do_delete = do_del

    def do_delete_range(self, arg: str) -> None:
        """delete-range START END: delete every key in [START, END) (in the open transaction, if any)."""
        start, end = self._args(arg, 2, 2, "delete-range START END")
        self._source.delete_range(start, end)
        self._say(f"deleted [{self.form.show(start)}, {self.form.show(end)})" if start < end else
                  "nothing deleted: START is not below END")

    def do_scan(self, arg: str) -> None:
        """scan [--from K] [--to K] [--prefix P] [--reverse] [--limit N] [--keys-only] [--format F]:
        print key TAB value per line."""
        args = self._scan_parser.parse_args(split(arg))
        for line in scan_lines(self._source, args, self.form):
            self._say(line)

    def do_begin(self, arg: str) -> None:
        """begin: start a transaction; commands then read its snapshot and buffer its writes."""
        self._args(arg, 0, 0, "begin")
        if self.tx is not None:
            raise ArgumentError("a transaction is already open (commit or abort it first)")
        self.tx = self.kv.new_tx()

    def do_commit(self, arg: str) -> None:
        """commit: apply the open transaction's writes, all or nothing."""
        self._args(arg, 0, 0, "commit")
        if self.tx is None:
            raise ArgumentError("no open transaction (begin one first)")
        tx, self.tx = self.tx, None
        try:
            tx.commit()
        except ConflictError as exc:
            raise ConflictError(f"conflict, nothing was applied: {exc}") from exc

    def do_abort(self, arg: str) -> None:
        """abort: drop the open transaction's writes."""
        self._args(arg, 0, 0, "abort")
        if self.tx is None:
            raise ArgumentError("no open transaction")
        self.tx.abort()
        self.tx = None

    def do_stats(self, arg: str) -> None:
        """stats: the database's tables, memtable, log and counters."""
        self._args(arg, 0, 0, "stats")
        for line in stats_lines(self.kv.stats(), self.path, self.form, not self.kv._legacy):
            self._say(line)

    def do_quit(self, arg: str) -> bool:
        """quit: leave the shell (an open transaction is aborted); also exit, or end of input."""
        return True

    do_exit = do_quit

    def do_EOF(self, arg: str) -> bool:  # the name cmd.Cmd gives end of input
        """End of input: leave the shell."""
        if self.interactive:
            self._say("")
        return True
