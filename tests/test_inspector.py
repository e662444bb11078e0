"""The file inspectors (kvstore.inspector): every part decoded, each problem named where it was found."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvstore import KV, Config, TableStats, record
from kvstore.fs import OSFileSystem
from kvstore.inspector import inspect_meta, inspect_sst, inspect_wal
from kvstore.wal import WalWriter

CONFIG = Config(background=False, sync=False, memtable_size=4096, block_size=256)


def _log(tmp_path: Path, commits: int) -> Path:
    path = tmp_path / "000007.log"
    wal = WalWriter.create(OSFileSystem(), str(tmp_path), str(path), 7)
    for seq in range(1, commits + 1):
        wal.append(seq, [(b"gone", None), (b"k%d" % seq, b"v")], sync=True)
    wal.close()
    return path


def test_inspect_wal_lists_every_commit_with_its_offsets(tmp_path: Path) -> None:
    tree = inspect_wal(str(_log(tmp_path, 3)))
    assert tree["problems"] == [] and tree["header"]["file_number"] == 7
    frames = tree["frames"]
    assert [f["sequence"] for f in frames] == [1, 2, 3]
    assert frames[0]["offset"] == record.FILE_HEADER.size
    assert [f["durable_offset"] for f in frames[1:]] == [f["offset"] for f in frames[1:]]  # each synced
    assert frames[0]["writes"] == [{"key": b"gone", "value": None, "kind": "delete"},
                                   {"key": b"k1", "value": b"v", "kind": "value"}]
    assert tree["valid_end"] == tree["size"]


def test_inspect_wal_shows_an_expiring_write_as_its_value_and_its_expiry(tmp_path: Path) -> None:
    path = tmp_path / "000007.log"
    wal = WalWriter.create(OSFileSystem(), str(tmp_path), str(path), 7)
    wal.append(1, [(b"k", record.Expiring.of(b"value", 1767225600.5)), (b"p", b"plain")], sync=True)
    wal.close()
    tree = inspect_wal(str(path))
    assert tree["problems"] == []
    assert tree["frames"][0]["writes"] == [{"key": b"k", "value": b"value", "kind": "value", "expires": 1767225600.5},
                                           {"key": b"p", "value": b"plain", "kind": "value"}]
    assert type(tree["frames"][0]["writes"][0]["value"]) is bytes  # the value's bytes, not the stored form


def test_inspect_wal_tells_corruption_before_the_durable_point_from_a_torn_tail(tmp_path: Path) -> None:
    path = _log(tmp_path, 3)
    tree = inspect_wal(str(path))
    second = tree["frames"][1]["offset"]
    data = bytearray(path.read_bytes())
    data[second + 12] ^= 0xFF  # inside frame 2, which frame 3 says was durable
    path.write_bytes(bytes(data))
    tree = inspect_wal(str(path))
    assert [f["sequence"] for f in tree["frames"]] == [1]
    assert tree["damage"]["offset"] == second and tree["damage"]["torn_tail"] is False
    assert "an open refuses it" in tree["problems"][0]


def test_inspect_wal_of_a_log_renamed_to_another_number_names_both(tmp_path: Path) -> None:
    path = _log(tmp_path, 1)
    renamed = path.rename(tmp_path / "000008.log")
    tree = inspect_wal(str(renamed))
    assert [f["sequence"] for f in tree["frames"]] == [1]  # decoded under the header's number
    assert any("header names file number 7, the name 8" in p for p in tree["problems"])


def test_inspect_sst_of_a_file_shorter_than_header_and_footer(tmp_path: Path) -> None:
    path = tmp_path / "000001.sst"
    path.write_bytes(b"KVST" + b"\x00" * 30)
    tree = inspect_sst(str(path))
    assert any("shorter than header and footer" in p for p in tree["problems"])


def test_inspect_sst_agrees_with_the_table_the_engine_wrote(tmp_path: Path) -> None:
    with KV.open(tmp_path / "db", CONFIG) as kv:
        for i in range(200):
            kv.set(b"k%03d" % i, b"v" * (i % 7))
        kv.compact(full=True)
        table = kv.stats().tables[0]
    tree = inspect_sst(str(tmp_path / "db" / table.name), entries=True)
    assert tree["problems"] == []
    props = tree["properties"]
    assert (props["entries"], props["smallest"], props["largest"]) == (table.entries, table.smallest, table.largest)
    keys = [e["key"] for b in tree["blocks"] for e in b["entries"]]
    assert keys == [b"k%03d" % i for i in range(200)]
    assert tree["blocks"][0]["offset"] == record.FILE_HEADER.size
    assert tree["footer"]["offset"] == table.bytes - record.FOOTER.size


class _Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_inspect_sst_shows_each_expiry_and_the_properties_count_of_them(tmp_path: Path) -> None:
    with KV.open(tmp_path / "db", CONFIG, clock=_Clock(1000.0)) as kv:
        kv.set(b"a", b"1", ttl=50)
        kv.set(b"b", b"2")
        kv.set(b"c", b"3", ttl=20.25)
        kv.flush()
        table = kv.stats().tables[0]
    tree = inspect_sst(str(tmp_path / "db" / table.name), entries=True)
    assert tree["problems"] == []
    assert (tree["properties"]["expiring"], tree["properties"]["earliest_expiry"]) == (2, 1020.25)
    entries = [e for b in tree["blocks"] for e in b["entries"]]
    assert [(e["key"], e["value"], e.get("expires")) for e in entries] == [
        (b"a", b"1", 1050.0), (b"b", b"2", None), (b"c", b"3", 1020.25)]


def _one_table(tmp_path: Path) -> TableStats:
    """A database in ``tmp_path / "db"`` of 200 keys merged into one table, and that table."""
    with KV.open(tmp_path / "db", CONFIG) as kv:
        for i in range(200):
            kv.set(b"k%03d" % i, b"v")
        kv.compact(full=True)
        table = kv.stats().tables[0]
    return table


def test_inspect_sst_shows_the_bloom_filter_of_each_table_version(tmp_path: Path) -> None:
    """Version 2: the blocked filter's lines and k; version 1 (tests/data/format_v1): its bits and probes."""
    table = _one_table(tmp_path)
    tree = inspect_sst(str(tmp_path / "db" / table.name))
    assert tree["problems"] == [] and tree["header"]["version"] == tree["footer"]["version"] == 4
    assert tree["bloom"] == {"kind": "blocked", "bits": 5 * 512, "probes": 6, "lines": 5}
    old = Path(__file__).parent / "data" / "format_v1"
    tree = inspect_sst(str(old / "000020.sst"))
    assert tree["problems"] == [] and tree["header"]["version"] == 1
    assert tree["bloom"] == {"kind": "double hashing", "bits": 3000, "probes": 7}
    assert inspect_sst(str(old / "000028.sst"))["bloom"] == {"kind": "none", "bits": 0, "probes": 0}


def test_inspect_sst_names_a_damaged_bloom_trailer_under_a_good_checksum(tmp_path: Path) -> None:
    table = _one_table(tmp_path)
    path = tmp_path / "db" / table.name
    data = bytearray(path.read_bytes())
    foot_at = len(data) - record.FOOTER.size
    _, (at, size), _ = record.decode_footer(bytes(data[foot_at:]), str(path), foot_at, table.file_number)
    payload = bytearray(data[at : at + size - 4])
    payload[-2] = 0  # k = 0, resealed: only a writer's bug could get here
    data[at : at + size] = record.seal_chunk(table.file_number, at, bytes(payload))
    path.write_bytes(bytes(data))
    tree = inspect_sst(str(path))
    assert any("0 probes" in p for p in tree["problems"]) and "bloom" not in tree


def test_inspect_meta_of_a_directory_without_slots_and_with_a_missing_table(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    tree = inspect_meta(str(tmp_path / "empty"))
    assert tree["newest"] is None and tree["problems"] == []
    with KV.open(tmp_path / "db", CONFIG) as kv:
        for i in range(300):
            kv.set(b"k%03d" % i, b"v")
        name = kv.stats().tables[0].name
    (tmp_path / "db" / name).unlink()
    tree = inspect_meta(str(tmp_path / "db"))
    assert any(f"{name}: table named by the meta is missing" in p for p in tree["problems"])


def test_inspect_meta_lists_only_the_files_an_open_would_touch(tmp_path: Path) -> None:
    with KV.open(tmp_path, CONFIG) as kv:
        kv.set(b"k", b"v")
    past = f"{record.MAX_COUNTER + 1}.sst"  # numbered past the meta's counters: not kvstore's, left alone
    for name in (past, "000999.sst", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    files = {f["name"]: f["role"] for f in inspect_meta(str(tmp_path))["files"]}
    assert files["000999.sst"] == "orphan table (a writable open deletes it)"
    assert past not in files and "notes.txt" not in files


@pytest.fixture(scope="module")
def table_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The bytes of a table holding 59 values and a delete, in a few blocks."""
    tmp_path = tmp_path_factory.mktemp("table")
    with KV.open(tmp_path / "db", CONFIG) as kv:
        for i in range(60):
            kv.set(b"k%03d" % i, b"v" * (i % 9))
        kv.delete(b"k010")
        kv.compact(full=True)
        name = kv.stats().tables[0].name
    return (tmp_path / "db" / name).read_bytes()


@given(data=st.data())
def test_inspect_sst_names_every_flipped_byte_and_never_raises(tmp_path_factory: pytest.TempPathFactory,
                                                              table_bytes: bytes, data: st.DataObject) -> None:
    tmp = tmp_path_factory.mktemp("flip")
    table = table_bytes
    damaged = bytearray(table)
    at = data.draw(st.integers(0, len(table) - 1))
    damaged[at] ^= data.draw(st.integers(1, 255))
    cut = data.draw(st.integers(0, len(table)))
    path = tmp / "000005.sst"
    path.write_bytes(bytes(damaged[:cut]) if cut < len(table) else bytes(damaged))
    tree = inspect_sst(str(path), entries=True)
    assert tree["problems"], f"byte {at} flipped (cut at {cut}) and nothing noticed"


@given(data=st.data())
def test_inspect_wal_never_raises_on_damage(tmp_path_factory: pytest.TempPathFactory, data: st.DataObject) -> None:
    tmp = tmp_path_factory.mktemp("wal")
    log = _log(tmp, 4).read_bytes()
    damaged = bytearray(log)
    at = data.draw(st.integers(0, len(log) - 1))
    damaged[at] ^= data.draw(st.integers(1, 255))
    path = tmp / "000007.log"
    path.write_bytes(bytes(damaged[: data.draw(st.integers(0, len(log)))]))
    tree = inspect_wal(str(path))
    assert tree["kind"] == "wal" and isinstance(tree["problems"], list)

