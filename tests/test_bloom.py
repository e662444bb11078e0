"""The bloom filters (kvstore/bloom.py): the blocked filter of table format 2 as DESIGN.md draws it ("Bloom
filter chunk, version 2"), its false-positive rate, its reader checks, and the version 1 filter still read.
"""

from __future__ import annotations

import math
import random

import pytest

from kvstore import bloom, record
from kvstore.errors import CorruptSSTableError

# ---------------------------------------------------------------- version 2: the blocked filter


def _reference_fmix32(x: int) -> int:
    x ^= x >> 16
    x = x * 0x85EBCA6B % 2**32
    x ^= x >> 13
    x = x * 0xC2B2AE35 % 2**32
    return x ^ (x >> 16)


def _reference_entry(k: int, t: int, j: int) -> int:
    """Entry j of lookup table t (0 = A, 1 = B) for k, as DESIGN.md describes it, one bit at a time."""
    bits = (k + 1) // 2 if t == 0 else k // 2
    mask = 0
    for i in range(bits):
        mask |= 1 << (_reference_fmix32(((2 * k + t) * 16 + i) * 8192 + j) >> 23)
    return mask


def _reference_blocked(hashes: list[int], bits_per_key: int) -> bytes:
    """The version 2 payload as DESIGN.md describes it, one key at a time."""
    k = max(1, min(24, int(0.6 * bits_per_key + 0.5)))
    nlines = max(1, math.ceil(len(hashes) * bits_per_key / 512)) | 1
    lines = [0] * nlines
    for h in hashes:
        lines[h % nlines] |= _reference_entry(k, 0, h >> 19) | _reference_entry(k, 1, h & 8191)
    return b"".join(line.to_bytes(64, "little") for line in lines) + bytes([k, 1])


def _filter(keys: list[bytes], bits: int = 10) -> bloom.BlockedBloom:
    return bloom.BlockedBloom(bloom.build(list(record.key_hashes(keys)), bits), "t", 0)


def test_fmix32_is_murmur3s_finalizer() -> None:
    assert bloom.fmix32(0) == 0
    assert bloom.fmix32(1) == 0x514E28B7  # MurmurHash3_x86_32's fmix32(1)
    for x in (1, 12345, 0xDEADBEEF, 0xFFFFFFFF):
        assert bloom.fmix32(x) == _reference_fmix32(x)


@pytest.mark.parametrize("k", [1, 2, 6, 7, 24], ids=lambda k: f"k{k}")
def test_mask_tables_follow_the_documented_formula(k: int) -> None:
    tables = bloom.mask_tables(k)
    assert [len(t) for t in tables] == [8192, 8192]
    for j in (0, 1, 2, 4095, 4096, 8190, 8191, *random.Random(k).sample(range(8192), 50)):
        for t in (0, 1):
            assert tables[t][j] == _reference_entry(k, t, j), (t, j)
    assert all(0 < bin(a | b).count("1") <= k for a, b in zip(*tables))


@pytest.mark.parametrize("k", [1, 2, 6, 7, 24], ids=lambda k: f"k{k}")
def test_masks_before_the_tables_are_built_are_the_tables_masks(k: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bloom, "_TABLES", [None] * (bloom.MAX_PROBES + 1))
    monkeypatch.setattr(bloom, "_DIRECT", [0] * (bloom.MAX_PROBES + 1))
    monkeypatch.setattr(bloom, "DIRECT_PROBES", 300)
    hashes = [record.key_hash(b"key%d" % i) for i in range(600)]
    early = [bloom.probe(h, k) for h in hashes[:150]] + [(h, k, bloom.mask(h, k)) for h in hashes[150:300]]
    assert bloom._TABLES[k] is None and bloom._DIRECT[k] == 300  # computed alone so far
    late = [bloom.probe(h, k) for h in hashes[300:]]
    tables = bloom._TABLES[k]
    assert tables is not None  # past DIRECT_PROBES the tables are built and used
    a, b = tables
    assert early + late == [(h, k, a[h >> 19] | b[h & 8191]) for h in hashes]


def test_mask_tables_refuse_a_probe_count_out_of_range() -> None:
    for k in (0, 25):
        with pytest.raises(ValueError):
            bloom.mask_tables(k)


@pytest.mark.parametrize("count", [0, 1, 5, 1000, (1 << 16) + 3], ids=lambda n: f"{n}keys")
@pytest.mark.parametrize("bits", [1, 3, 10, 64], ids=lambda b: f"{b}bits")
def test_blocked_build_sets_the_bits_the_design_describes(count: int, bits: int) -> None:
    hashes = [record.key_hash(b"key%d" % i) for i in range(count)]
    if count > 1000 and bits != 10:
        hashes = hashes[::7]  # the reference is slow: fewer keys, same shape
    assert bloom.build(hashes, bits) == _reference_blocked(hashes, bits)


def test_num_probes_is_six_at_ten_bits_and_stays_in_range() -> None:
    assert bloom.num_probes(10) == bloom.DEFAULT_PROBES == 6
    assert [bloom.num_probes(b) for b in (0, 1, 2, 3, 5, 8, 12, 16, 20, 40, 64)] == [1, 1, 1, 2, 3, 5, 7, 10, 12,
                                                                                   24, 24]


def test_lines_are_odd_and_hold_the_bits_asked_for() -> None:
    assert bloom.lines_for(0, 10) == 1 and bloom.lines_for(1, 10) == 1
    assert bloom.lines_for(52, 10) == 3  # 520 bits: 2 lines, made odd
    assert bloom.lines_for(100_000, 10) == 1955
    assert all(bloom.lines_for(n, b) % 2 == 1 and bloom.lines_for(n, b) * 512 >= n * b
               for n in range(0, 3000, 37) for b in (1, 7, 10, 64))


def test_probe_is_the_mask_of_the_hash_for_its_k() -> None:
    for i in range(200):
        h = record.key_hash(b"k%d" % i)
        for k in (1, 6, 11):
            assert bloom.probe(h, k) == (h, k, bloom.mask(h, k))
    assert bloom.probe(7) == bloom.probe(7, 6)


@pytest.mark.parametrize("bits", [1, 4, 10, 20, 64], ids=lambda b: f"{b}bits")
def test_blocked_filter_has_no_false_negatives(bits: int) -> None:
    keys = [b"present-%d" % i for i in range(20_000)] + [random.Random(bits).randbytes(12) for _ in range(2000)]
    f = _filter(keys, bits)
    assert f.k == bloom.num_probes(bits) and len(f.lines) == bloom.lines_for(len(keys), bits)
    assert all(f.may_contain(h) for h in record.key_hashes(keys))


def test_blocked_filter_false_positive_rate_at_10_bits_per_key_is_near_rocksdbs() -> None:
    """100,000 keys, probed with 100,000 absent keys of the same shape and 100,000 random ones: about 1.05%
    each (RocksDB's FastLocalBloom: about 0.95%).  Deterministic inputs; the bound is far above the rate's
    spread (about 0.03% for 100,000 probes)."""
    n = 100_000
    f = _filter([b"%016d" % i for i in range(n)])
    assert len(f.lines) == 1955
    rng = random.Random(1)
    for absent in ([b"%015d." % i for i in range(n)], [rng.randbytes(16) for _ in range(n)]):
        rate = sum(map(f.may_contain, record.key_hashes(absent))) / n
        assert 0.006 <= rate <= 0.0135, rate


def test_blocked_filter_false_positive_rate_falls_as_bits_grow() -> None:
    n = 20_000
    rates = []
    for bits in (2, 5, 10, 20):
        f = _filter([b"in%d" % i for i in range(n)], bits)
        rates.append(sum(map(f.may_contain, record.key_hashes(b"out%d" % i for i in range(n)))) / n)
    assert rates == sorted(rates, reverse=True) and rates[-1] < 0.001, rates


def test_blocked_filter_of_no_keys_is_one_empty_line_and_holds_nothing() -> None:
    payload = bloom.build([], 10)
    assert payload == bytes(64) + bytes([6, 1])
    f = bloom.BlockedBloom(payload, "t", 0)
    assert not any(f.may_contain(record.key_hash(b"k%d" % i)) for i in range(1000))


@pytest.mark.parametrize("payload", [
    b"\x01", bytes([6, 1]), bytes(63) + bytes([6, 1]), bytes(65) + bytes([6, 1]), bytes(64) + bytes([0, 1]),
    bytes(64) + bytes([25, 1]), bytes(128) + bytes([255, 1]),
], ids=["one-byte", "trailer-only", "short-line", "long-line", "k0", "k25", "k255"])
def test_blocked_filter_damaged_is_corrupt_sstable_error(payload: bytes) -> None:
    with pytest.raises(CorruptSSTableError) as info:
        bloom.decode(payload, 2, "000009.sst", 133)
    assert info.value.path == "000009.sst" and info.value.offset == 133


def test_decode_reads_by_version_and_kind() -> None:
    hashes = [record.key_hash(b"k%d" % i) for i in range(100)]
    assert bloom.decode(b"", 2, "t", 0) is None and bloom.decode(b"", 1, "t", 0) is None  # bloom_bits_per_key=0
    assert isinstance(bloom.decode(bloom.build(hashes, 10), 2, "t", 0), bloom.BlockedBloom)
    assert isinstance(bloom.decode(bloom.Bloom.build(hashes, 100, 10), 1, "t", 0), bloom.Bloom)
    assert bloom.decode(bytes(64) + bytes([6, 2]), 2, "t", 0) is None  # a later kind filters nothing
    assert bloom.decode(b"\x07", 1, "t", 0) is not None  # a version 1 filter is never refused


# ---------------------------------------------------------------- version 1: the double-hashing filter, still read


def _reference_v1(hashes: list[int], bits_per_key: int) -> bytes:
    """The version 1 filter as DESIGN.md describes it, one key and one probe at a time."""
    k = bloom.v1_probes(bits_per_key)
    nbits = (max(64, len(hashes) * bits_per_key) + 7) // 8 * 8
    bits = bytearray(nbits // 8)
    for h in hashes:
        delta = ((h >> 17) | (h << 15)) & 0xFFFFFFFF
        for _ in range(k):
            pos = h % nbits
            bits[pos >> 3] |= 1 << (pos & 7)
            h = (h + delta) & 0xFFFFFFFF
    return bytes(bits) + bytes([k])


@pytest.mark.parametrize("count", [0, 1, 5, 1000, (1 << 16) + 3], ids=lambda n: f"{n}keys")
@pytest.mark.parametrize("bits", [1, 10, 64], ids=lambda b: f"{b}bits")
def test_v1_build_sets_the_bits_the_design_describes(count: int, bits: int) -> None:
    hashes = [record.key_hash(b"key%d" % i) for i in range(count)]
    assert bloom.Bloom.build(hashes, count, bits) == _reference_v1(hashes, bits)
    assert bloom.Bloom.build(iter(hashes), count, bits) == _reference_v1(hashes, bits)


def test_v1_probe_count_is_bits_times_ln2() -> None:
    assert [bloom.v1_probes(b) for b in (10, 1, 0, 64)] == [7, 1, 1, 30]


def test_v1_false_positive_rate_is_near_theory_at_10_bits_per_key() -> None:
    n = 20_000
    present = [b"present-%d" % i for i in range(n)]
    absent = [b"absent-%d" % i for i in range(n)]
    v1 = bloom.Bloom(bloom.Bloom.build(record.key_hashes(present), n, 10))
    assert all(v1.may_contain(record.key_hash(k)) for k in present)  # no false negatives
    rate = sum(v1.may_contain(record.key_hash(k)) for k in absent) / n
    k = bloom.v1_probes(10)
    theory = (1 - math.exp(-k / 10)) ** k  # about 0.8%
    assert 0.003 <= rate <= 0.02, (rate, theory)


@pytest.mark.parametrize("bits", [2, 5, 20], ids=lambda b: f"{b}bits")
def test_v1_false_positive_rate_falls_as_bits_grow(bits: int) -> None:
    n = 5000
    v1 = bloom.Bloom(bloom.Bloom.build(record.key_hashes(b"in%d" % i for i in range(n)), n, bits))
    assert all(v1.may_contain(record.key_hash(b"in%d" % i)) for i in range(n))
    rate = sum(v1.may_contain(record.key_hash(b"out%d" % i)) for i in range(n)) / n
    k = bloom.v1_probes(bits)
    theory = (1 - math.exp(-k / bits)) ** k
    assert rate <= 2.5 * theory + 0.002, (rate, theory)


def test_v1_empty_or_unknown_filter_filters_nothing() -> None:
    assert bloom.Bloom(b"").may_contain(123)
    assert bloom.Bloom(b"\x00" * 8 + bytes([31])).may_contain(123)  # probe count past the known range
    assert bloom.Bloom(b"\x00" * 8 + bytes([31])).bits_or_none() is None
