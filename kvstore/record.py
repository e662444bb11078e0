"""Byte layouts shared by the WAL, the tables and the meta slots, and their codecs.

Every struct is little-endian, declared once here with its layout above it and
its size checked beneath.  Encoders return ``bytes``; decoders take the bytes
and the file's path (for the error) and raise ``CorruptionError`` (or
``UnsupportedFormatError``) on anything they cannot decode, never
``struct.error`` or ``IndexError``.  The formats are drawn byte by byte in
DESIGN.md ("On-disk formats"); tests/test_design_doc.py checks its hex examples
against these encoders.  A table block's codec, which reads these structs
entry by entry, is ``block.py``.
"""

from __future__ import annotations

import enum
import math
import struct
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import NamedTuple

import crc32c as _crc32c

from kvstore.errors import (
    BadChecksumError,
    CorruptionError,
    CorruptSSTableError,
    KeyOrValueTooLargeError,
    UnsupportedFormatError,
)

#: The format version of the meta files this code writes and the newest it reads (and of the WAL up to
#: version 1; see ``WAL_FORMAT_VERSION``).
FORMAT_VERSION = 1
#: The format version of the meta files this code writes and the newest it reads: 2, the keys of the KV's
#: own space that start with ``FF`` are stored escaped, beside collections (``keyspace``); a database whose
#: meta is version 1 stores them as they are, and is upgraded by its first writable open (``upgrade``).
META_FORMAT_VERSION = 2
#: The format version of the WAL files this code writes and the newest it reads: 3 adds expiring values
#: (``Kind.EXPIRING``), 2 range deletes (``Kind.RANGE_DELETE``) to a commit unit; logs of versions 1 and 2
#: are still replayed.
WAL_FORMAT_VERSION = 3
#: The format version of the tables this code writes and the newest it reads: 4, expiring entries in blocks
#: and their count and earliest expiry in the properties; 3, a section of range tombstones named by the
#: properties; 2, the blocked bloom filter; tables of versions 1 (the double-hashing filter) to 3 are still
#: read.  Tables have their own version since 2.
TABLE_FORMAT_VERSION = 4

WAL_MAGIC = b"KVWL"
TABLE_MAGIC = b"KVST"
META_MAGIC = b"KVMT"


class Kind(enum.IntEnum):
    """What an entry is.  # ON-DISK: never renumber."""

    DELETE = 0
    VALUE = 1
    #: a range delete in a commit unit (WAL version 2): the key is its start, the value its end
    RANGE_DELETE = 2
    #: a value that expires (WAL version 3, table version 4): the value is its expiry, f64 seconds by the
    #: KV's clock, then the value's bytes (``Expiring``)
    EXPIRING = 3


class RangeEnd(bytes):
    """The end of a range delete ``[start, end)``, carried as the value of a write whose key is its start:
    how a commit's writes (``(key, value)`` pairs, a value None a delete) hold a range delete too.  A
    commit's range deletes follow its other writes, their starts ascending and the ranges disjoint."""

    __slots__ = ()


# an expiring value's first 8 bytes: expiry f64, seconds by the KV's clock (``time.time`` by default)
EXPIRY = struct.Struct("<d")
assert EXPIRY.size == 8


class Expiring(bytes):
    """A value that expires, in its stored form: its expiry (``EXPIRY``) then the value's bytes.  A commit's
    writes, the memtable and a decoded block hold an expiring value as one (``Kind.EXPIRING`` on disk); a
    slice of it, as ``data`` takes, is plain ``bytes``.  It is live while the clock reads below ``expires``
    and absent from that instant on."""

    __slots__ = ()

    @classmethod
    def of(cls, value: bytes, expires: float) -> Expiring:
        """``value`` expiring at ``expires``."""
        return cls(EXPIRY.pack(expires) + value)

    @property
    def expires(self) -> float:
        """When it expires: seconds by the KV's clock."""
        return float(EXPIRY.unpack_from(self)[0])

    @property
    def data(self) -> bytes:
        """The value itself."""
        return self[8:]

    def alive(self, now: float) -> bytes | None:
        """The value while ``now`` is before the expiry; None from the expiry on."""
        return self[8:] if now < EXPIRY.unpack_from(self)[0] else None


def expiring(data: bytes, path: str, offset: int) -> Expiring:
    """The ``Expiring`` value stored as ``data`` (from a WAL commit or a table block at ``offset`` in
    ``path``); raises ``CorruptionError`` when it is shorter than its expiry or the expiry is not a finite
    number (an encoder never writes one)."""
    if len(data) < EXPIRY.size or not math.isfinite(EXPIRY.unpack_from(data)[0]):
        raise CorruptionError(path, offset, f"expiring value of {len(data)} bytes has no finite expiry")
    return Expiring(data)


class BloomKind(enum.IntEnum):
    """The last byte of a version-2 table's bloom payload: how the filter is laid out and hashed; a reader
    treats a kind it does not know as a filter that filters nothing.  # ON-DISK: never renumber."""

    BLOCKED = 1


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

# trailer of a version-2 bloom payload, after its 64-byte lines: probes k u8 | kind u8 (BloomKind)
BLOOM_TRAILER = struct.Struct("<BB")
assert BLOOM_TRAILER.size == 2
#: bytes of one line of a version-2 bloom filter: one 64-byte cache line, 512 bits
BLOOM_LINE = 64

# table properties: entries u64 | deletes u64 | min_seq u64 | max_seq u64 | smallest_len u16 | largest_len u16
PROPS = struct.Struct("<QQQQHH")
assert PROPS.size == 36
# after the smallest and largest keys, in a version-3 table: range_off u64 | range_size u32, where the
# range tombstone section's chunk is (0, 0 when the table has none)
PROPS_RANGES = struct.Struct("<QI")
assert PROPS_RANGES.size == 12
# after those, in a version-4 table: expiring u64 | earliest f64, how many entries expire and the earliest
# expiry among them (0.0 when none does)
PROPS_EXPIRY = struct.Struct("<Qd")
assert PROPS_EXPIRY.size == 16

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


def newest_version(magic: bytes) -> int:
    """The format version this code writes, and the newest it reads, for files with ``magic``."""
    if magic == TABLE_MAGIC:
        return TABLE_FORMAT_VERSION
    if magic == META_MAGIC:
        return META_FORMAT_VERSION
    return WAL_FORMAT_VERSION if magic == WAL_MAGIC else FORMAT_VERSION


def encode_file_header(magic: bytes, file_number: int, version: int | None = None) -> bytes:
    """The 20-byte header every WAL, table and meta file starts with; ``version`` defaults to
    ``newest_version(magic)``."""
    head = FILE_HEADER.pack(magic, newest_version(magic) if version is None else version, 0, file_number, 0)[:16]
    return head + CHUNK_CRC.pack(crc(head))


def decode_file_header(buf: bytes, path: str, magic: bytes, file_number: int) -> int:
    """Check the header at offset 0 of ``buf``; returns its format version.

    Raises ``CorruptionError`` when it is short, has the wrong magic or
    checksum, or names another file number; ``UnsupportedFormatError`` when
    its (intact) version is newer than ``newest_version(magic)``.
    """
    if len(buf) < FILE_HEADER.size:
        raise CorruptionError(path, 0, f"file header is {len(buf)} bytes, needs {FILE_HEADER.size}")
    got_magic, version, _reserved, number, stored = FILE_HEADER.unpack_from(buf, 0)
    if got_magic != magic:
        raise CorruptionError(path, 0, f"bad magic {got_magic!r}, expected {magic!r}")
    if crc(buf[:16]) != stored:
        raise BadChecksumError(path, 0, "file header checksum mismatch")
    newest = newest_version(magic)
    if version > newest or version == 0:
        raise UnsupportedFormatError(f"{path}: format version {version}, this kvstore reads up to {newest}")
    if number != file_number:
        raise CorruptionError(path, 0, f"header names file number {number}, expected {file_number}")
    return int(version)


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
        if type(value) is bytes and len(value) < MAX_RECORD_PAYLOAD - COMMIT_OF_ONE.size - len(key):
            return COMMIT_OF_ONE.pack(sequence, durable_offset, 1, 1, len(key), len(value)) + key + value
    pack = WAL_ENTRY.pack
    parts = [COMMIT_HEADER.pack(sequence, durable_offset, len(writes))]
    append = parts.append
    for key, value in writes:
        if value is None:
            append(pack(0, len(key), 0))
            append(key)
        else:
            kind = type(value)
            append(pack(1 if kind is bytes else 2 if kind is RangeEnd else 3 if kind is Expiring else 1,
                        len(key), len(value)))
            append(key)
            append(value)
    payload = b"".join(parts)
    if len(payload) > MAX_RECORD_PAYLOAD:
        raise KeyOrValueTooLargeError(f"transaction encodes to {len(payload)} bytes, the WAL limit is 4 GiB")
    return payload


_ONE = COMMIT_OF_ONE.size
_unpack_one = COMMIT_OF_ONE.unpack_from


def decode_commit(payload: bytes, path: str, offset: int) -> tuple[int, int, list[tuple[bytes, bytes | None]]]:
    """(sequence, durable_offset, writes) of a COMMIT payload found at ``offset`` in ``path``; a range
    delete is a write whose value is a ``RangeEnd``, an expiring value an ``Expiring``.

    Raises ``CorruptionError`` naming ``path`` and ``offset`` when the payload does not parse, its keys
    are not in strictly ascending order (the writer logs each key of a transaction once, in key order:
    a key twice or out of order is not what it wrote), or its range deletes are not after the other
    writes, non-empty, in order and disjoint.
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
    ranged: bytes | None = None  # the end of the last range delete read
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
        if kind == 2:
            end = RangeEnd(payload[kend:vend])
            if not key < end or (ranged and key < ranged):
                raise CorruptionError(path, offset, f"commit record holds a range delete at {key[:40]!r} that is "
                                                    "empty, out of order or overlapping the one before")
            ranged = end
            writes.append((key, end))
            pos = vend
            continue
        if ranged is not None:
            raise CorruptionError(path, offset, f"commit record holds key {key[:40]!r} after a range delete")
        if key <= prev and writes:
            why = "twice" if key == prev else "out of order"
            raise CorruptionError(path, offset, f"commit record holds key {key[:40]!r} {why}: keys ascend, each once")
        prev = key
        writes.append((key, _point_value(kind, payload[kend:vend], path, offset)))
        pos = vend
    if pos != size:
        raise CorruptionError(path, offset, f"commit record has {size - pos} bytes after its last write")
    return sequence, durable, writes


def _point_value(kind: int, value: bytes, path: str, offset: int) -> bytes | None:
    """The value of a commit's point write of ``kind`` (None for a DELETE, which holds no bytes)."""
    if kind == 1:
        return value
    if kind == 3:
        return expiring(value, path, offset)
    if kind == 0 and not value:
        return None
    raise CorruptionError(path, offset, f"commit record has a write of unknown kind {kind}")


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
    return chunk[: check_chunk(chunk, path, file_number, offset)]


def check_chunk(chunk: bytes, path: str, file_number: int, offset: int) -> int:
    """The length of the payload of a chunk read at ``offset`` (the chunk less its CRC), its checksum
    checked in place, without copying the payload; raises ``BadChecksumError`` when it does not check out."""
    size = len(chunk) - CHUNK_CRC.size
    if size < 0:
        raise CorruptionError(path, offset, f"chunk of {len(chunk)} bytes is shorter than its checksum")
    (stored,) = CHUNK_CRC.unpack_from(chunk, size)
    with memoryview(chunk) as view:
        if crc(view[:size], crc(CHUNK_CRC_PREFIX.pack(file_number, offset))) != stored:
            raise BadChecksumError(path, offset, "block checksum mismatch")
    return size


# ---------------------------------------------------------------- table properties and footer


class Props(NamedTuple):
    """A table's properties, as ``decode_props`` reads them."""

    entries: int
    deletes: int
    min_seq: int
    max_seq: int
    smallest: bytes
    largest: bytes
    #: where the range tombstone section's chunk is, (0, 0) when there is none (always before version 3)
    ranges: tuple[int, int] = (0, 0)
    #: how many entries expire and the earliest expiry among them, (0, 0.0) when none does (always before
    #: version 4)
    expiry: tuple[int, float] = (0, 0.0)


def encode_props(entries: int, deletes: int, min_seq: int, max_seq: int, smallest: bytes, largest: bytes,
                 ranges: tuple[int, int] | None = (0, 0), expiry: tuple[int, float] | None = (0, 0.0)) -> bytes:
    """The properties payload: counts, sequence range (of entries and range tombstones), smallest and
    largest key, where the range tombstone section is (version 3; ``ranges`` None leaves it out, as
    versions 1 and 2 do), and the count and earliest expiry of expiring entries (version 4; ``expiry``
    None leaves it out, as versions 1 to 3 do)."""
    head = PROPS.pack(entries, deletes, min_seq, max_seq, len(smallest), len(largest)) + smallest + largest
    if ranges is not None:
        head += PROPS_RANGES.pack(*ranges)
        if expiry is not None:
            head += PROPS_EXPIRY.pack(*expiry)
    return head


def decode_props(payload: bytes, path: str, offset: int, version: int = TABLE_FORMAT_VERSION) -> Props:
    """The ``Props`` of the properties payload of a table of ``version``: before version 3 there is no
    range section, before version 4 no expiring entry."""
    ranged = PROPS_RANGES.size if version >= 3 else 0
    tail = ranged + (PROPS_EXPIRY.size if version >= 4 else 0)
    if len(payload) < PROPS.size + tail:
        raise CorruptSSTableError(path, offset, "properties block too short")
    entries, deletes, min_seq, max_seq, slen, llen = PROPS.unpack_from(payload, 0)
    if PROPS.size + slen + llen + tail != len(payload):
        raise CorruptSSTableError(path, offset, "properties block lengths do not add up")
    smallest = payload[PROPS.size : PROPS.size + slen]
    largest = payload[PROPS.size + slen : PROPS.size + slen + llen]
    at = len(payload) - tail
    ranges = PROPS_RANGES.unpack_from(payload, at) if ranged else (0, 0)
    expiry = PROPS_EXPIRY.unpack_from(payload, at + ranged) if tail > ranged else (0, 0.0)
    if expiry[0] > entries or not math.isfinite(expiry[1]):
        raise CorruptSSTableError(path, offset, f"properties claim {expiry[0]} expiring entries of {entries}, "
                                                f"the earliest at {expiry[1]}")
    return Props(entries, deletes, min_seq, max_seq, smallest, largest, ranges, expiry)


def encode_footer(index: tuple[int, int], bloom: tuple[int, int], props: tuple[int, int], file_number: int,
                  version: int = TABLE_FORMAT_VERSION) -> bytes:
    """The 56-byte footer: where the index, bloom and properties chunks are (offset, size)."""
    body = FOOTER.pack(*index, *bloom, *props, file_number, TABLE_MAGIC, version, 0, 0)[:-4]
    return body + CHUNK_CRC.pack(crc(body))


def decode_footer(buf: bytes, path: str, offset: int, file_number: int,
                  version: int | None = None) -> tuple[tuple[int, int], ...]:
    """((index_off, size), (bloom_off, size), (props_off, size)) from a footer read at ``offset``; when
    ``version`` is given (the header's), the footer must carry the same one."""
    if len(buf) != FOOTER.size:
        raise CorruptSSTableError(path, offset, f"footer is {len(buf)} bytes, needs {FOOTER.size}")
    io, isz, bo, bsz, po, psz, number, magic, found, _reserved, stored = FOOTER.unpack(buf)
    if magic != TABLE_MAGIC:
        raise CorruptSSTableError(path, offset, f"footer has bad magic {magic!r}")
    if crc(buf[:-4]) != stored:
        raise CorruptSSTableError(path, offset, "footer checksum mismatch")
    if found > TABLE_FORMAT_VERSION or found == 0:
        raise UnsupportedFormatError(
            f"{path}: table format version {found}, this kvstore reads up to {TABLE_FORMAT_VERSION}")
    if number != file_number:
        raise CorruptSSTableError(path, offset, f"footer names file number {number}, expected {file_number}")
    if version is not None and found != version:
        raise CorruptSSTableError(path, offset, f"footer says format version {found}, the header {version}")
    return (io, isz), (bo, bsz), (po, psz)


# ---------------------------------------------------------------- meta slot


def encode_meta(slot: int, version: int, next_file: int, log_number: int, last_sequence: int,
                tables: Sequence[int], format_version: int | None = None) -> bytes:
    """A whole meta slot file: header (of ``format_version``, by default the newest), body, table numbers
    (newest first), checksum."""
    body = [encode_file_header(META_MAGIC, slot, format_version),
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


#: ``key_hash(key)``: a 32-bit hash of ``key`` that is the same in every process (CRC32C, never ``hash()``).
#: The C function itself, without a Python wrapper: a get calls it once, for every table's bloom probe.
key_hash: Callable[[bytes], int] = _crc32c.crc32c


def key_hashes(keys: Iterable[bytes]) -> Iterator[int]:
    """``key_hash`` of each key, computed without a Python call per key."""
    return map(_crc32c.crc32c, keys)

