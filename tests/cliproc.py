"""What the command-line tests share: running ``python -m kvstore`` of this checkout as a real process,
reading its output, and a small database to run it on."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from kvstore import KV, Config

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
ENV.pop("KVSTORE_TRACEBACK", None)
SMALL = Config(background=False, sync=False, memtable_size=4096, block_size=256)

# every byte value, an empty key and value, quotes, backslashes, a newline and non-ASCII text
BINARY_PAIRS = {
    b"": b"empty key",
    b"\x00": b"",
    bytes(range(256)): bytes(range(255, -1, -1)),
    b"it's \"quoted\"\\": b"line\nbreak\ttab\r",
    "caf\u00e9".encode(): "\u2603".encode(),
    b"\xff" * 3: b"v" * 10_000,
}


def run(*args: object, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """``kvstore ARGS`` in a new process of this checkout."""
    return subprocess.run([sys.executable, "-m", "kvstore", *map(str, args)], input=stdin, capture_output=True,
                          env=ENV, timeout=120)


def out(result: subprocess.CompletedProcess[bytes]) -> str:
    return result.stdout.decode()


def err_line(result: subprocess.CompletedProcess[bytes]) -> str:
    """The one line of stderr (asserted to be one line and no traceback)."""
    text = result.stderr.decode()
    assert "Traceback" not in text
    assert text.endswith("\n") and text.count("\n") == 1, text
    return text.strip()


def files_of(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


def make_db(tmp_path: Path) -> Path:
    """A database with tables, a memtable and a deleted key: k000..k299 = v<i> repeated, minus k007."""
    path = tmp_path / "db"
    with KV.open(path, SMALL) as kv:
        for i in range(300):
            kv.set(b"k%03d" % i, b"v%d" % i * 3)
        kv.delete(b"k007")
    # a process killed before close() leaves its last commit only in the log
    script = ("import os, sys\nfrom kvstore import KV, Config\n"
              "KV.open(sys.argv[1], Config(background=False)).set(b'late', b'1')\nos._exit(0)\n")
    subprocess.run([sys.executable, "-c", script, str(path)], check=True, env=ENV, timeout=120)
    return path


def first_table(path: Path) -> Path:
    return sorted(path.glob("*.sst"))[0]
