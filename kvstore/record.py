"""Byte layouts shared by the WAL, the tables and the meta slots, and their codecs.

Every struct is little-endian, declared once here with its layout above it and
its size checked beneath.  Encoders return ``bytes``; decoders take the bytes
and the file's path (for the error) and raise ``CorruptionError`` (or
``UnsupportedFormatError``) on anything they cannot decode, never
``struct.error`` or ``IndexError``.  The formats are drawn byte by byte in
DESIGN.md ("On-disk formats"); tests/test_design_doc.py checks its hex examples
against these encoders.
"""

from __future__ import annotations

import enum
import functools
import itertools
import operator
import struct
from collections.abc import Iterable, Iterator, Sequence

import crc32c as _crc32c

from kvstore.errors import (
    BadChecksumError,
    CorruptionError,
    CorruptSSTableError,
    KeyOrValueTooLargeError,
    UnsupportedFormatError,
)

#: The format version this code writes and the newest it reads.
FORMAT_VERSION = 1

WAL_MAGIC = b"KVWL"
TABLE_MAGIC = b"KVST"
META_MAGIC = b"KVMT"


class Kind(enum.IntEnum):
    """What an entry is.  # ON-DISK: never renumber."""

    DELETE = 0
    VALUE = 1


class RecordType(enum.IntEnum):
    """Type byte of a WAL frame; 0 is reserved and never valid.  # ON-DISK: never renumber."""

    RESERVED = 0
    COMMIT = 1


def crc(data: bytes | bytearray | memoryview, value: int = 0) -> int:
    """CRC32C (Castagnoli) of ``data``, continuing from ``value``."""
    return _crc32c.crc32c(data, value)


# magic 4s | version u16 | reserved u16 (0) | file_number u64 | crc32c u32 of the 16 bytes before
FILE_HEADER = struct.Struct("<4sHHQI")
assert FILE_HEADER.size == 20

# crc32c u32 | length u32 | type u8; the crc covers log_number u64 | length u32 | type u8 | payload
WAL_FRAME = struct.Struct("<IIB")
assert WAL_FRAME.size == 9
# the 8 + 4 + 1 bytes the frame crc starts with
WAL_CRC_PREFIX = struct.Struct("<QIB")
assert WAL_CRC_PREFIX.size == 13

# commit unit: sequence u64 | durable_offset u64 | count u32
COMMIT_HEADER = struct.Struct("<QQI")
assert COMMIT_HEADER.size == 20
# one write of a commit unit: kind u8 | key_len u16 | value_len u32, then key, then value
WAL_ENTRY = struct.Struct("<BHI")
assert WAL_ENTRY.size == 7
# a commit unit's header and its only write, a VALUE, in one pack (the layouts above, back to back)
COMMIT_OF_ONE = struct.Struct("<QQIBHI")
assert COMMIT_OF_ONE.size == COMMIT_HEADER.size + WAL_ENTRY.size

# checked chunk trailer: crc32c u32 over file_number u64 | offset u64 | payload
CHUNK_CRC = struct.Struct("<I")
CHUNK_CRC_PREFIX = struct.Struct("<QQ")
assert CHUNK_CRC.size == 4 and CHUNK_CRC_PREFIX.size == 16

# block trailer inside the chunk payload: entry count u32
BLOCK_COUNT = struct.Struct("<I")
assert BLOCK_COUNT.size == 4
#: bytes of per-entry arrays in a block: key_len u16 + value_len u32 + sequence u64 + kind u8
BLOCK_ENTRY_ARRAYS = 15

# index entry value: block offset u64 | block size u32 (the block's chunk, crc included)
INDEX_VALUE = struct.Struct("<QI")
assert INDEX_VALUE.size == 12

# table properties: entries u64 | deletes u64 | min_seq u64 | max_seq u64 | smallest_len u16 | largest_len u16
PROPS = struct.Struct("<QQQQHH")
assert PROPS.size == 36

# table footer, the file's last 56 bytes:
# index_off u64 | index_size u32 | bloom_off u64 | bloom_size u32 | props_off u64 | props_size u32
# | file_number u64 | magic 4s | version u16 | reserved u16 | crc32c u32 of the 52 bytes before
FOOTER = struct.Struct("<QIQIQIQ4sHHI")
assert FOOTER.size == 56

# meta slot body after the file header: version u64 | next_file u64 | log_number u64 | last_sequence u64
# | table_count u32, then table_count x table_number u64, then crc32c u32 of every byte before it
META_BODY = struct.Struct("<QQQQI")
assert META_BODY.size == 36
U64 = struct.Struct("<Q")
assert U64.size == 8

#: Largest WAL frame payload accepted (u32 length field).
MAX_RECORD_PAYLOAD = 0xFFFF_FFFF
#: Largest meta version, file number or sequence a store opens with: half the u64 range, so that counting
#: on from any accepted value (the next version, file or commit) never overflows its u64 field.
MAX_COUNTER = (1 << 63) - 1


# ---------------------------------------------------------------- file header


def encode_file_header(magic: bytes, file_number: int, version: int = FORMAT_VERSION) -> bytes:
    """The 20-byte header every WAL, table and meta file starts with."""
    head = FILE_HEADER.pack(magic, version, 0, file_number, 0)[:16]
    return head + CHUNK_CRC.pack(crc(head))


def decode_file_header(buf: bytes, path: str, magic: bytes, file_number: int) -> None:
    """Check the header at offset 0 of ``buf``.

    Raises ``CorruptionError`` when it is short, has the wrong magic or
    checksum, or names another file number; ``UnsupportedFormatError`` when
    its (intact) version is newer than ``FORMAT_VERSION``.
    """
    if len(buf) < FILE_HEADER.size:
        raise CorruptionError(path, 0, f"file header is {len(buf)} bytes, needs {FILE_HEADER.size}")
    got_magic, version, _reserved, number, stored = FILE_HEADER.unpack_from(buf, 0)
    if got_magic != magic:
        raise CorruptionError(path, 0, f"bad magic {got_magic!r}, expected {magic!r}")
    if crc(buf[:16]) != stored:
        raise BadChecksumError(path, 0, "file header checksum mismatch")
    if version > FORMAT_VERSION or version == 0:
        raise UnsupportedFormatError(f"{path}: format version {version}, this kvstore reads up to {FORMAT_VERSION}")
    if number != file_number:
        raise CorruptionError(path, 0, f"header names file number {number}, expected {file_number}")


# ---------------------------------------------------------------- WAL


def commit_size(writes: Iterable[tuple[bytes, bytes | None]]) -> int:
    """The bytes ``encode_commit`` makes of ``writes``: a transaction over ``MAX_RECORD_PAYLOAD`` of
    them cannot be logged.

    >>> commit_size([(b"k", b"v"), (b"gone", None)]) == len(encode_commit(1, 0, [(b"k", b"v"), (b"gone", None)]))
    True
    """
    entry = WAL_ENTRY.size
    return COMMIT_HEADER.size + sum(entry + len(k) + len(v or b"") for k, v in writes)


def encode_commit(sequence: int, durable_offset: int, writes: Sequence[tuple[bytes, bytes | None]]) -> bytes:
    """The payload of one COMMIT record: its header, then each write (value None is a delete)."""
    if len(writes) == 1:
        key, value = writes[0]
        if value is not None and len(value) < MAX_RECORD_PAYLOAD - COMMIT_OF_ONE.size - len(key):
            return COMMIT_OF_ONE.pack(sequence, durable_offset, 1, 1, len(key), len(value)) + key + value
    pack = WAL_ENTRY.pack
    parts = [COMMIT_HEADER.pack(sequence, durable_offset, len(writes))]
    append = parts.append
    for key, value in writes:
        if value is None:
            append(pack(0, len(key), 0))
            append(key)
        else:
            append(pack(1, len(key), len(value)))
            append(key)
            append(value)
    payload = b"".join(parts)
    if len(payload) > MAX_RECORD_PAYLOAD:
        raise KeyOrValueTooLargeError(f"transaction encodes to {len(payload)} bytes, the WAL limit is 4 GiB")
    return payload


_ONE = COMMIT_OF_ONE.size
_unpack_one = COMMIT_OF_ONE.unpack_from


def decode_commit(payload: bytes, path: str, offset: int) -> tuple[int, int, list[tuple[bytes, bytes | None]]]:
    """(sequence, durable_offset, writes) of a COMMIT payload found at ``offset`` in ``path``.

    Raises ``CorruptionError`` naming ``path`` and ``offset`` when the payload does not parse or its keys
    are not in strictly ascending order (the writer logs each key of a transaction once, in key order:
    a key twice or out of order is not what it wrote).
    """
    size = len(payload)
    if size >= _ONE:  # the commonest commit, one VALUE (what encode_commit packs as COMMIT_OF_ONE), in one unpack
        sequence, durable, count, kind, klen, vlen = _unpack_one(payload, 0)
        if count == 1 and kind == 1 and _ONE + klen + vlen == size:
            return sequence, durable, [(payload[_ONE : _ONE + klen], payload[_ONE + klen :])]
    elif size < COMMIT_HEADER.size:
        raise CorruptionError(path, offset, "commit record shorter than its header")
    sequence, durable, count = COMMIT_HEADER.unpack_from(payload, 0)
    pos = COMMIT_HEADER.size
    if count > (size - pos) // WAL_ENTRY.size:
        raise CorruptionError(path, offset, f"commit record claims {count} writes in {size} bytes")
    unpack = WAL_ENTRY.unpack_from
    esize = WAL_ENTRY.size
    writes: list[tuple[bytes, bytes | None]] = []
    prev = b""  # below every key but b"" itself, which is only allowed first (``writes`` still empty)
    for _ in range(count):
        if pos + esize > size:
            raise CorruptionError(path, offset, "commit record truncated inside a write")
        kind, klen, vlen = unpack(payload, pos)
        pos += esize
        kend = pos + klen
        vend = kend + vlen
        if vend > size:
            raise CorruptionError(path, offset, "commit record truncated inside a key or value")
        key = payload[pos:kend]
        if key <= prev and writes:
            why = "twice" if key == prev else "out of order"
            raise CorruptionError(path, offset, f"commit record holds key {key[:40]!r} {why}: keys ascend, each once")
        prev = key
        if kind == 1:
            writes.append((key, payload[kend:vend]))
        elif kind == 0 and vlen == 0:
            writes.append((key, None))
        else:
            raise CorruptionError(path, offset, f"commit record has a write of unknown kind {kind}")
        pos = vend
    if pos != size:
        raise CorruptionError(path, offset, f"commit record has {size - pos} bytes after its last write")
    return sequence, durable, writes


def encode_frame(log_number: int, rtype: int, payload: bytes) -> bytes:
    """A WAL frame: the 9-byte header and the payload."""
    length = len(payload)
    checksum = _crc32c.crc32c
    value = checksum(payload, checksum(WAL_CRC_PREFIX.pack(log_number, length, rtype)))
    return WAL_FRAME.pack(value, length, rtype) + payload


def frame_crc(log_number: int, length: int, rtype: int, payload: bytes | memoryview) -> int:
    """The checksum a frame with these fields must carry."""
    return crc(payload, crc(WAL_CRC_PREFIX.pack(log_number, length, rtype)))


# ---------------------------------------------------------------- checked chunks (table blocks, index, bloom, props)


def seal_chunk(file_number: int, offset: int, payload: bytes) -> bytes:
    """``payload`` followed by its CRC32C, which also covers the file number and the chunk's offset."""
    return payload + CHUNK_CRC.pack(crc(payload, crc(CHUNK_CRC_PREFIX.pack(file_number, offset))))


def open_chunk(chunk: bytes, path: str, file_number: int, offset: int) -> bytes:
    """The payload of a chunk read at ``offset``; raises ``BadChecksumError`` when it does not check out."""
    if len(chunk) < CHUNK_CRC.size:
        raise CorruptionError(path, offset, f"chunk of {len(chunk)} bytes is shorter than its checksum")
    payload = chunk[:-4]
    (stored,) = CHUNK_CRC.unpack_from(chunk, len(chunk) - 4)
    if crc(payload, crc(CHUNK_CRC_PREFIX.pack(file_number, offset))) != stored:
        raise BadChecksumError(path, offset, "block checksum mismatch")
    return payload


# ---------------------------------------------------------------- blocks


def encode_block(keys: Sequence[bytes], seqs: Sequence[int], values: Sequence[bytes | None],
                 klens: Sequence[int] | None = None, vlens: Sequence[int] | None = None) -> bytes:
    """A block payload: keys and values back to back, then the four per-entry arrays, then the count.

    ``klens`` and ``vlens`` are the key and value lengths (0 for a delete) when the caller has them."""
    n = len(keys)
    data: list[bytes | None] = [None] * (2 * n)
    data[0::2] = keys
    data[1::2] = values
    if klens is None:
        klens = list(map(len, keys))
    if vlens is None or 0 in vlens:  # a length of 0: an empty value or a delete
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
def _block_seqs_kinds(n: int) -> struct.Struct:
    """The last two arrays of ``_block_arrays(n)``: seq u64[n] | kind u8[n], the kinds as one bytes object."""
    return struct.Struct(f"<{n}Q{n}s")


class _Layout:
    """Where the keys and values of a block with given length arrays lie: a struct that slices out every
    key, one that slices out every value, and each value's (start, end)."""

    __slots__ = ("size", "keys", "values", "spans")

    def __init__(self, klens: Sequence[int], vlens: Sequence[int]) -> None:
        self.keys = struct.Struct("<" + "".join(map("{}s{}x".format, klens, vlens)))
        self.values = struct.Struct("<" + "".join(map("{}x{}s".format, klens, vlens)))
        self.size = self.keys.size
        ends = list(itertools.accumulate(itertools.chain.from_iterable(zip(klens, vlens))))
        self.spans = tuple(zip(ends[0::2], ends[1::2]))


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
        """The layout for these length arrays of ``n`` entries, or None while they are new."""
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


_LAYOUTS = _Layouts(64)


class BlockEntries:
    """A block payload, checked, with its keys and sequences decoded and its values sliced out on demand.

    A point read needs every key (to bisect) but one value: ``value(j)`` slices just that one, and
    ``values()`` decodes them all once (a scan), after which the payload is let go.  Raises
    ``CorruptSSTableError`` on construction for everything ``decode_block`` rejects.  Threads may share
    one (the block cache does): ``values()`` stores the values before it lets the payload go, so a reader
    that finds the payload gone finds the values.
    """

    __slots__ = ("keys", "seqs", "_payload", "_kinds", "_layout", "_lengths", "_values", "_ascending")

    def __init__(self, payload: bytes, path: str, offset: int) -> None:
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
        fields = _block_seqs_kinds(n).unpack_from(payload, lengths_end)
        kinds: bytes = fields[-1]
        if kinds.count(1) != n:
            if lens is None:
                lens = _block_lengths(n).unpack_from(payload, data_end)
            for vlen, kind in zip(lens[n:], kinds):
                if kind != 1 and (kind != 0 or vlen != 0):
                    raise CorruptSSTableError(path, offset, f"block entry of unknown kind {kind}")
        keys: list[bytes]
        if layout is None:
            assert lens is not None
            keys = []
            append = keys.append
            pos = 0
            for klen, vlen in zip(lens[:n], lens[n:]):
                end = pos + klen
                append(payload[pos:end])
                pos = end + vlen
        else:
            keys = list(layout.keys.unpack_from(payload))
        self.keys: list[bytes] = keys
        self.seqs: list[int] = list(fields[:n])
        self._payload: bytes | None = payload
        self._kinds = kinds
        self._layout = layout
        self._lengths = lens  # None when the layout has them
        self._values: list[bytes | None] | None = None
        self._ascending: bool | None = None

    def value(self, j: int) -> bytes | None:
        """The value of entry ``j`` (None for a delete)."""
        values = self._values
        if values is not None:
            return values[j]
        if self._kinds[j] == 0:
            return None
        payload = self._payload
        if payload is None:  # another thread decoded the values meanwhile
            return self.values()[j]
        layout = self._layout
        if layout is not None:
            start, end = layout.spans[j]
            return payload[start:end]
        lens = self._lengths
        assert lens is not None
        n = len(self.keys)
        start = sum(lens[: j + 1]) + sum(lens[n : n + j])
        return payload[start : start + lens[n + j]]

    def values(self) -> list[bytes | None]:
        """Every value, in order (None for a delete); decoded on the first call."""
        values = self._values
        if values is not None:
            return values
        payload = self._payload
        if payload is None:  # another thread decoded them meanwhile
            values = self._values
            assert values is not None
            return values
        found: list[bytes | None]
        if self._layout is not None:
            found = list(self._layout.values.unpack_from(payload))
        else:
            lens = self._lengths
            assert lens is not None
            n = len(self.keys)
            found = []
            append = found.append
            pos = 0
            for klen, vlen in zip(lens[:n], lens[n:]):
                pos += klen
                append(payload[pos : pos + vlen])
                pos += vlen
        kinds = self._kinds
        if kinds.count(1) != len(kinds):
            found = [None if kind == 0 else value for value, kind in zip(found, kinds)]
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


def decode_block(payload: bytes, path: str, offset: int) -> tuple[list[bytes], list[int], list[bytes | None]]:
    """(keys, sequences, values) of a block payload; a value of None is a delete."""
    entries = BlockEntries(payload, path, offset)
    return entries.keys, entries.seqs, entries.values()


# ---------------------------------------------------------------- table properties and footer


def encode_props(entries: int, deletes: int, min_seq: int, max_seq: int, smallest: bytes, largest: bytes) -> bytes:
    """The properties payload: counts, sequence range, smallest and largest key."""
    return PROPS.pack(entries, deletes, min_seq, max_seq, len(smallest), len(largest)) + smallest + largest


def decode_props(payload: bytes, path: str, offset: int) -> tuple[int, int, int, int, bytes, bytes]:
    """(entries, deletes, min_seq, max_seq, smallest, largest) of a properties payload."""
    if len(payload) < PROPS.size:
        raise CorruptSSTableError(path, offset, "properties block too short")
    entries, deletes, min_seq, max_seq, slen, llen = PROPS.unpack_from(payload, 0)
    if PROPS.size + slen + llen != len(payload):
        raise CorruptSSTableError(path, offset, "properties block lengths do not add up")
    smallest = payload[PROPS.size : PROPS.size + slen]
    largest = payload[PROPS.size + slen :]
    return entries, deletes, min_seq, max_seq, smallest, largest


def encode_footer(index: tuple[int, int], bloom: tuple[int, int], props: tuple[int, int], file_number: int) -> bytes:
    """The 56-byte footer: where the index, bloom and properties chunks are (offset, size)."""
    body = FOOTER.pack(*index, *bloom, *props, file_number, TABLE_MAGIC, FORMAT_VERSION, 0, 0)[:-4]
    return body + CHUNK_CRC.pack(crc(body))


def decode_footer(buf: bytes, path: str, offset: int, file_number: int) -> tuple[tuple[int, int], ...]:
    """((index_off, size), (bloom_off, size), (props_off, size)) from a footer read at ``offset``."""
    if len(buf) != FOOTER.size:
        raise CorruptSSTableError(path, offset, f"footer is {len(buf)} bytes, needs {FOOTER.size}")
    io, isz, bo, bsz, po, psz, number, magic, version, _reserved, stored = FOOTER.unpack(buf)
    if magic != TABLE_MAGIC:
        raise CorruptSSTableError(path, offset, f"footer has bad magic {magic!r}")
    if crc(buf[:-4]) != stored:
        raise CorruptSSTableError(path, offset, "footer checksum mismatch")
    if version > FORMAT_VERSION or version == 0:
        raise UnsupportedFormatError(
            f"{path}: table format version {version}, this kvstore reads up to {FORMAT_VERSION}")
    if number != file_number:
        raise CorruptSSTableError(path, offset, f"footer names file number {number}, expected {file_number}")
    return (io, isz), (bo, bsz), (po, psz)


# ---------------------------------------------------------------- meta slot


def encode_meta(slot: int, version: int, next_file: int, log_number: int, last_sequence: int,
                tables: Sequence[int]) -> bytes:
    """A whole meta slot file: header, body, table numbers (newest first), checksum."""
    body = [encode_file_header(META_MAGIC, slot),
            META_BODY.pack(version, next_file, log_number, last_sequence, len(tables))]
    body.extend(U64.pack(t) for t in tables)
    data = b"".join(body)
    return data + CHUNK_CRC.pack(crc(data))


def decode_meta(buf: bytes, path: str, slot: int) -> tuple[int, int, int, int, list[int]]:
    """(version, next_file, log_number, last_sequence, tables) of a meta slot file's bytes."""
    decode_file_header(buf, path, META_MAGIC, slot)
    head = FILE_HEADER.size
    if len(buf) < head + META_BODY.size + 4:
        raise CorruptionError(path, head, "meta slot shorter than its body")
    version, next_file, log_number, last_sequence, count = META_BODY.unpack_from(buf, head)
    end = head + META_BODY.size + 8 * count
    if end + 4 != len(buf):
        raise CorruptionError(path, head, f"meta slot of {len(buf)} bytes cannot hold {count} tables")
    (stored,) = CHUNK_CRC.unpack_from(buf, end)
    if crc(buf[:end]) != stored:
        raise BadChecksumError(path, end, "meta slot checksum mismatch")
    tables = list(struct.unpack_from(f"<{count}Q", buf, head + META_BODY.size))
    return version, next_file, log_number, last_sequence, tables


# ---------------------------------------------------------------- hashing for bloom filters


def key_hash(key: bytes) -> int:
    """A 32-bit hash of ``key`` that is the same in every process (CRC32C, never ``hash()``)."""
    return _crc32c.crc32c(key)


def key_hashes(keys: Iterable[bytes]) -> Iterator[int]:
    """``key_hash`` of each key, computed without a Python call per key."""
    return map(_crc32c.crc32c, keys)

