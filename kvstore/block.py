"""A table's data and index blocks: their encoder and ``BlockEntries``, the decoded view of one block.

A block payload is the keys and values back to back, then four per-entry
arrays (key lengths, value lengths, sequences, kinds) and the entry count
(DESIGN.md, "Table file", "Block payload"; the struct constants live in
``record``).  ``BlockEntries`` checks a payload once and decodes only what a
read asks for: a point read or a seek in a block of fixed-size entries
bisects the payload in place; a scan decodes every key and value at once.

Invariants:
  - a ``BlockEntries`` is immutable once built, apart from what it caches; threads may share one;
  - its payload is let go only after everything decoded from it is stored.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import operator
import struct
from collections.abc import Sequence

from kvstore.errors import CorruptionError, CorruptSSTableError
from kvstore.record import BLOCK_COUNT, BLOCK_ENTRY_ARRAYS, U64, Expiring, expiring

__all__ = ["BlockEntries", "decode_block", "encode_block"]


def encode_block(keys: Sequence[bytes], seqs: Sequence[int], values: Sequence[bytes | None],
                 klens: Sequence[int] | None = None, vlens: Sequence[int] | None = None,
                 expiring: bool = False) -> bytes:
    """A block payload: keys and values back to back, then the four per-entry arrays, then the count.

    ``klens`` and ``vlens`` are the key and value lengths (0 for a delete) when the caller has them;
    ``expiring``: some values may be ``Expiring`` (kind 3), which the others then are checked for."""
    n = len(keys)
    data: list[bytes | None] = [None] * (2 * n)
    data[0::2] = keys
    data[1::2] = values
    if klens is None:
        klens = list(map(len, keys))
    if expiring:
        vlens = [0 if value is None else len(value) for value in values]
        kinds = bytes(0 if value is None else 3 if type(value) is Expiring else 1 for value in values)
        if 0 in kinds:
            data = [part for part in data if part is not None]
    elif vlens is None or 0 in vlens:  # a length of 0: an empty value or a delete
        try:
            vlens = list(map(len, values))  # type: ignore[arg-type]
            kinds = b"\x01" * n
        except TypeError:  # deletes: no value bytes, kind 0
            vlens = [0 if value is None else len(value) for value in values]
            kinds = bytes(0 if value is None else 1 for value in values)
            data = [part for part in data if part is not None]
    else:
        kinds = b"\x01" * n
    data.append(_block_arrays(n).pack(*klens, *vlens, *seqs, kinds))
    data.append(BLOCK_COUNT.pack(n))
    return b"".join(data)  # type: ignore[arg-type]


@functools.lru_cache(maxsize=512)
def _block_arrays(n: int) -> struct.Struct:
    """key_len u16[n] | value_len u32[n] | seq u64[n] | kind u8[n], the kinds as one bytes object."""
    return struct.Struct(f"<{n}H{n}I{n}Q{n}s")


@functools.lru_cache(maxsize=512)
def _block_lengths(n: int) -> struct.Struct:
    """The first two arrays of ``_block_arrays(n)``: key_len u16[n] | value_len u32[n]."""
    return struct.Struct(f"<{n}H{n}I")


@functools.lru_cache(maxsize=512)
def _block_seqs(n: int) -> struct.Struct:
    """The third array of ``_block_arrays(n)``: seq u64[n]."""
    return struct.Struct(f"<{n}Q")


class _Layout:
    """Where the keys and values of a block with given length arrays lie: a struct that slices out every
    key, one that slices out every value, and each value's and each key's (start, end)."""

    __slots__ = ("size", "keys", "values", "spans", "key_spans")

    def __init__(self, klens: Sequence[int], vlens: Sequence[int]) -> None:
        self.keys = struct.Struct("<" + "".join(map("{}s{}x".format, klens, vlens)))
        self.values = struct.Struct("<" + "".join(map("{}x{}s".format, klens, vlens)))
        self.size = self.keys.size
        ends = list(itertools.accumulate(itertools.chain.from_iterable(zip(klens, vlens))))
        self.spans = tuple(zip(ends[0::2], ends[1::2]))
        self.key_spans = tuple(zip([0, *ends[1::2]], ends[0::2]))


class _Layouts:
    """Block layouts keyed by the bytes of a block's length arrays.  Blocks of fixed-size keys and values
    share a handful, so a layout is built only the second time its lengths are seen (a one-off costs no
    build) and at most ``limit`` are kept.  Shared by every thread without a lock: a layout depends on
    nothing but its lengths, so a race at worst builds one twice or forgets one."""

    __slots__ = ("_seen", "_layouts", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._seen: set[bytes] = set()
        self._layouts: dict[bytes, _Layout] = {}

    def get(self, lengths: bytes, n: int) -> _Layout | None:
        """The layout for these length arrays of ``n`` entries, or None while they are new, and always for
        a block of more than ``_LAYOUT_MAX`` entries (an index block, decoded whole once: its layout would
        take milliseconds to build for nothing)."""
        if n > _LAYOUT_MAX:
            return None
        found = self._layouts.get(lengths)
        if found is not None:
            return found
        if lengths not in self._seen:
            if len(self._seen) >= 4 * self.limit:
                self._seen.clear()
            self._seen.add(lengths)
            return None
        if len(self._layouts) >= self.limit:
            self._layouts.clear()
        fields = _block_lengths(n).unpack(lengths)
        found = self._layouts[lengths] = _Layout(fields[:n], fields[n:])
        return found


_LAYOUT_MAX = 1024  # entries; a data block of the default 4 KiB holds a few dozen
_LAYOUTS = _Layouts(64)


class BlockEntries:
    """A block payload, checked, decoded only as far as the reads that use it ask.

    A point read or a seek positions itself with ``find`` and takes a few
    entries with ``key_at``, ``seq`` and ``value``: in a block of a known
    layout (fixed-size keys and values, the common case) that bisects the
    payload in place and slices out just those entries.  ``keys``,
    ``seqs`` and ``values()`` decode every entry at once (a scan), after
    which the payload is let go.  Raises ``CorruptSSTableError`` on
    construction for everything ``decode_block`` rejects.  Threads may
    share one (the block cache does): whatever is decoded is stored before
    the payload goes, so a reader that finds the payload gone finds it.
    """

    __slots__ = ("count", "expiring", "fresh", "_keys", "_seqs", "_seqs_at", "_payload", "_kinds", "_layout",
                 "_lengths", "_values", "_ascending")

    def __init__(self, payload: bytes, path: str, offset: int, size: int | None = None) -> None:
        if size is None:  # else the payload is payload[:size], and the bytes after it are not looked at
            size = len(payload)
        if size < BLOCK_COUNT.size:
            raise CorruptSSTableError(path, offset, "block shorter than its entry count")
        (n,) = BLOCK_COUNT.unpack_from(payload, size - 4)
        data_end = size - 4 - BLOCK_ENTRY_ARRAYS * n
        if data_end < 0:
            raise CorruptSSTableError(path, offset, f"block claims {n} entries in {size} bytes")
        lengths_end = data_end + 6 * n
        layout = _LAYOUTS.get(payload[data_end:lengths_end], n)
        lens: tuple[int, ...] | None = None
        if layout is None or layout.size != data_end:
            lens = _block_lengths(n).unpack_from(payload, data_end)
            if sum(lens) != data_end:
                raise CorruptSSTableError(path, offset, "block lengths do not add up to its data")
        kinds = payload[lengths_end + 8 * n : lengths_end + 9 * n]
        expiring = False
        if kinds.count(1) != n:
            if lens is None:
                lens = _block_lengths(n).unpack_from(payload, data_end)
            for vlen, kind in zip(lens[n:], kinds):
                if kind != 1 and (kind != 0 or vlen != 0) and kind != 3:
                    raise CorruptSSTableError(path, offset, f"block entry of unknown kind {kind}")
            expiring = 3 in kinds
            if expiring:
                _check_expiries(payload, lens, kinds, path, offset)
        keys: Sequence[bytes] | None = None  # decoded when first asked for, where a layout finds entries in place
        if layout is None:
            assert lens is not None
            keys = []
            append = keys.append
            pos = 0
            for klen, vlen in zip(lens[:n], lens[n:]):
                end = pos + klen
                append(payload[pos:end])
                pos = end + vlen
        self.count = n
        """The number of entries."""
        self.expiring = expiring
        """Whether an entry's value expires (kind 3): the table reading it must say it holds such entries."""
        self.fresh = True
        """True until the block is read a second time (the cache clears it on a hit): a fresh block is read
        in place, a block read again is worth decoding."""
        self._keys = keys
        self._seqs: Sequence[int] | None = None  # decoded when first asked for: a read at a snapshot that sees
        self._seqs_at = lengths_end  # every version of the table never needs them
        self._payload: bytes | None = payload
        self._kinds = kinds
        self._layout = layout
        self._lengths = lens  # None when the layout has them
        self._values: Sequence[bytes | None] | None = None
        self._ascending: bool | None = None

    @property
    def keys(self) -> Sequence[bytes]:
        """Every entry's key, in order; decoded on the first call."""
        keys = self._keys
        if keys is None:
            payload = self._payload
            layout = self._layout
            if payload is None or layout is None:  # values() decoded them before it let the payload go
                keys = self._keys
                assert keys is not None
                return keys
            keys = self._keys = layout.keys.unpack_from(payload)
        return keys

    def decoded(self) -> bool:
        """Whether every key is decoded (``find`` is then a bisect in C)."""
        return self._keys is not None

    def find(self, key: bytes, after: bool = False) -> int:
        """The position of the first entry whose key is ``>= key`` (``> key`` with ``after``), as
        ``bisect`` finds it in ``keys``; in place in the payload while the block is fresh and its keys are
        not decoded (a block read again decodes its keys here, once)."""
        keys = self._keys
        payload = self._payload
        if keys is not None or payload is None or self._layout is None or not self.fresh:
            return (bisect.bisect_right if after else bisect.bisect_left)(self.keys, key)
        spans = self._layout.key_spans
        lo, hi = 0, len(spans)
        while lo < hi:
            mid = (lo + hi) >> 1
            start, end = spans[mid]
            probe = payload[start:end]
            if probe < key or (after and probe == key):
                lo = mid + 1
            else:
                hi = mid
        return lo

    def key_at(self, j: int) -> bytes:
        """The key of entry ``j``, sliced alone while the others are not decoded."""
        keys = self._keys
        if keys is not None:
            return keys[j]
        payload = self._payload
        layout = self._layout
        if payload is None or layout is None:
            return self.keys[j]
        start, end = layout.key_spans[j]
        return payload[start:end]

    def take(self, j: int, done: bytes | None, every: bool, snapshot: int, want: int,
             out: list[tuple[bytes, bytes | None]]) -> tuple[int, bytes | None]:
        """Append to ``out``, until it holds ``want`` rows, the newest version at or before ``snapshot`` of
        each key from entry ``j`` on, skipping the key ``done`` (taken before); ``every``: every version is
        at or before it.  Returns where it stopped and the last key taken.  Slices each entry alone from
        the payload while the keys are not decoded (a seek's few rows from a block it just read)."""
        payload = self._payload
        layout = self._layout
        n = self.count
        if payload is None or layout is None or self._keys is not None:
            keys, seqs, values = self.keys, self.seqs, self.values()
            while j < n and len(out) < want:
                key = keys[j]
                if key != done and (every or seqs[j] <= snapshot):
                    done = key
                    out.append((key, values[j]))
                j += 1
            return j, done
        key_spans, spans, kinds, seqs_at = layout.key_spans, layout.spans, self._kinds, self._seqs_at
        unpack = U64.unpack_from
        while j < n and len(out) < want:
            start, end = key_spans[j]
            key = payload[start:end]
            if key != done and (every or unpack(payload, seqs_at + 8 * j)[0] <= snapshot):
                done = key
                start, end = spans[j]
                kind = kinds[j]
                out.append((key, payload[start:end] if kind == 1 else None if kind == 0
                            else Expiring(payload[start:end])))
            j += 1
        return j, done

    @property
    def seqs(self) -> Sequence[int]:
        """Every entry's sequence, in order; decoded on the first call."""
        seqs = self._seqs
        if seqs is None:
            payload = self._payload
            if payload is None:  # values() decoded them before it let the payload go
                seqs = self._seqs
                assert seqs is not None
                return seqs
            seqs = self._seqs = _block_seqs(self.count).unpack_from(payload, self._seqs_at)
        return seqs

    def seq(self, j: int) -> int:
        """The sequence of entry ``j``, read alone while the others are not decoded (a point read)."""
        seqs = self._seqs
        if seqs is not None:
            return seqs[j]
        payload = self._payload
        if payload is None:
            return self.seqs[j]
        return int(U64.unpack_from(payload, self._seqs_at + 8 * j)[0])

    def value(self, j: int) -> bytes | None:
        """The value of entry ``j`` (None for a delete, an ``Expiring`` for a value that expires)."""
        values = self._values
        if values is not None:
            return values[j]
        kind = self._kinds[j]
        if kind == 0:
            return None
        payload = self._payload
        if payload is None:  # another thread decoded the values meanwhile
            return self.values()[j]
        layout = self._layout
        if layout is not None:
            start, end = layout.spans[j]
        else:
            lens = self._lengths
            assert lens is not None
            n = self.count
            start = sum(lens[: j + 1]) + sum(lens[n : n + j])
            end = start + lens[n + j]
        return payload[start:end] if kind == 1 else Expiring(payload[start:end])

    def values(self) -> Sequence[bytes | None]:
        """Every value, in order (None for a delete); decoded on the first call."""
        values = self._values
        if values is not None:
            return values
        payload = self._payload
        if payload is None:  # another thread decoded them meanwhile
            values = self._values
            assert values is not None
            return values
        found: Sequence[bytes | None]
        if self._layout is not None:
            found = self._layout.values.unpack_from(payload)
        else:
            lens = self._lengths
            assert lens is not None
            n = self.count
            found = []
            append = found.append
            pos = 0
            for klen, vlen in zip(lens[:n], lens[n:]):
                pos += klen
                append(payload[pos : pos + vlen])
                pos += vlen
        kinds = self._kinds
        if kinds.count(1) != len(kinds):
            found = [value if kind == 1 else None if kind == 0 else Expiring(value)
                     for value, kind in zip(found, kinds)]
        if self._seqs is None:  # the payload goes: the keys and sequences are decoded first
            self._seqs = _block_seqs(self.count).unpack_from(payload, self._seqs_at)
        if self._keys is None and self._layout is not None:
            self._keys = self._layout.keys.unpack_from(payload)
        self._values = found
        self._payload = None
        return found

    def ascending(self) -> bool:
        """Whether the keys strictly ascend (one version per key); computed on the first call."""
        ascending = self._ascending
        if ascending is None:
            keys = self.keys
            ascending = self._ascending = all(map(operator.lt, keys, itertools.islice(keys, 1, None)))
        return ascending


def _check_expiries(payload: bytes, lens: Sequence[int], kinds: bytes, path: str, offset: int) -> None:
    """Raise ``CorruptSSTableError`` when an expiring entry's value (kind 3) has no finite expiry."""
    n = len(kinds)
    pos = 0
    for klen, vlen, kind in zip(lens[:n], lens[n:], kinds):
        pos += klen
        if kind == 3:
            try:
                expiring(payload[pos : pos + vlen], path, offset)
            except CorruptionError as exc:
                raise CorruptSSTableError(path, offset, exc.reason) from exc
        pos += vlen


def decode_block(payload: bytes, path: str, offset: int,
                 size: int | None = None) -> tuple[list[bytes], list[int], list[bytes | None]]:
    """(keys, sequences, values) of a block payload (``payload[:size]``); a value of None is a delete."""
    entries = BlockEntries(payload, path, offset, size)
    return list(entries.keys), list(entries.seqs), list(entries.values())
