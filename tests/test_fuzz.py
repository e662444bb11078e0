"""The fuzz harnesses (fuzz/): every seed corpus file replays through every check(), and each harness runs
under atheris for a short fixed number of executions, so a decoder that lets anything but
``CorruptionError``/``UnsupportedFormatError`` escape (or hangs) fails CI.

Run them longer by hand: see README.md, "Fuzzing".
"""

from __future__ import annotations

import importlib
import importlib.util
import itertools
import pathlib
import re
import subprocess
import sys
from collections.abc import Callable

import pytest

from kvstore import KV, Config, CorruptionError, CorruptSSTableError, block, record, wal
from kvstore.metadata import META_NAMES
from kvstore.simfs import SimFS
from kvstore.sorted_file import BlockCache, TableReader

FUZZ = pathlib.Path(__file__).resolve().parent.parent / "fuzz"
CORPUS = FUZZ / "corpus"
sys.path.insert(0, str(FUZZ))

#: each harness and its executions per CI run: about ten seconds each on a two-core machine
RUNS = {
    "wal_record": 500_000,
    "wal_replay": 25_000,
    "table_block": 500_000,
    "table": 15_000,
    "meta": 50_000,
    "directory": 5_000,
    "range_section": 200_000,
}
#: a ceiling on each run's time, so a slow machine stops early instead of blowing the suite's budget
MAX_SECONDS = 15


def _check(name: str) -> Callable[[bytes], None]:
    check: Callable[[bytes], None] = importlib.import_module(f"fuzz_{name}").check
    return check


def _corpus_files() -> list[pathlib.Path]:
    return sorted(p for p in CORPUS.rglob("*") if p.is_file())


def test_the_seed_corpus_has_files_for_every_harness_and_stays_small() -> None:
    assert sorted(p.name for p in CORPUS.iterdir()) == sorted(RUNS)
    assert all(any((CORPUS / name).iterdir()) for name in RUNS)
    assert sum(p.stat().st_size for p in _corpus_files()) < 1 << 20


def _seeds(name: str) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((CORPUS / name).glob("seed-*"))}


def _version(file: bytes) -> int:
    """The format version a file's header names."""
    return int(record.FILE_HEADER.unpack_from(file, 0)[1])


def _number(file: bytes) -> int:
    """The file number a file's header names."""
    return int(record.FILE_HEADER.unpack_from(file, 0)[3])


def _sim_file(name: str, data: bytes) -> tuple[SimFS, str]:
    """A file system holding ``data`` as /db/``name``, and its path."""
    fs = SimFS()
    fs.mkdir("/db")
    file = fs.open(f"/db/{name}", create=True)
    file.append(data)
    file.close()
    return fs, f"/db/{name}"


def test_make_corpus_replaces_only_the_seeds_it_writes() -> None:
    seed = importlib.import_module("make_corpus").SEED
    assert seed.fullmatch("seed-00") and seed.fullmatch("seed-123")
    assert not any(seed.fullmatch(name) for name in ("seed-v2-00", "seed-v3-01", "regress-meta-version-u64-max"))


def test_the_table_seeds_hold_every_table_version_and_expiring_entries() -> None:
    seeds = _seeds("table")
    versions = {_version(data[1:]) for data in seeds.values()}
    assert {2, 3, record.TABLE_FORMAT_VERSION} <= versions
    expiring = 0
    for name, data in seeds.items():
        if _version(data[1:]) != record.TABLE_FORMAT_VERSION or data[0]:  # the newest tables, as written
            continue
        fs, path = _sim_file("000001.sst", data[1:])
        reader = TableReader(fs, path, _number(data[1:]), BlockCache(0))
        try:
            assert reader.verify() == [], name
            found = [v for _, _, v in reader.entries() if type(v) is record.Expiring]
            assert len(found) == reader.expiring and (not found or min(v.expires for v in found) == reader.earliest)
            expiring += len(found)
        finally:
            reader.close()
    assert expiring > 0


def test_the_block_and_frame_seeds_hold_expiring_values() -> None:
    blocks = [block.decode_block(data[1:], "seed", 20)[2] for data in _seeds("table_block").values()]
    assert any(type(v) is record.Expiring for values in blocks for v in values)
    frames = [record.decode_commit(data[record.WAL_FRAME.size :], "seed", 20)[2]
              for data in _seeds("wal_record").values()]
    assert any(type(v) is record.Expiring for writes in frames for _, v in writes)


def test_the_log_seeds_hold_every_log_version_and_expiring_values() -> None:
    seeds = _seeds("wal_replay")
    assert {_version(data[1:]) for data in seeds.values()} >= {2, record.WAL_FORMAT_VERSION}
    log = seeds["seed-00"][1:]
    assert _version(log) == record.WAL_FORMAT_VERSION
    fs, path = _sim_file("000001.log", log)
    replay = wal.replay_log(fs, path, _number(log), last=True)
    assert any(type(v) is record.Expiring for _, writes in replay.commits for _, v in writes)


def test_the_directory_seeds_expire_some_values_at_the_harness_clock() -> None:
    """make_corpus builds its database at BUILT_AT; at fuzz_directory's NOW some of the values set with a
    ttl have expired and some have not, so a fuzzed directory reaches both sides of every expiry test."""
    fuzz_directory = importlib.import_module("fuzz_directory")
    built_at = importlib.import_module("make_corpus").BUILT_AT
    from harness import unpack_files

    data = _seeds("directory")["seed-00"]
    lasting = []
    for now in (built_at, fuzz_directory.NOW, fuzz_directory.NOW + 10**6):
        fs = fuzz_directory.make_fs(unpack_files(data[1:]), False)
        clock = itertools.repeat(now).__next__  # a clock that stands still at now
        with KV.open(fuzz_directory.DIR, Config(background=False, read_only=True), fs=fs, clock=clock) as kv:
            lasting.append(sum(kv.ttl(key) is not None for key, _ in kv.scan()))
    assert lasting[0] > lasting[1] > lasting[2] == 0, lasting


@pytest.mark.parametrize("name", sorted(RUNS), ids=str)
def test_every_corpus_file_decodes_or_raises_corruption(name: str) -> None:
    check = _check(name)
    for path in _corpus_files():  # every harness's seeds, not only its own: they are all just bytes
        check(path.read_bytes())


@pytest.mark.parametrize("name", sorted(RUNS), ids=str)
def test_each_harness_fuzzed_briefly_finds_nothing(name: str, tmp_path: pathlib.Path) -> None:
    if importlib.util.find_spec("atheris") is None:
        pytest.skip("atheris is not installed (pip install -e '.[dev]')")
    work = tmp_path / "corpus"
    work.mkdir()
    args = [sys.executable, str(FUZZ / f"fuzz_{name}.py"), str(work), str(CORPUS / name), "-seed=1",
            f"-runs={RUNS[name]}", f"-max_total_time={MAX_SECONDS}", "-timeout=10", "-rss_limit_mb=2048",
            f"-artifact_prefix={tmp_path}/"]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=MAX_SECONDS + 60)
    found = sorted(p.name for p in tmp_path.iterdir() if p.name != "corpus")
    assert proc.returncode == 0 and not found, f"{found}\n{proc.stderr[-6000:]}"
    done = re.search(r"Done (\d+) runs", proc.stderr)
    assert done is not None and int(done.group(1)) > 0, proc.stderr[-2000:]


# ---------------------------------------------------------------- what the harnesses found, kept as plain tests


def test_a_meta_counter_at_the_u64_limit_is_corruption_not_a_struct_error(tmp_path: pathlib.Path) -> None:
    # A meta slot with a good checksum and version 2**64 - 1 used to open, then the next meta write (the
    # open's own, or close's) failed with struct.error packing version + 1.  Open now refuses a meta with
    # any counter past record.MAX_COUNTER.  Input kept as fuzz/corpus/directory/regress-meta-version-u64-max.
    _check("directory")((CORPUS / "directory" / "regress-meta-version-u64-max").read_bytes())
    with KV.open(tmp_path, Config(background=False)) as kv:
        kv.set(b"k", b"v")
    for i, name in enumerate(META_NAMES):
        _, next_file, log_number, last_sequence, tables = record.decode_meta((tmp_path / name).read_bytes(), name, i)
        (tmp_path / name).write_bytes(record.encode_meta(i, 2**64 - 1, next_file, log_number, last_sequence, tables))
    with pytest.raises(CorruptionError, match="counter"):
        KV.open(tmp_path, Config(background=False))


def test_a_file_numbered_past_the_u64_range_is_left_alone(tmp_path: pathlib.Path) -> None:
    # A stray "<20+ digits>.sst" used to raise next_file past 2**64 and fail the open's meta write with
    # struct.error; no kvstore file has such a number, so it is an unknown file now.
    with KV.open(tmp_path, Config(background=False)) as kv:
        kv.set(b"k", b"v")
    stray = tmp_path / ("9" * 20 + ".sst")
    stray.write_bytes(b"not ours")
    with KV.open(tmp_path, Config(background=False)) as kv:
        assert kv.get(b"k") == b"v"
        kv.flush()
        assert all(t.file_number <= record.MAX_COUNTER for t in kv.stats().tables)
    assert stray.read_bytes() == b"not ours"


def test_a_table_with_entries_out_of_order_fails_a_merge_with_corruption_not_an_assertion() -> None:
    # A table whose checksums are good but whose entries are out of order (two keys of one block swapped)
    # used to reach TableWriter.add's assert during a merge: AssertionError, or with python -O a merged
    # table silently out of order.  TableReader.entries() now raises CorruptSSTableError.  Input kept as
    # fuzz/corpus/directory/regress-table-entries-out-of-order (flags 8: commit and merge after reading).
    data = (CORPUS / "directory" / "regress-table-entries-out-of-order").read_bytes()
    _check("directory")(data)
    fuzz_directory = importlib.import_module("fuzz_directory")
    from harness import unpack_files

    fs = fuzz_directory.make_fs(unpack_files(data[1:]), False)
    with KV.open(fuzz_directory.DIR, Config(background=False), fs=fs) as kv:
        assert any("out of order" in problem for problem in kv.check())
        with pytest.raises(CorruptSSTableError, match="out of order"):
            kv.compact(full=True)


def test_a_log_commit_holding_a_key_twice_fails_open_with_corruption_not_an_assertion() -> None:
    # A log whose checksums are good but one of whose commits (sequence 74) writes the key b"" twice used
    # to reach Memtable._put's assert during replay: AssertionError out of KV.open, or with python -O two
    # versions under one sequence.  record.decode_commit now refuses keys twice or out of order.  Input kept
    # as fuzz/corpus/directory/regress-wal-key-twice-in-a-commit (flags FIX: every checksum recomputed).
    data = (CORPUS / "directory" / "regress-wal-key-twice-in-a-commit").read_bytes()
    _check("directory")(data)
    fuzz_directory = importlib.import_module("fuzz_directory")
    from harness import unpack_files

    fs = fuzz_directory.make_fs(unpack_files(data[1:]), True)
    with pytest.raises(CorruptionError, match="twice") as info:
        KV.open(fuzz_directory.DIR, Config(background=False), fs=fs)
    assert (info.value.path, info.value.offset) == (f"{fuzz_directory.DIR}/000004.log", 629)
