"""The bloom filters of table files: the blocked filter that table format 2 writes, and the double-hashing
filter of format 1, still read (DESIGN.md, "Table file": "Bloom filter chunk, version 2" and "version 1").

A version-2 filter is ``nlines`` lines of 512 bits (one 64-byte cache line each).  A key's hash
``h = record.key_hash(key)`` (CRC32C) picks one line, ``h % nlines``, and a 512-bit mask with up to ``k``
bits set; the key may be in the table only when ``line & mask == mask``.  The mask depends on ``h`` and
``k`` alone, not on the table, so a get computes it once (``probe``) and each table then costs one
index and one AND.  The mask is the OR of two entries of lookup tables (``mask_tables``), indexed by the
top 13 and the low 13 bits of ``h``; the tables are built by a fixed formula and are part of the format.

Invariants:
  - no false negatives: a filter built from some hashes answers True for each of them;
  - a writer makes ``nlines`` odd, so ``h % nlines`` depends on every bit of ``h`` and is not correlated
    with the mask's windows (with ``nlines`` a power of two the line would be the low bits of ``h``, and
    every key of a line would share its low window);
  - ``mask_tables(k)`` depends only on ``k``: the same tables in every process and every version.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Iterable, Sequence

from kvstore import record
from kvstore.errors import CorruptSSTableError

__all__ = [
    "DEFAULT_PROBES", "LINE_BITS", "MAX_PROBES", "WINDOW_BITS", "BlockedBloom", "Bloom", "Probe", "build", "decode",
    "fmix32", "lines_for", "mask", "mask_tables", "num_probes", "probe", "v1_probes",
]

_MASK32 = 0xFFFFFFFF
#: Bits of one line.
LINE_BITS = 8 * record.BLOOM_LINE
#: Bits of each window of a key's hash: table A takes bits 19..31 (``h >> 19``), table B bits 0..12
#: (``h & 8191``).  CRC32C is mixed enough as it is: a multiplication first (by 0x9e3779b1) added half
#: again to the mask's time and measured no fewer false positives.
WINDOW_BITS = 13
_WINDOW = (1 << WINDOW_BITS) - 1
_SHIFT_A = 32 - WINDOW_BITS
#: The most bits a mask may have (``num_probes(64)``).
MAX_PROBES = 24

#: What a get computes once for every table: (h, k, mask).
Probe = tuple[int, int, int]


def num_probes(bits_per_key: int) -> int:
    """The bits a version-2 filter sets per key: round(0.6 * bits_per_key), in [1, 24] (6 at 10 bits per
    key, as RocksDB's cache-local filter chooses: below the ln 2 of an unblocked filter, because keys do
    not spread evenly over the lines)."""
    return max(1, min(MAX_PROBES, int(bits_per_key * 0.6 + 0.5)))


#: The probes of the default ``Config.bloom_bits_per_key`` (10): a get starts from these.
DEFAULT_PROBES = num_probes(10)


def lines_for(count: int, bits_per_key: int) -> int:
    """Lines of a filter of ``count`` keys: ceil(count * bits_per_key / 512), at least 1, made odd."""
    return max(1, -(-count * bits_per_key // LINE_BITS)) | 1


def fmix32(x: int) -> int:
    """MurmurHash3's 32-bit finalizer: every output bit depends on every input bit."""
    x ^= x >> 16
    x = (x * 0x85EBCA6B) & _MASK32
    x ^= x >> 13
    x = (x * 0xC2B2AE35) & _MASK32
    return x ^ (x >> 16)


def _fmix32_each(xs: Iterable[int]) -> list[int]:
    """``fmix32`` of each of ``xs``, with C builtins only."""
    rshift, xor, repeat = operator.rshift, operator.xor, itertools.repeat
    xs = list(xs)
    xs = list(map(_MASK32.__and__, map((0x85EBCA6B).__mul__, map(xor, xs, map(rshift, xs, repeat(16))))))
    xs = list(map(_MASK32.__and__, map((0xC2B2AE35).__mul__, map(xor, xs, map(rshift, xs, repeat(13))))))
    return list(map(xor, xs, map(rshift, xs, repeat(16))))


def _build_tables(k: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    tables = []
    entries = range(_WINDOW + 1)
    for t, bits in enumerate(((k + 1) // 2, k // 2)):
        masks = [0] * len(entries)
        for i in range(bits):
            seed = ((k * 2 + t) * 16 + i) << WINDOW_BITS
            positions = map(operator.rshift, _fmix32_each(map(seed.__or__, entries)), itertools.repeat(23))
            masks = list(map(operator.or_, masks, map(operator.lshift, itertools.repeat(1), positions)))
        tables.append(tuple(masks))
    return tables[0], tables[1]


Tables = tuple[tuple[int, ...], tuple[int, ...]]
# the lookup tables of each k (index k), built the first time that k is used (about 1.3 MB each)
_TABLES: list[Tables | None] = [None] * (MAX_PROBES + 1)


def mask_tables(k: int) -> Tables:
    """The two lookup tables of masks with ``k`` bits, A and B, 8192 entries each.  Entry j of table t
    (0 for A, 1 for B) sets bit ``fmix32(((2k + t) * 16 + i) * 8192 + j) >> 23`` for i = 0 .. s_t - 1,
    s_0 = ceil(k / 2), s_1 = floor(k / 2) (bits that coincide are set once).  Raises ``ValueError`` for
    a k outside [1, 24]."""
    if not 1 <= k <= MAX_PROBES:
        raise ValueError(f"a bloom filter has 1 to {MAX_PROBES} probes, not {k}")
    tables = _TABLES[k]
    if tables is None:  # two threads may both build them: the same tables, and either one is kept
        tables = _TABLES[k] = _build_tables(k)
    return tables


def mask(h: int, k: int) -> int:
    """The 512-bit mask of the key with hash ``h`` in a filter of ``k`` probes (k in [1, 24])."""
    tables = _TABLES[k]
    if tables is None:
        return _mask_before_tables(h, k)
    a, b = tables
    return a[h >> 19] | b[h & 8191]


def probe(h: int, k: int = DEFAULT_PROBES) -> Probe:
    """What every version-2 table needs to test the key with hash ``h``: (h, k, its mask for k); k in
    [1, 24]."""
    tables = _TABLES[k]
    if tables is None:
        return h, k, _mask_before_tables(h, k)
    a, b = tables
    return h, k, a[h >> 19] | b[h & 8191]


# probes of each k answered without the lookup tables (``_mask_before_tables``)
_DIRECT = [0] * (MAX_PROBES + 1)
#: probes a process answers by computing the mask before it builds the tables of that k (tens of
#: milliseconds): a process that only reads a few keys, or has just opened a database, does not wait for them
DIRECT_PROBES = 1024


def _mask_before_tables(h: int, k: int) -> int:
    """The mask ``mask_tables(k)`` would give, computed alone (about 5 us for k = 6) for the first
    ``DIRECT_PROBES`` probes of ``k``; then the tables are built."""
    if _DIRECT[k] >= DIRECT_PROBES:
        a, b = mask_tables(k)
        return a[h >> 19] | b[h & 8191]
    if not 1 <= k <= MAX_PROBES:
        raise ValueError(f"a bloom filter has 1 to {MAX_PROBES} probes, not {k}")
    _DIRECT[k] += 1
    m = 0
    for t, (j, bits) in enumerate(((h >> 19, (k + 1) // 2), (h & _WINDOW, k // 2))):
        for i in range(bits):
            m |= 1 << (fmix32((((k * 2 + t) * 16 + i) << WINDOW_BITS) | j) >> 23)
    return m


def build(hashes: Sequence[int], bits_per_key: int) -> bytes:
    """The payload of a version-2 filter of keys with these (distinct keys') hashes: the lines, then k
    and the kind.  Per key only C builtins, but for one OR into its line."""
    k = num_probes(bits_per_key)
    n = lines_for(len(hashes), bits_per_key)
    a, b = mask_tables(k)
    windows_a = map(operator.rshift, hashes, itertools.repeat(_SHIFT_A))
    masks = map(operator.or_, map(a.__getitem__, windows_a), map(b.__getitem__, map(_WINDOW.__and__, hashes)))
    lines = [0] * n
    for i, m in zip(map(n.__rmod__, hashes), masks):
        lines[i] |= m
    size = record.BLOOM_LINE
    return b"".join([line.to_bytes(size, "little") for line in lines]) + record.BLOOM_TRAILER.pack(
        k, record.BloomKind.BLOCKED)


class BlockedBloom:
    """A version-2 filter: ``lines`` (each a 512-bit int), ``k``.

    Raises ``CorruptSSTableError`` on construction when the payload is shorter than its trailer, its
    lines are not a whole positive number of 64-byte lines, or k is outside [1, 24].
    """

    __slots__ = ("lines", "k")

    def __init__(self, payload: bytes, path: str, offset: int) -> None:
        body = len(payload) - record.BLOOM_TRAILER.size
        size = record.BLOOM_LINE
        if body <= 0 or body % size:
            raise CorruptSSTableError(path, offset, f"bloom filter of {len(payload)} bytes is not whole lines"
                                      f" of {size} bytes and a {record.BLOOM_TRAILER.size}-byte trailer")
        k, _kind = record.BLOOM_TRAILER.unpack_from(payload, body)
        if not 1 <= k <= MAX_PROBES:
            raise CorruptSSTableError(path, offset, f"bloom filter with {k} probes (1 to {MAX_PROBES})")
        view = memoryview(payload)
        self.lines: tuple[int, ...] = tuple(int.from_bytes(view[i : i + size], "little") for i in range(0, body, size))
        self.k: int = k

    def may_contain(self, h: int) -> bool:
        """False only when the key with hash ``h`` is certainly absent."""
        m = mask(h, self.k)
        lines = self.lines
        return lines[h % len(lines)] & m == m


class Bloom:
    """A version-1 filter: a bit array probed by double hashing, followed by one byte, the probe count.

    Kept to read version-1 tables (and ``build`` to write the examples and tests of them).
    """

    __slots__ = ("_bits", "_nbits", "_k")

    def __init__(self, payload: bytes) -> None:
        self._bits = payload[:-1]
        self._nbits = len(self._bits) * 8
        self._k = payload[-1] if payload else 0

    @staticmethod
    def build(hashes: Iterable[int], count: int, bits_per_key: int) -> bytes:
        """The payload of a version-1 filter holding ``count`` keys with these hashes."""
        k = v1_probes(bits_per_key)
        nbits = max(64, count * bits_per_key)
        nbytes = (nbits + 7) // 8
        nbits = nbytes * 8
        bits = bytearray(nbytes)
        for h in hashes:
            delta = ((h >> 17) | (h << 15)) & _MASK32
            for _ in range(k):
                pos = h % nbits
                bits[pos >> 3] |= 1 << (pos & 7)
                h = (h + delta) & _MASK32
        bits.append(k)
        return bytes(bits)

    @property
    def k(self) -> int:
        """The probe count."""
        return self._k

    def bits_or_none(self) -> bytes | None:
        """The bit array, or None when this filter filters nothing (empty, or an unknown probe count)."""
        return None if self._nbits == 0 or self._k > 30 else self._bits

    def may_contain(self, h: int) -> bool:
        """False only when the key with hash ``h`` is certainly absent."""
        nbits = self._nbits
        if nbits == 0 or self._k > 30:
            return True  # an empty or unknown filter filters nothing
        bits = self._bits
        delta = ((h >> 17) | (h << 15)) & _MASK32
        for _ in range(self._k):
            pos = h % nbits
            if not bits[pos >> 3] & (1 << (pos & 7)):
                return False
            h = (h + delta) & _MASK32
        return True


def v1_probes(bits_per_key: int) -> int:
    """The probes of a version-1 filter for ``bits_per_key``: round(bits * ln 2), in [1, 30]."""
    return max(1, min(30, int(bits_per_key * 0.69 + 0.5)))


def decode(payload: bytes, version: int, path: str, offset: int) -> BlockedBloom | Bloom | None:
    """The filter in the bloom chunk payload of a table of format ``version``, or None when there is none
    to filter with (an empty payload, or a version-2 filter of a kind this code does not know).  Raises
    ``CorruptSSTableError`` for a damaged version-2 filter (a version-1 filter is never refused)."""
    if not payload:
        return None
    if version == 1:
        return Bloom(payload)
    if payload[-1] != record.BloomKind.BLOCKED:
        return None  # a later kind: filters nothing, so answers stay right
    return BlockedBloom(payload, path, offset)
