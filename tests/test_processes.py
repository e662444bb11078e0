"""Real processes (docs/opening.md, docs/durability.md): a writer killed with SIGKILL at seeded random points,
over and over, loses no acknowledged commit and leaves exactly a prefix of its transactions; the directory
lock belongs to a live process and dies with it.

Beside tests/test_recovery.py (one kill at a fixed point) and tests/test_store.py (LockedError from a child
that exits): here the kills land anywhere, during flushes, merges and the recovery of the previous kill,
since the memtable is tiny and a kill may come before the child's first commit.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import random
import select
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from kvstore import KV, Config, CorruptionError, LockedError, record
from kvstore.metadata import META_NAMES

ROUNDS = 20
READ_ONLY = Config(background=False, read_only=True)

#: commit n sets three keys and ``last``, and every third one deletes a key of commit n - 6;
#: odd commits are not synced (a kill keeps what the OS holds, so they must survive too)
WRITER = textwrap.dedent("""
    import sys
    from kvstore import KV, Config
    path, n = sys.argv[1], int(sys.argv[2])
    kv = KV.open(path, Config(background=False, memtable_size=600, block_size=128))
    print("open", flush=True)
    while True:
        with kv.new_tx() as tx:
            for j in range(3):
                tx.set(b"t%06d-%d" % (n, j), b"v%d" % n + b"." * (n % 17))
            tx.set(b"last", b"%d" % n)
            if n % 3 == 0 and n >= 6:
                tx.delete(b"t%06d-1" % (n - 6))
            tx.commit(sync=n % 2 == 0)
        print(n, flush=True)
        n += 1
""")


def _expected(commits: int) -> dict[bytes, bytes]:
    """The state after commits 0 .. commits - 1 of WRITER."""
    state: dict[bytes, bytes] = {}
    for n in range(commits):
        for j in range(3):
            state[b"t%06d-%d" % (n, j)] = b"v%d" % n + b"." * (n % 17)
        state[b"last"] = b"%d" % n
        if n % 3 == 0 and n >= 6:
            state.pop(b"t%06d-1" % (n - 6), None)
    return state


def _committed(path: pathlib.Path, config: Config = READ_ONLY) -> int:
    """How many of WRITER's commits the database holds, after checking it holds exactly that prefix."""
    with KV.open(path, config) as kv:
        got = dict(kv.scan())
        assert kv.check() == []
    commits = int(got[b"last"]) + 1 if b"last" in got else 0
    assert got == _expected(commits)  # exactly a prefix: every transaction whole, nothing after it
    return commits


def _kill_after(child: subprocess.Popen[str], acks: int, delay: float) -> list[int]:
    """Read the child's acknowledgements until ``acks`` of them (0: until it opened), wait ``delay``
    seconds reading on, SIGKILL it; every commit it acknowledged."""
    assert child.stdout is not None
    acked: list[int] = []
    opened = False
    deadline = None
    try:
        while True:
            if deadline is None and opened and len(acked) >= acks:
                deadline = time.monotonic() + delay
            if deadline is not None and time.monotonic() >= deadline:
                break
            timeout = 30.0 if deadline is None else deadline - time.monotonic()
            ready, _, _ = select.select([child.stdout], [], [], timeout)
            if not ready and deadline is None:
                raise AssertionError("the writer went silent for 30 seconds")
            if not ready:
                continue
            line = child.stdout.readline()
            assert line, "the writer died on its own"
            if line.strip() == "open":
                opened = True
            else:
                acked.append(int(line))
    finally:  # killed whatever happened: a failed assertion must not leave a writer running
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    assert child.stdout is not None
    for line in child.stdout:  # acknowledged before it died, read after
        if line.strip() != "open":
            acked.append(int(line))
    child.stdout.close()
    return acked


def _orphan_tables(path: pathlib.Path) -> int:
    """Tables on disk that no meta slot names: a kill landed inside a flush or merge."""
    named: set[int] = set()
    for i, name in enumerate(META_NAMES):
        with contextlib.suppress(FileNotFoundError, CorruptionError):
            named.update(record.decode_meta((path / name).read_bytes(), name, i)[4])
    return sum(1 for p in path.glob("*.sst") if int(p.stem) not in named)


def _writer(path: pathlib.Path, start: int) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(start)], stdout=subprocess.PIPE,
                            text=True)


@pytest.mark.parametrize("seed", [1, 2], ids=lambda s: f"seed{s}")
def test_a_writer_killed_at_random_points_keeps_every_acknowledged_commit_as_a_prefix(
        tmp_path: pathlib.Path, seed: int) -> None:
    rng = random.Random(seed)
    path = tmp_path / "db"
    commits = 0
    mid_flush = 0
    for round_ in range(ROUNDS):
        # no acks: killed while opening (recovering the last kill) or before its first commit
        acks = 0 if round_ % 4 == 3 else rng.randint(1, 40)
        acked = _kill_after(_writer(path, commits), acks, rng.uniform(0, 0.05))
        mid_flush += _orphan_tables(path) > 0
        assert acked == list(range(commits, commits + len(acked)))
        # read-only: the next writer recovers this crash itself (and may be killed while doing it)
        commits = _committed(path)
        assert commits >= (acked[-1] + 1 if acked else 0)
    writable = Config(background=False)
    assert _committed(path, writable) == commits  # a writable recovery, then a clean close
    assert _committed(path) == commits
    assert commits > 50
    assert mid_flush > 0  # about half the kills land between a new table and the meta naming it


def test_a_second_process_gets_locked_error_until_the_holder_is_killed(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "db"
    holder = _writer(path, 0)
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "open"
    try:
        probe = subprocess.run([sys.executable, "-c", textwrap.dedent("""
            import sys
            from kvstore import KV, Config, LockedError
            try:
                KV.open(sys.argv[1], Config(background=False))
            except LockedError as exc:
                print("locked", isinstance(exc, OSError))
        """), str(path)], capture_output=True, text=True, timeout=60, check=True)
        assert probe.stdout.split() == ["locked", "True"]
        with pytest.raises(LockedError):
            KV.open(path, Config(background=False))
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
        acked = [int(line) for line in holder.stdout if line.strip() != "open"]
        holder.stdout.close()
    # the lock died with the killed process: a writable open now succeeds, with every acknowledged commit
    assert _committed(path, Config(background=False)) >= (acked[-1] + 1 if acked else 0)


#: fills two tables, then merges them into one with ``OSFile.truncate`` of a meta slot killing the process:
#: the slot holds the new, shorter meta followed by the tail of the old one
KILLED_IN_A_SLOT_WRITE = textwrap.dedent("""
    import os, signal, sys
    from kvstore import KV, Config, fs
    kv = KV.open(sys.argv[1], Config(background=False, growth_factor=2))
    for t, count in ((0, 50), (1, 2)):  # the newer table far smaller: the growth-factor rule merges nothing
        for i in range(count):
            kv.set(b"k%d-%02d" % (t, i), b"v")
        kv.flush()
    assert len(kv.stats().tables) == 2
    rename = fs.OSFileSystem.rename
    def killing_rename(self, src, dst):
        if os.path.basename(src).startswith("meta") and os.path.exists(dst):  # an existing slot rewritten
            print("killed", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        rename(self, src, dst)
    fs.OSFileSystem.rename = killing_rename
    kv.compact(full=True)
    print("not killed", flush=True)
""")


def test_a_kill_while_a_meta_slot_is_rewritten_leaves_check_empty(tmp_path: pathlib.Path) -> None:
    """A slot is rewritten as a new file renamed over it: killed before the rename, both slots are whole
    (the new meta is only in ``metaN.tmp``), so even a read-only check finds nothing wrong."""
    path = tmp_path / "db"
    child = subprocess.run([sys.executable, "-c", KILLED_IN_A_SLOT_WRITE, str(path)], capture_output=True,
                           text=True, timeout=120)
    assert child.returncode == -signal.SIGKILL and child.stdout.strip().endswith("killed"), child.stderr
    assert any(name.startswith("meta") and name.endswith(".tmp") for name in os.listdir(path))
    expected = {b"k%d-%02d" % (t, i): b"v" for t, count in ((0, 50), (1, 2)) for i in range(count)}
    with KV.open(path, READ_ONLY) as ro:
        assert ro.check() == []
        assert dict(ro.scan()) == expected
    with KV.open(path, Config(background=False)) as kv:
        assert dict(kv.scan()) == expected
        assert kv.check() == []
    assert not any(name.endswith(".tmp") for name in os.listdir(path))  # the writable open deleted it
    with KV.open(path, READ_ONLY) as ro:
        assert ro.check() == []
