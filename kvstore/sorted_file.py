"""The SSTable: an immutable sorted file of versioned entries, its reader, bloom filter and block cache.

A table is a file header, data blocks, an index chunk, a bloom chunk, a
properties chunk and a fixed footer (DESIGN.md, "Table file").  Entries are
ordered by key ascending, then sequence descending; versions of one key may
span blocks.  Every chunk's CRC32C covers the file number and the chunk's
offset too, so a block read from the wrong place never checks out.  Only the
sparse index (one last-key per block) and the bloom filter live in memory;
blocks are read on demand through a shared LRU ``BlockCache``.  The table
format version (2; 1 is still read) says which bloom filter the table holds
(``kvstore.bloom``): a get tests a version-2 table with one line and one AND.
Tables are written by ``table_writer.TableWriter``.

Invariants:
  - index keys ascend and each is the last key of its block;
  - ``smallest``/``largest`` are the first and last keys of the file;
  - a reader's file descriptor stays open until ``close()``.
"""

from __future__ import annotations

import bisect
import itertools
import operator
import threading
from collections.abc import Iterator
from typing import cast

from kvstore import bloom, rangedel, record
from kvstore.block import BlockEntries, decode_block
from kvstore.cache import BlockCache
from kvstore.chunks import chunks_of
from kvstore.errors import CorruptionError, CorruptSSTableError, UnsupportedFormatError
from kvstore.fs import FileSystem

__all__ = ["NO_READS", "BlockCache", "TableReader", "WouldRead"]

#: A data block as the cache holds it: keys and sequences decoded, values sliced out on demand.
Block = BlockEntries
_MASK = 0xFFFFFFFF
# rows a scan takes from a table at first (a seek reads a few), then at a time
_FIRST_CHUNK = 12
_CHUNK = 256


#: What a cached block is charged per entry beside its encoded bytes: the Python objects of its decoded
#: key, sequence and value and their list slots (a 4 KiB block of 100-byte values takes about 1.7 times
#: its size once decoded), so that ``Config.cache_size`` bounds the cache's memory, not its bytes on disk.
DECODED_ENTRY_BYTES = 96

#: Per thread: ``cached_only`` True makes a block the cache does not hold raise ``WouldRead`` instead of
#: being read (the asyncio API's reads try the loop's thread this way before going to a thread).
NO_READS = threading.local()


class WouldRead(Exception):
    """A read under ``NO_READS.cached_only`` needs a block the cache does not hold."""


class TableReader:
    """Reads one table: point lookups through bloom and index, iteration in both directions.

    Raises ``CorruptSSTableError`` (a ``CorruptionError`` with path and
    offset) when the footer, index, bloom, properties or a block is damaged,
    and ``UnsupportedFormatError`` for a newer format version.
    """

    def __init__(self, fs: FileSystem, path: str, file_number: int, cache: BlockCache) -> None:
        self.path = path
        self.file_number = file_number
        self._cache = cache
        self._file = fs.open(path)
        try:
            self._load()
        except BaseException:
            self._file.close()
            raise

    def _load(self) -> None:
        path = self.path
        size = self._file.size()
        self.size = size
        if size < record.FILE_HEADER.size + record.FOOTER.size:
            raise CorruptSSTableError(path, 0, f"table of {size} bytes is shorter than header and footer")
        try:
            version = record.decode_file_header(self._file.pread(record.FILE_HEADER.size, 0), path,
                                                record.TABLE_MAGIC, self.file_number)
        except UnsupportedFormatError:
            raise
        except CorruptionError as exc:
            raise CorruptSSTableError(path, exc.offset, exc.reason) from exc
        #: the table's format version: 1 (the double-hashing bloom filter), 2 (the blocked one), 3 (range
        #: tombstones), 4 (expiring entries)
        self.version = version
        foot_at = size - record.FOOTER.size
        index, filter_at, props = record.decode_footer(self._file.pread(record.FOOTER.size, foot_at), path,
                                                       foot_at, self.file_number, version)
        lo = record.FILE_HEADER.size
        for name, (off, sz) in (("index", index), ("bloom", filter_at), ("properties", props)):
            if off < lo or sz < 4 or off + sz > foot_at:
                raise CorruptSSTableError(path, foot_at, f"footer places the {name} outside the file")
        ikeys, iseqs, ivalues = decode_block(self._chunk(*index), path, index[0])
        self._index_keys = ikeys
        del iseqs
        if not self._index_in_order(ivalues, lo, index[0]):
            self._check_index(ivalues, lo, index[0])  # raises, naming the first entry out of order
        self._load_bloom(version, filter_at)
        (self.num_entries, self.deletes, self.min_seq, self.max_seq, self.smallest, self.largest,
         ranges, (self.expiring, self.earliest)) = record.decode_props(self._chunk(*props), path, props[0], version)
        #: ``expiring``: how many entries expire (each an ``record.Expiring`` value), ``earliest``: the
        #: earliest expiry among them; what reads test before they look at expiries
        if self._index_keys and self._index_keys[-1] != self.largest:
            raise CorruptSSTableError(path, props[0], "properties disagree with the index on the largest key")
        self._load_ranges(ranges, lo, foot_at)

    def _load_ranges(self, ranges: tuple[int, int], lo: int, foot_at: int) -> None:
        """The range tombstone section (version 3), and the key bounds of everything the table holds."""
        path = self.path
        #: the table's range tombstones, as fragments (empty when it has none)
        self.fragments = rangedel.Fragments([], [], [])
        if ranges != (0, 0):
            off, sz = ranges
            if off < lo or sz < 4 or off + sz > foot_at:
                raise CorruptSSTableError(path, foot_at, "properties place the range tombstones outside the file")
            self.fragments = rangedel.decode(self._chunk(off, sz), path, off)
            if not self.fragments:
                raise CorruptSSTableError(path, off, "range tombstone section holds no tombstone")
        #: the lowest and highest key the table speaks for: its entries' and its range tombstones' (an end
        #: is excluded, so ``hi`` is conservative); what sorted runs and scans place the table by
        self.lo, self.hi = self.smallest, self.largest
        #: whether the table holds range tombstones (what a get tests before it looks at them)
        self.ranged = bool(self.fragments)
        span = self.fragments.span()
        if span is not None:
            self.lo = span[0] if not self.num_entries else min(self.smallest, span[0])
            self.hi = span[1] if not self.num_entries else max(self.largest, span[1])

    def _index_in_order(self, ivalues: list[bytes | None], lo: int, index_at: int) -> bool:
        """Unpack the index's (offset, size) pairs at once, in C; True when they are whole pairs that
        tile the data blocks from ``lo`` to ``index_at`` in order (``_check_index`` says what is wrong
        otherwise)."""
        width = record.INDEX_VALUE.size
        if not ivalues or None in ivalues:
            return False
        pairs = cast("list[bytes]", ivalues)
        if set(map(len, pairs)) != {width}:
            return False
        offsets, sizes = map(list, zip(*record.INDEX_VALUE.iter_unpack(b"".join(pairs))))
        ends = list(map(operator.add, offsets, sizes))
        if offsets[0] != lo or offsets[1:] != ends[:-1] or min(sizes) < 8 or ends[-1] != index_at:
            return False
        self._offsets, self._sizes = offsets, sizes
        return True

    def _check_index(self, ivalues: list[bytes | None], lo: int, index_at: int) -> None:
        """Read the index's (offset, size) pairs one by one, raising ``CorruptSSTableError`` at the first
        that is not a pair or not the next block."""
        path = self.path
        self._offsets = []
        self._sizes = []
        prev_end = lo
        for value in ivalues:
            if value is None or len(value) != record.INDEX_VALUE.size:
                raise CorruptSSTableError(path, index_at, "index entry is not an (offset, size) pair")
            off, sz = record.INDEX_VALUE.unpack(value)
            if off != prev_end or sz < 8:
                raise CorruptSSTableError(path, index_at, f"index points at block ({off}, {sz}) out of sequence")
            prev_end = off + sz
            self._offsets.append(off)
            self._sizes.append(sz)
        if prev_end != index_at:
            raise CorruptSSTableError(path, index_at, "index does not cover the data blocks")

    def _load_bloom(self, version: int, filter_at: tuple[int, int]) -> None:
        path = self.path
        # checked even when empty (bloom_bits_per_key=0): every byte is
        self._bloom = bloom.decode(self._chunk(*filter_at), version, path, filter_at[0])
        # the filter's fields, probed inline by get(); None when there is nothing to filter with
        lines = self._bloom.lines if isinstance(self._bloom, bloom.BlockedBloom) else None
        self._lines = lines  # version 2: one 512-bit int per line
        self._nlines = len(lines) if lines is not None else 0
        #: the probes of this table's version-2 filter; for any other table, the default (what a get
        #: computes its probe for, when this is the newest table)
        self.bloom_k = self._bloom.k if isinstance(self._bloom, bloom.BlockedBloom) else bloom.DEFAULT_PROBES
        v1 = self._bloom if isinstance(self._bloom, bloom.Bloom) else None
        self._bloom_bits = v1.bits_or_none() if v1 is not None else None  # version 1
        self._bloom_nbits = len(self._bloom_bits or b"") * 8
        self._bloom_probes = range(v1.k if v1 is not None else 0)

    def _chunk(self, offset: int, size: int) -> bytes:
        data, end = self._read_chunk(offset, size)
        return data[:end]

    def _read_chunk(self, offset: int, size: int) -> tuple[bytes, int]:
        """The chunk of ``size`` bytes at ``offset`` as read, its CRC checked in place, and where its
        payload ends (the CRC's 4 bytes stay behind it: no copy of the payload)."""
        data = self._file.pread(size, offset)
        if len(data) != size:
            raise CorruptSSTableError(self.path, offset, f"chunk of {size} bytes runs past the end of the file")
        try:
            return data, record.check_chunk(data, self.path, self.file_number, offset)
        except CorruptSSTableError:
            raise
        except CorruptionError as exc:
            raise CorruptSSTableError(exc.path, exc.offset, exc.reason) from exc

    @property
    def blocks(self) -> int:
        """The number of data blocks."""
        return len(self._offsets)

    # what a lookup trace reads (``trace``), beside ``get``

    def has_filter(self) -> bool:
        """Whether ``get`` probes a bloom filter of this table."""
        return self._lines is not None or self._bloom_bits is not None

    def index_keys(self) -> list[bytes]:
        """The last key of each data block, ascending."""
        return self._index_keys

    def block_place(self, i: int) -> tuple[int, int]:
        """(offset, size) of data block ``i`` in the file."""
        return self._offsets[i], self._sizes[i]

    def cached(self, i: int) -> bool:
        """Whether the block cache holds data block ``i`` now (asked without counting a hit or a miss)."""
        return self._cache.holds((self.file_number, self._offsets[i]))

    def block(self, i: int) -> Block:
        """Data block ``i`` decoded, through the cache."""
        offset = self._offsets[i]
        cache_key = (self.file_number, offset)
        cache = self._cache
        hit = cache.get(cache_key)
        if hit is not None:
            hit.fresh = False
            return hit
        if getattr(NO_READS, "cached_only", False):
            with cache._lock:
                cache.misses -= 1  # counted when the read is made
            raise WouldRead
        data, end = self._read_chunk(offset, self._sizes[i])
        block = BlockEntries(data, self.path, offset, end)
        if block.expiring and not self.expiring:  # reads would take its stored form for the value
            raise CorruptSSTableError(self.path, offset, "block holds expiring entries its table's properties "
                                                         "do not count")
        self._cache.put(cache_key, block, self._sizes[i] + DECODED_ENTRY_BYTES * block.count)
        return block

    def may_contain(self, key_hash: int) -> bool:
        """False only when no version of the key with this hash is in the table."""
        return self._bloom is None or self._bloom.may_contain(key_hash)

    def get(self, key: bytes, snapshot: int, probe: bloom.Probe | None = None) -> tuple[int, bytes | None] | None:
        """The newest version of ``key`` at or before ``snapshot``, or None.  ``probe`` is
        ``bloom.probe(record.key_hash(key), k)``, computed once for every table a get passes (by default
        here).  Reads at most one block (more only when the key's versions span blocks)."""
        lines = self._lines
        if lines is not None:  # version 2: one line, one AND (BlockedBloom.may_contain, inline)
            if probe is None:
                probe = bloom.probe(record.key_hash(key), self.bloom_k)
            h, k, mask = probe
            if k != self.bloom_k:
                mask = bloom.mask(h, self.bloom_k)
            if lines[h % self._nlines] & mask != mask:
                self._cache.bloom_negatives += 1
                return None
        elif self._bloom_bits is not None:  # version 1: Bloom.may_contain, inline
            bits = self._bloom_bits
            h = record.key_hash(key) if probe is None else probe[0]
            nbits = self._bloom_nbits
            delta = ((h >> 17) | (h << 15)) & _MASK
            for _ in self._bloom_probes:
                pos = h % nbits
                if not bits[pos >> 3] & (1 << (pos & 7)):
                    self._cache.bloom_negatives += 1
                    return None
                h = (h + delta) & _MASK
        index_keys = self._index_keys
        i = first = bisect.bisect_left(index_keys, key)
        nblocks = len(index_keys)
        while i < nblocks:
            block = self.block(i)
            j = at = block.find(key)
            n = block.count
            while j < n and block.key_at(j) == key:
                seq = block.seq(j)
                if seq <= snapshot:
                    return seq, block.value(j)
                j += 1
            if j < n or index_keys[i] != key:
                if j == at and i == first and (lines is not None or self._bloom_bits is not None):
                    self._cache.bloom_false_positives += 1  # the filter passed a key the table lacks
                return None
            i += 1
        if i == first and (lines is not None or self._bloom_bits is not None):
            self._cache.bloom_false_positives += 1
        return None

    def items(self, start: bytes | None, snapshot: int, reverse: bool = False,
              inclusive: bool = True) -> Iterator[tuple[bytes, bytes | None]]:
        """(key, value) of the newest version at or before ``snapshot`` of each key, deletes included;
        bounds as in ``Memtable.items``."""
        if not reverse:
            return self._forward(start, snapshot, inclusive)
        return self._backward(start, snapshot, inclusive)

    def chunks(self, start: bytes | None, snapshot: int, reverse: bool = False, inclusive: bool = True,
               first: int = _FIRST_CHUNK) -> Iterator[list[tuple[bytes, bytes | None]]]:
        """What ``items`` yields, in ascending chunks for ``merge.merge_chunks``: ``first`` rows (a seek
        reads a few), then four times as many each time, up to ``_CHUNK``."""
        if reverse:
            return chunks_of(self._backward(start, snapshot, inclusive), True, first, _CHUNK)
        return self._forward_chunks(start, snapshot, inclusive, first)

    def _forward_chunks(self, start: bytes | None, snapshot: int, inclusive: bool,
                        want: int) -> Iterator[list[tuple[bytes, bytes | None]]]:
        index_keys = self._index_keys
        if start is None:
            first, j = 0, 0
        else:
            first, j = bisect.bisect_left(index_keys, start), -1
        done = None if inclusive else start  # the key last taken: its older versions are skipped
        every = snapshot >= self.max_seq  # every version is visible: a block of distinct keys is taken whole
        block = self.block
        out: list[tuple[bytes, bytes | None]] = []
        lead = start is not None  # a seek: its first rows are taken one by one from a block not yet decoded
        for b in range(first, len(index_keys)):
            entries = block(b)
            n = entries.count
            if j < 0:
                assert start is not None
                j = entries.find(start, after=not inclusive)
            if lead:
                lead = False
                if entries.fresh and not entries.decoded():
                    j, done = entries.take(j, done, every, snapshot, want, out)
                    if len(out) >= want:
                        yield out
                        out = []
                        want = min(_CHUNK, want * 4)
                    if j >= n:
                        j = 0
                        continue
            keys, values = entries.keys, entries.values()
            if every and entries.ascending():
                if j < n and keys[j] == done:
                    j += 1  # older versions of the key the previous block ended with
                while j < n:  # slices of distinct keys, each up to the chunk's size
                    end = min(n, j + want - len(out))
                    out.extend(zip(keys[j:end], values[j:end]))
                    j = end
                    if len(out) >= want:
                        yield out
                        out = []
                        want = min(_CHUNK, want * 4)
                if n:
                    done = keys[-1]
            else:
                seqs = entries.seqs
                for k in range(j, n):
                    key = keys[k]
                    if key == done or seqs[k] > snapshot:
                        continue
                    done = key
                    out.append((key, values[k]))
                    if len(out) >= want:
                        yield out
                        out = []
                        want = min(_CHUNK, want * 4)
            j = 0
        if out:
            yield out

    def _forward(self, start: bytes | None, snapshot: int, inclusive: bool) -> Iterator[tuple[bytes, bytes | None]]:
        if start is None:
            i, j = 0, 0
        else:
            i = bisect.bisect_left(self._index_keys, start)
            j = -1
        done = None if inclusive else start  # an excluded start's versions may run on into later blocks
        every = snapshot >= self.max_seq  # every version is visible: a block of distinct keys is taken whole
        block = self.block
        # a seek: the first block's rows are taken one by one, values sliced as they go (a seek reads a few
        # rows from each table: decoding the block's values and taking it whole costs more than it saves)
        lead = start is not None
        for b in range(i, len(self._index_keys)):
            entries = block(b)
            keys, seqs = entries.keys, entries.seqs
            if j < 0:
                assert start is not None
                j = bisect.bisect_left(keys, start) if inclusive else bisect.bisect_right(keys, start)
            if lead:
                lead = False
                value = entries.value
                for k in range(j, len(keys)):
                    key = keys[k]
                    if key == done or seqs[k] > snapshot:
                        continue
                    done = key
                    yield key, value(k)
                j = 0
                continue
            values = entries.values()
            if every and keys and entries.ascending():
                if j < len(keys) and keys[j] == done:
                    j += 1  # older versions of the key the previous block ended with
                if j:
                    yield from zip(itertools.islice(keys, j, None), itertools.islice(values, j, None))
                else:
                    yield from zip(keys, values)
                done = keys[-1]
            else:
                for k in range(j, len(keys)):
                    key = keys[k]
                    if key == done or seqs[k] > snapshot:
                        continue
                    done = key
                    yield key, values[k]
            j = 0

    def _backward(self, start: bytes | None, snapshot: int, inclusive: bool) -> Iterator[tuple[bytes, bytes | None]]:
        nblocks = len(self._index_keys)
        if start is None:
            b = nblocks - 1
            j = None
        else:
            # inclusive: the first block whose last key is past start (versions of start may run into it);
            # exclusive: the first block whose last key reaches start (every block before it is below start)
            find = bisect.bisect_right if inclusive else bisect.bisect_left
            b = min(find(self._index_keys, start), nblocks - 1)
            j = -1
        cur: bytes | None = None
        found = False
        cand: bytes | None = None
        every = snapshot >= self.max_seq  # every version is visible: a block of distinct keys is taken whole
        index_keys = self._index_keys
        block = self.block
        while b >= 0:
            entries = block(b)
            keys, seqs, values = entries.keys, entries.seqs, entries.values()
            if j is None:
                k = len(keys) - 1
            else:
                assert start is not None
                k = (bisect.bisect_right(keys, start) if inclusive else bisect.bisect_left(keys, start)) - 1
            # whole when no version of its keys is elsewhere: not in the block before (whose last key is
            # index_keys[b - 1]) nor pending from the block after (cur)
            if (every and k >= 0 and entries.ascending() and (b == 0 or index_keys[b - 1] != keys[0])
                    and cur != keys[k]):
                if found:
                    yield cur, cand  # type: ignore[misc]
                    found = False
                cur = None
                if k == len(keys) - 1:
                    yield from zip(reversed(keys), reversed(values))
                else:
                    yield from zip(reversed(keys[: k + 1]), reversed(values[: k + 1]))
                b -= 1
                j = None
                continue
            while k >= 0:
                key = keys[k]
                if key != cur:
                    if found:
                        yield cur, cand  # type: ignore[misc]
                    cur = key
                    found = False
                if seqs[k] <= snapshot:
                    cand = values[k]
                    found = True
                k -= 1
            b -= 1
            j = None
        if found:
            yield cur, cand  # type: ignore[misc]

    def entries(self) -> Iterator[tuple[bytes, int, bytes | None]]:
        """Every entry as (key, sequence, value) in table order; blocks are read past the cache
        (a merge reads each block once and would only evict what readers use).  Raises
        ``CorruptSSTableError`` on entries out of order, which a merge must never copy on."""
        for keys, seqs, values in self._blocks_in_order():
            yield from zip(keys, seqs, values)

    def entry_chunks(self, size: int = 256) -> Iterator[tuple[list[bytes], list[int], list[bytes | None]]]:
        """Every entry in table order as (keys, sequences, values) lists of whole blocks, about ``size``
        entries or more each; the versions of one key always come in one chunk (the merge's
        ``merge.merge_entry_chunks`` needs it).  Read and checked as ``entries()``."""
        keys: list[bytes] = []
        seqs: list[int] = []
        values: list[bytes | None] = []
        for bkeys, bseqs, bvalues in self._blocks_in_order():
            keys += bkeys
            seqs += bseqs
            values += bvalues
            if len(keys) >= size:
                cut = bisect.bisect_left(keys, keys[-1])  # the last key's versions may go on in the next block
                if cut:
                    yield keys[:cut], seqs[:cut], values[:cut]
                    keys, seqs, values = keys[cut:], seqs[cut:], values[cut:]
        if keys:
            yield keys, seqs, values

    def _blocks_in_order(self) -> Iterator[tuple[list[bytes], list[int], list[bytes | None]]]:
        """The (keys, sequences, values) of each non-empty block, read past the cache, order checked."""
        last_key: bytes | None = None
        last_seq = 0
        lt, islice = operator.lt, itertools.islice
        for b in range(len(self._index_keys)):
            offset = self._offsets[b]
            hit = self._cache.get((self.file_number, offset))
            if hit is not None:
                keys, seqs, values = list(hit.keys), list(hit.seqs), list(hit.values())
            else:
                data, end = self._read_chunk(offset, self._sizes[b])
                keys, seqs, values = decode_block(data, self.path, offset, end)
            if not keys:
                continue
            # in order: keys ascend, and the versions of one key have descending sequences
            if last_key is not None and (keys[0] < last_key or (keys[0] == last_key and seqs[0] >= last_seq)):
                raise CorruptSSTableError(self.path, offset, f"entries out of order at {keys[0]!r}")
            if not all(map(lt, keys, islice(keys, 1, None))):
                for key, prev, seq, prev_seq in zip(islice(keys, 1, None), keys, islice(seqs, 1, None), seqs):
                    if key < prev or (key == prev and seq >= prev_seq):
                        raise CorruptSSTableError(self.path, offset, f"entries out of order at {key!r}")
            last_key, last_seq = keys[-1], seqs[-1]
            yield keys, seqs, values

    def verify(self) -> list[str]:
        """Read every block past the cache and check checksums and order; problems found, as text."""
        problems: list[str] = []
        last: tuple[bytes, int] | None = None
        count = 0
        expiries: list[float] = []
        for b in range(len(self._offsets)):
            try:
                offset = self._offsets[b]
                data, end = self._read_chunk(offset, self._sizes[b])
                keys, seqs, values = decode_block(data, self.path, offset, end)
            except CorruptionError as exc:
                problems.append(str(exc))
                continue
            if not keys:
                problems.append(f"{self.path} at offset {offset}: empty block")
                continue
            if keys[-1] != self._index_keys[b]:
                problems.append(f"{self.path} at offset {offset}: index key differs from the block's last key")
            for key, seq in zip(keys, seqs):
                if last is not None and (key < last[0] or (key == last[0] and seq >= last[1])):
                    problems.append(f"{self.path} at offset {offset}: entries out of order at {key!r}")
                    break
                last = (key, seq)
            count += len(keys)
            expiries += [v.expires for v in values if type(v) is record.Expiring]
        if not problems and count != self.num_entries:
            problems.append(f"{self.path}: properties count {self.num_entries} entries, blocks hold {count}")
        if not problems and (len(expiries), min(expiries, default=0.0)) != (self.expiring, self.earliest):
            problems.append(f"{self.path}: properties count {self.expiring} expiring entries, the earliest at "
                            f"{self.earliest}; blocks hold {len(expiries)}, the earliest at "
                            f"{min(expiries, default=0.0)}")
        return problems

    def close(self) -> None:
        self._file.close()

