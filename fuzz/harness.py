"""What every fuzz harness shares: the errors a decoder may raise, checksum fix-ups, and the atheris runner.

Each ``fuzz_<name>.py`` asserts one property of one decoder: any input either decodes or raises
``CorruptionError`` (or ``UnsupportedFormatError``), nothing else, and never hangs.  ``check(data)`` lets
the allowed errors pass and any other exception out, which atheris reports as a crash.

Most harnesses read a flags byte first; with ``FIX`` set they recompute every CRC32C they can find before
decoding, so that mutations reach the code behind the checksums instead of dying at the first one.
"""

from __future__ import annotations

import gc
import struct
import sys
import types
from collections.abc import Callable

from kvstore import block, record
from kvstore.errors import CorruptionError, UnsupportedFormatError

#: What a decoder may raise on bad bytes (docs/errors.md): anything else escaping is a bug.
ALLOWED = (CorruptionError, UnsupportedFormatError)

#: Flag bit: recompute checksums before decoding.
FIX = 1

_U32 = struct.Struct("<I")


def _put_crc(buf: bytearray, at: int, value: int) -> None:
    buf[at : at + 4] = _U32.pack(value)


def fix_header(buf: bytearray) -> None:
    """Recompute the file header's checksum (the 4 bytes after its first 16)."""
    if len(buf) >= record.FILE_HEADER.size:
        _put_crc(buf, 16, record.crc(bytes(buf[:16])))


def header_number(buf: bytes | bytearray, default: int = 1) -> int:
    """The file number a file header names, or ``default`` when the file is too short to hold one."""
    if len(buf) < record.FILE_HEADER.size:
        return default
    return int(record.FILE_HEADER.unpack_from(buf, 0)[3])


def fix_wal(data: bytes, log_number: int) -> bytes:
    """A log file with its header checksum and every frame checksum recomputed, frame by frame."""
    buf = bytearray(data)
    fix_header(buf)
    pos = record.FILE_HEADER.size
    fsize = record.WAL_FRAME.size
    while pos + fsize <= len(buf):
        _, length, rtype = record.WAL_FRAME.unpack_from(buf, pos)
        if length > len(buf) - pos - fsize:
            break
        payload = bytes(buf[pos + fsize : pos + fsize + length])
        _put_crc(buf, pos, record.frame_crc(log_number, length, rtype, payload))
        pos += fsize + length
    return bytes(buf)


def _fix_chunk(buf: bytearray, number: int, offset: int, size: int, limit: int) -> None:
    if record.FILE_HEADER.size <= offset and size >= 4 and offset + size <= limit:
        payload = bytes(buf[offset : offset + size - 4])
        _put_crc(buf, offset + size - 4, record.crc(payload, record.crc(record.CHUNK_CRC_PREFIX.pack(number, offset))))


def fix_table(data: bytes, number: int) -> bytes:
    """A table file with its header, footer, index, bloom, properties and data block checksums recomputed."""
    buf = bytearray(data)
    fix_header(buf)
    if len(buf) < record.FILE_HEADER.size + record.FOOTER.size:
        return bytes(buf)
    foot = len(buf) - record.FOOTER.size
    io, isz, bo, bsz, po, psz = record.FOOTER.unpack_from(buf, foot)[:6]
    if record.FILE_HEADER.size <= io and isz >= 4 and io + isz <= foot:
        try:
            _, _, values = block.decode_block(bytes(buf[io : io + isz - 4]), "fuzz", io)
        except CorruptionError:
            values = []
        for value in values:
            if value is not None and len(value) == record.INDEX_VALUE.size:
                offset, size = record.INDEX_VALUE.unpack(value)
                _fix_chunk(buf, number, offset, size, foot)
    for offset, size in ((io, isz), (bo, bsz), (po, psz)):
        _fix_chunk(buf, number, offset, size, foot)
    _put_crc(buf, len(buf) - 4, record.crc(bytes(buf[foot:-4])))
    return bytes(buf)


def fix_meta(data: bytes) -> bytes:
    """A meta slot with its header checksum and its trailing checksum recomputed."""
    buf = bytearray(data)
    fix_header(buf)
    if len(buf) >= record.FILE_HEADER.size + 4:
        _put_crc(buf, len(buf) - 4, record.crc(bytes(buf[:-4])))
    return bytes(buf)


def run(check: Callable[[bytes], None]) -> None:
    """Fuzz ``check`` with atheris, passing this process's arguments on to libFuzzer."""
    import atheris  # only the runner needs it: check() and the corpus replay run without it

    # coverage of kvstore's own code guides the fuzzer; instrumenting everything loaded (instrument_all)
    # costs seconds of start-up per run for the standard library's code, which tells it nothing
    for obj in gc.get_objects():
        if isinstance(obj, types.FunctionType) and str(obj.__module__).startswith("kvstore"):
            atheris.instrument_func(obj)
    atheris.Setup(sys.argv, check)
    atheris.Fuzz()


# a fuzzed directory: files back to back, each kind u8 | number u32 | length u32 | bytes
_FILE = struct.Struct("<BII")
#: What each kind of file in a fuzzed directory is called, by its kind byte (taken modulo 4).
KINDS = ("meta0", "meta1", "sst", "log")


def pack_files(files: list[tuple[int, int, bytes]]) -> bytes:
    """The container of (kind, number, data) files that ``unpack_files`` reads."""
    return b"".join(_FILE.pack(kind, number, len(data)) + data for kind, number, data in files)


def unpack_files(data: bytes) -> list[tuple[int, int, bytes]]:
    """(kind, number, data) of each file in a container; a cut-short last file keeps what is there."""
    out = []
    pos = 0
    while pos + _FILE.size <= len(data):
        kind, number, length = _FILE.unpack_from(data, pos)
        pos += _FILE.size
        out.append((kind % len(KINDS), number, data[pos : pos + length]))
        pos += length
    return out
