"""Merges in a helper process, beside the interpreter lock (DESIGN.md, "Merges in a helper process").

A merge reads its input tables and writes one new table: file to file, with
nothing of the open KV but the tables' names, the live snapshots and the
settings.  Run in a thread it holds the interpreter lock for every entry it
moves, and the application's reads and commits wait behind it.  With
``Config.merge_process`` (the default, on the real file system) the merge
thread hands that work to a helper: the same Python interpreter started as
a child process with ``-I -c`` and this process's import path (never
through ``multiprocessing``, so the application's ``__main__`` is not
imported again), running ``serve``.  The
thread waits for the answer without the lock; the KV then fsyncs the
directory and names the table in its meta exactly as after a merge of its
own, so crash safety does not depend on the helper.

The helper is an accelerator only: any failure of it (it could not start,
died, answered with an error) makes ``merge_files`` raise ``HelperError``,
and the caller runs the same merge in its own thread, where the real error,
if any, is raised with its proper type.  Helpers are kept for the life of
the process (at most ``_KEEP`` idle) and end when their pipe closes.

Protocol, one request at a time over the child's stdin and stdout: a frame
is a u32 little-endian length and a pickle; a request is a ``MergeRequest``,
an answer ``("ok", fields of TableInfo or None)`` or ``("error", text)``.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pickle
import signal
import struct
import subprocess
import sys
import threading
from typing import IO, Any

import attrs

from kvstore import runs
from kvstore.builder import build_table
from kvstore.config import Config
from kvstore.expiry import Expired
from kvstore.fs import OSFileSystem
from kvstore.merge import EntryChunk, compact_chunks
from kvstore.rangedel import Fragments, Tombstone
from kvstore.sorted_file import BlockCache, TableReader
from kvstore.table_writer import TableInfo

__all__ = ["HelperError", "MergeRequest", "merge_files", "merge_here", "serve"]

_FRAME = struct.Struct("<I")
#: idle helpers kept for the next merge (one per KV merging at once, beyond that they end)
_KEEP = 2
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# the child's import path is this process's, with this package's directory first
_BOOT = "import sys; sys.path[:] = sys.argv[1:]; from kvstore.helper import serve; serve()"


class HelperError(Exception):
    """The helper could not do the merge; the caller merges in its own thread."""


@attrs.frozen
class MergeRequest:
    """One merge: ``inputs`` (path, file number) newest first, written as table ``number`` at ``path``;
    ``rows``, when given, a source newer than every input: a frozen memtable's entries in chunks, in table
    order (a flush is a request with rows and no inputs)."""

    inputs: tuple[tuple[str, int], ...]
    path: str
    number: int
    config: Config
    snapshots: tuple[int, ...]
    bottom: bool
    rows: tuple[EntryChunk, ...] = ()
    #: the frozen memtable's range tombstones, when ``rows`` are given
    ranges: tuple[Tombstone, ...] = ()
    #: the KV's clock when the merge began, by which expired values are dropped; None when no input
    #: holds a value that expires
    now: float | None = None


def merge_here(request: MergeRequest) -> tuple[TableInfo | None, int]:
    """Do ``request`` in this process on the real file system: the merge of its inputs by the rules of
    ``merge.compact_chunks`` (sorted runs chained as one source), written and fsynced by ``build_table``;
    returns what it wrote (None for nothing) and how many expired entries it dropped."""
    fs = OSFileSystem()
    cache = BlockCache(0)
    readers: list[TableReader] = []
    try:
        for path, number in request.inputs:
            readers.append(TableReader(fs, path, number, cache))
        fragments = Fragments.of(request.ranges).merge(*(r.fragments for r in readers if r.ranged))
        sources = [iter(request.rows)] if request.rows else []
        read = runs.unhidden(readers, fragments, request.snapshots)  # the others dropped unread
        sources += [level.entry_chunks() for level in runs.runs_of(read)]
        expired = Expired(request.now) if request.now is not None else None
        chunks = compact_chunks(sources, request.snapshots, request.bottom, fragments or None, expired)
        kept = fragments.retained(request.snapshots, request.bottom) if fragments else None
        info = build_table(fs, request.path, request.number, request.config, chunks, kept)
        return info, expired.count if expired is not None else 0
    finally:
        for reader in readers:
            reader.close()


# ---------------------------------------------------------------------- the parent's side

class _Helper:
    """One helper process and its pipes."""

    def __init__(self) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-I", "-c", _BOOT, _ROOT, *sys.path],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, close_fds=True)

    def ask(self, request: MergeRequest) -> tuple[TableInfo | None, int]:
        proc = self._proc
        assert proc.stdin is not None and proc.stdout is not None
        _write_frame(proc.stdin, request)
        answer = _read_frame(proc.stdout)
        if not (isinstance(answer, tuple) and len(answer) == 2):
            raise HelperError(f"the helper answered {answer!r}")
        status, body = answer
        if status != "ok":
            raise HelperError(f"the helper failed: {body}")
        if not (isinstance(body, tuple) and len(body) == 2 and isinstance(body[1], int)):
            raise HelperError(f"the helper answered {body!r}")
        fields, expired = body
        return None if fields is None else TableInfo(*fields), expired

    def close(self) -> None:
        proc = self._proc
        try:
            if proc.stdin is not None:
                proc.stdin.close()
            proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait()


_idle: list[_Helper] = []
_idle_lock = threading.Lock()


def merge_files(request: MergeRequest) -> tuple[TableInfo | None, int]:
    """Do ``request`` in a helper process (started on first use, then kept), answering as ``merge_here``;
    ``HelperError`` when the helper fails in any way, with any half-written output removed."""
    if getattr(sys, "frozen", False) or not sys.executable:
        raise HelperError("no Python interpreter to start (a frozen application)")
    with _idle_lock:
        helper = _idle.pop() if _idle else None
    try:
        if helper is None:
            helper = _Helper()
        answer = helper.ask(request)
    except (OSError, EOFError, pickle.PickleError, HelperError, ValueError) as exc:
        if helper is not None:
            helper.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(request.path)
        raise HelperError(str(exc)) from exc
    with _idle_lock:
        keep = len(_idle) < _KEEP
        if keep:
            _idle.append(helper)
    if not keep:
        helper.close()
    return answer


@atexit.register
def _close_idle() -> None:
    with _idle_lock:
        helpers = list(_idle)
        _idle.clear()
    for helper in helpers:
        helper.close()


# ---------------------------------------------------------------------- the helper's side

def serve(stdin: IO[bytes] | None = None, stdout: IO[bytes] | None = None) -> None:
    """The helper's loop: answer each request frame until the pipe closes.  Ctrl-C in a terminal reaches
    the whole process group; the helper ignores it and ends when its parent closes the pipe."""
    if stdin is None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    source = stdin if stdin is not None else sys.stdin.buffer
    sink = stdout if stdout is not None else sys.stdout.buffer
    while True:
        try:
            request = _read_frame(source)
        except EOFError:
            return
        try:
            if not isinstance(request, MergeRequest):
                raise TypeError(f"not a merge request: {type(request).__name__}")
            info, expired = merge_here(request)
            fields = None if info is None else tuple(getattr(info, name) for name in TableInfo.__slots__)
            answer: tuple[str, Any] = ("ok", (fields, expired))
        except Exception as exc:  # noqa: BLE001 - reported to the parent, which merges itself
            answer = ("error", f"{type(exc).__name__}: {exc}")
        _write_frame(sink, answer)


def _write_frame(sink: IO[bytes], obj: object) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    sink.write(_FRAME.pack(len(data)) + data)
    sink.flush()


def _read_frame(source: IO[bytes]) -> Any:
    head = source.read(_FRAME.size)
    if len(head) < _FRAME.size:
        raise EOFError("the pipe closed")
    (size,) = _FRAME.unpack(head)
    data = source.read(size)
    if len(data) < size:
        raise EOFError("the pipe closed inside a frame")
    return pickle.loads(data)
