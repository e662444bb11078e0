"""Writing one table file: entries in, data blocks, index, bloom filter, properties and footer out.

The file's layout is drawn in DESIGN.md ("Table file"); ``sorted_file.TableReader`` reads it back.
Entries come in table order (key ascending, sequence descending), as
chunks of parallel lists (``add_chunk``) or one by one (``add``, ``add_all``);
whichever way they come, the same entries make the same bytes.  A chunk is
cut into blocks by prefix sums of the entries' sizes and a bisect per block,
so the work per entry is done by C builtins, not a Python loop.

Invariants:
  - a block is closed once the bytes charged to it (key + value + 15 per
    entry) reach ``block_size``, and before an entry that would take its
    chunk past a ``u32`` size; it holds at least one entry;
  - the pending block (``_pending``, ``_block_bytes``) never reaches
    ``block_size``;
  - counts, sequence range, key hashes and the expiring entries' count and earliest expiry cover every
    entry added; once one expiring entry is added, every later block is encoded with kinds checked.
"""

from __future__ import annotations

import array
import bisect
import itertools
import operator
from collections.abc import Iterable

from kvstore import bloom, rangedel, record
from kvstore.block import encode_block
from kvstore.fs import File

__all__ = ["TableInfo", "TableWriter"]

_WRITE_BUFFER = 256 << 10
# largest sum of entry bytes in one block: its chunk (plus count and CRC) must fit a u32 size
_MAX_BLOCK_BYTES = 0xFFFF_FFFF - record.BLOCK_COUNT.size - record.CHUNK_CRC.size
# entries per chunk that add_all gathers from an iterable of single entries
_ADD_ALL_CHUNK = 1024


class TableInfo:
    """What a finished table holds: its size, counts, sequence range and key range."""

    __slots__ = ("file_number", "size", "entries", "deletes", "min_seq", "max_seq", "smallest", "largest",
                 "ranges", "expiring", "expired")

    def __init__(self, file_number: int, size: int, entries: int, deletes: int, min_seq: int, max_seq: int,
                 smallest: bytes, largest: bytes, ranges: int = 0, expiring: int = 0, expired: int = 0) -> None:
        self.file_number = file_number
        self.size = size
        self.entries = entries
        self.deletes = deletes
        self.min_seq = min_seq
        self.max_seq = max_seq
        self.smallest = smallest
        self.largest = largest
        self.ranges = ranges  # pieces of range tombstones
        self.expiring = expiring  # entries that expire
        self.expired = expired  # expired entries the merge that wrote it dropped (set by the merge)


class TableWriter:
    """Writes one table file from entries given in (key ascending, sequence descending) order.

    The caller creates ``file`` and, after ``finish()``, syncs the file's
    directory; ``finish()`` fsyncs the file itself.
    """

    def __init__(self, file: File, file_number: int, block_size: int, bloom_bits_per_key: int) -> None:
        self._file = file
        self._number = file_number
        self._block_size = block_size
        self._bloom_bits = bloom_bits_per_key
        self._buf: list[bytes] = [record.encode_file_header(record.TABLE_MAGIC, file_number)]
        self._buffered = record.FILE_HEADER.size
        self._offset = record.FILE_HEADER.size  # file offset of the next chunk
        # the pending block: keys, sequences, values, key lengths, value lengths
        self._pending: tuple[list[bytes], list[int], list[bytes | None], list[int], list[int]] = ([], [], [], [], [])
        self._block_bytes = 0
        self._index_keys: list[bytes] = []
        self._index_seqs: list[int] = []
        self._index_values: list[bytes | None] = []
        self._hashes = array.array("I")
        self._last_key: bytes | None = None  # the last key added
        self._entries = 0
        self._deletes = 0
        self._min_seq = 0
        self._max_seq = 0
        self._smallest = b""
        self._expiring = 0  # expiring entries (record.Expiring values) added, and the earliest expiry among them
        self._earliest = 0.0

    @property
    def num_entries(self) -> int:
        """The number of entries added so far."""
        return self._entries

    @property
    def deletes(self) -> int:
        """The number of deletes added so far."""
        return self._deletes

    def add(self, key: bytes, seq: int, value: bytes | None) -> None:
        """Append one entry; entries must come in table order."""
        self.add_chunk([key], [seq], [value])

    def add_all(self, entries: Iterable[tuple[bytes, int, bytes | None]]) -> None:
        """Append every (key, sequence, value) of an ordered iterable, ``_ADD_ALL_CHUNK`` at a time."""
        it = iter(entries)
        while batch := list(itertools.islice(it, _ADD_ALL_CHUNK)):
            keys, seqs, values = zip(*batch)
            self.add_chunk(list(keys), list(seqs), list(values))

    def add_chunk(self, keys: list[bytes], seqs: list[int], values: list[bytes | None]) -> None:
        """Append entries given as parallel lists (a value None is a delete), in table order after every
        entry added before.  Counts, sequence range, key hashes and the order check are taken over the
        whole chunk; blocks are cut where the prefix sums of the entries' sizes cross ``block_size``."""
        n = len(keys)
        if not n:
            return
        klens = list(map(len, keys))
        try:
            vlens = list(map(len, values))  # type: ignore[arg-type]
            deletes = 0
        except TypeError:  # deletes: no value bytes
            vlens = [0 if value is None else len(value) for value in values]
            deletes = values.count(None)
        self._account(keys, seqs, deletes)
        if record.Expiring in set(map(type, values)):
            self._count_expiring(values)
        add = operator.add
        # cum[i]: the bytes charged to the chunk's first i entries
        cum = list(itertools.accumulate(map(add, map(add, klens, vlens), itertools.repeat(record.BLOCK_ENTRY_ARRAYS)),
                                        initial=0))
        block_size = self._block_size
        pending = self._pending
        held = self._block_bytes  # bytes of the pending entries, which open the block before this chunk's
        a = 0
        while a < n:  # a block holds the pending entries and this chunk's from a on
            base = cum[a] - held
            end = bisect.bisect_left(cum, base + block_size, a + 1)  # closes after entry end - 1 by size
            over = bisect.bisect_right(cum, base + _MAX_BLOCK_BYTES, a + 1)  # entry over - 1 passes the u32
            if over <= min(end, n):
                if over - 1 > a or pending[0]:
                    end = over - 1  # closed before that entry (only near-4-GiB values)
                elif a + 1 < n:
                    end = a + 1  # it fills an empty block alone: the next entry closes the block before it
            if end > n:
                break
            if pending[0]:
                pkeys, pseqs, pvalues, pklens, pvlens = pending
                self._finish_block(pkeys + keys[a:end], pseqs + seqs[a:end], pvalues + values[a:end],
                                   pklens + klens[a:end], pvlens + vlens[a:end])
                pending = self._pending = ([], [], [], [], [])
            else:
                self._finish_block(keys[a:end], seqs[a:end], values[a:end], klens[a:end], vlens[a:end])
            held = 0
            a = end
        if a < n:
            pkeys, pseqs, pvalues, pklens, pvlens = pending
            pkeys += keys[a:]
            pseqs += seqs[a:]
            pvalues += values[a:]
            pklens += klens[a:]
            pvlens += vlens[a:]
        self._block_bytes = held + cum[n] - cum[a]

    def _account(self, keys: list[bytes], seqs: list[int], deletes: int) -> None:
        """Check the order of a chunk and add it to the counts, the sequence range and the key hashes."""
        last = self._last_key
        assert last is None or keys[0] >= last, "keys out of order"
        assert all(map(operator.le, keys, itertools.islice(keys, 1, None))), "keys out of order"
        if last is None:
            self._smallest = keys[0]
        if self._bloom_bits:
            if all(map(operator.lt, keys, itertools.islice(keys, 1, None))):
                distinct: Iterable[bytes] = itertools.islice(keys, 1, None) if keys[0] == last else keys
            else:
                distinct = [k for k, prev in zip(keys, [last, *keys]) if k != prev]
            self._hashes.extend(record.key_hashes(distinct))
        self._entries += len(keys)
        self._deletes += deletes
        low = min(seqs)
        if not self._min_seq or low < self._min_seq:
            self._min_seq = low
        self._max_seq = max(self._max_seq, max(seqs))
        self._last_key = keys[-1]

    def _count_expiring(self, values: list[bytes | None]) -> None:
        """Add a chunk's expiring values to the count and the earliest expiry."""
        expiring = [value.expires for value in values if type(value) is record.Expiring]
        low = min(expiring)
        self._earliest = low if not self._expiring else min(self._earliest, low)
        self._expiring += len(expiring)

    def _finish_block(self, keys: list[bytes], seqs: list[int], values: list[bytes | None], klens: list[int],
                      vlens: list[int]) -> None:
        offset, size = self._emit(encode_block(keys, seqs, values, klens, vlens, self._expiring > 0))
        self._index_keys.append(keys[-1])
        self._index_seqs.append(seqs[-1])
        self._index_values.append(record.INDEX_VALUE.pack(offset, size))

    def _emit(self, payload: bytes) -> tuple[int, int]:
        offset = self._offset
        chunk = record.seal_chunk(self._number, offset, payload)
        self._buf.append(chunk)
        self._buffered += len(chunk)
        self._offset += len(chunk)
        if self._buffered >= _WRITE_BUFFER:
            self._file.append(b"".join(self._buf))
            self._buf = []
            self._buffered = 0
        return offset, len(chunk)

    def finish(self, fragments: rangedel.Fragments | None = None) -> TableInfo:
        """Write the index, bloom, range tombstones (``fragments``), properties and footer, fsync, and
        describe the table."""
        if self._pending[0]:
            self._finish_block(*self._pending)
            self._pending = ([], [], [], [], [])
        index = self._emit(encode_block(self._index_keys, self._index_seqs, self._index_values))
        bloom_payload = bloom.build(self._hashes, self._bloom_bits) if self._bloom_bits else b""
        filter_at = self._emit(bloom_payload)
        largest = self._last_key or b""
        ranges = (0, 0)
        if fragments:
            ranges = self._emit(rangedel.encode(fragments))
            seqs = [q for qs in fragments.seqs for q in qs]
            self._min_seq = min(seqs) if not self._min_seq else min(self._min_seq, *seqs)
            self._max_seq = max(self._max_seq, *seqs)
        props = self._emit(record.encode_props(self.num_entries, self.deletes, self._min_seq, self._max_seq,
                                               self._smallest, largest, ranges, (self._expiring, self._earliest)))
        self._buf.append(record.encode_footer(index, filter_at, props, self._number))
        self._file.append(b"".join(self._buf))
        self._buf = []
        self._file.fsync()
        size = self._offset + record.FOOTER.size
        return TableInfo(self._number, size, self.num_entries, self.deletes, self._min_seq, self._max_seq,
                         self._smallest, largest, len(fragments or ()), self._expiring)
