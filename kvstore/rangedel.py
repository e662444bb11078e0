"""Range tombstones: ``[start, end)`` deleted at a sequence number, as non-overlapping fragments
(DESIGN.md, "Range tombstones").

A range tombstone ``(start, end, seq)`` hides every version of every key in
``[start, end)`` whose sequence is below ``seq``, for readers whose snapshot is
at or above ``seq``; versions written after it show.  Overlapping tombstones
are *fragmented* (as Pebble's ``rangedel`` fragmenter and RocksDB's
``FragmentedRangeTombstoneList`` do): cut at every start and end into pieces
that do not overlap, each holding the sequences of every tombstone over it,
newest first.  A lookup is then one bisect, however many tombstones there
are, and a merge of tables merges their fragments.

Invariants of ``Fragments``: starts ascend strictly, ``start < end`` for
each piece, pieces do not overlap (``end <= next start``), each piece's
sequences are distinct, positive and descending.

The payload of the table section that stores them, byte by byte
(little-endian): a u8 version (1), a u32 count, then per fragment a u16
start length, a u16 end length, a u32 sequence count, the sequences as u64,
the start and end bytes.  The table seals it like its other sections
(``record.seal_chunk``: a CRC32C over the file number, offset and payload).
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import struct
from collections import Counter
from collections.abc import Iterable, Sequence

from kvstore.errors import CorruptSSTableError, UnsupportedFormatError

__all__ = ["MAX_BOUND", "SECTION_VERSION", "Fragments", "Tombstone", "decode", "encode"]

#: (start, end, sequence): ``[start, end)`` deleted at ``sequence``
Tombstone = tuple[bytes, bytes, int]
#: the section's format version
SECTION_VERSION = 1
#: longest start or end bound a table section holds (u16 lengths, as keys)
MAX_BOUND = 0xFFFF

_HEAD = struct.Struct("<BI")
_PIECE = struct.Struct("<HHI")


class Fragments:
    """Non-overlapping pieces of range tombstones, in key order; see the module's invariants."""

    __slots__ = ("starts", "ends", "seqs", "_max")

    def __init__(self, starts: list[bytes], ends: list[bytes], seqs: list[tuple[int, ...]]) -> None:
        self.starts = starts
        self.ends = ends
        self.seqs = seqs
        self._max = -1  # max_seq(), once asked (the pieces never change)

    @classmethod
    def of(cls, tombstones: Iterable[Tombstone]) -> Fragments:
        """The fragments of ``tombstones`` (any order, overlapping or not; empty ranges ignored).

        >>> f = Fragments.of([(b"a", b"m", 5), (b"f", b"z", 7)])
        >>> list(zip(f.starts, f.ends, f.seqs))
        [(b'a', b'f', (5,)), (b'f', b'm', (7, 5)), (b'm', b'z', (7,))]
        """
        items = sorted((s, e, q) for s, e, q in tombstones if s < e)
        starts: list[bytes] = []
        ends: list[bytes] = []
        seqs: list[tuple[int, ...]] = []
        if not items:
            return cls(starts, ends, seqs)
        bounds = sorted({b for s, e, _ in items for b in (s, e)})
        active: Counter[int] = Counter()
        ending: list[tuple[bytes, int]] = []  # heap of (end, seq) of the active tombstones
        pos = 0
        for lo, hi in itertools.pairwise(bounds):
            while pos < len(items) and items[pos][0] == lo:
                _, end, seq = items[pos]
                heapq.heappush(ending, (end, seq))
                active[seq] += 1
                pos += 1
            while ending and ending[0][0] <= lo:
                _, seq = heapq.heappop(ending)
                active[seq] -= 1
                if not active[seq]:
                    del active[seq]
            if not active:
                continue
            here = tuple(sorted(active, reverse=True))
            if ends and ends[-1] == lo and seqs[-1] == here:
                ends[-1] = hi  # the same sequences go on: one piece
            else:
                starts.append(lo)
                ends.append(hi)
                seqs.append(here)
        return cls(starts, ends, seqs)

    def __len__(self) -> int:
        return len(self.starts)

    def __bool__(self) -> bool:
        return bool(self.starts)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Fragments):
            return NotImplemented
        return (self.starts, self.ends, self.seqs) == (other.starts, other.ends, other.seqs)

    def __repr__(self) -> str:
        return f"Fragments({list(zip(self.starts, self.ends, self.seqs))!r})"

    def tombstones(self) -> list[Tombstone]:
        """One tombstone per piece and sequence (what ``of`` rebuilds these fragments from)."""
        return [(s, e, q) for s, e, qs in zip(self.starts, self.ends, self.seqs) for q in qs]

    def covering(self, key: bytes, snapshot: int) -> int:
        """The newest sequence at or below ``snapshot`` of a tombstone over ``key``; 0 when none.

        >>> f = Fragments.of([(b"a", b"m", 5), (b"f", b"z", 7)])
        >>> f.covering(b"g", 100), f.covering(b"g", 6), f.covering(b"g", 4), f.covering(b"z", 100)
        (7, 5, 0, 0)
        """
        i = bisect.bisect_right(self.starts, key) - 1
        if i < 0 or key >= self.ends[i]:
            return 0
        for seq in self.seqs[i]:
            if seq <= snapshot:
                return seq
        return 0

    def piece(self, key: bytes) -> int:
        """The index of the piece over ``key``, or of the first piece after it (``len(self)`` at the end);
        a scan in key order keeps this index and moves it only past a piece's end."""
        i = bisect.bisect_right(self.starts, key) - 1
        if i >= 0 and key < self.ends[i]:
            return i
        return i + 1

    def span(self) -> tuple[bytes, bytes] | None:
        """(first start, last end), or None when empty."""
        return (self.starts[0], self.ends[-1]) if self.starts else None

    def max_seq(self) -> int:
        """The newest sequence of any piece (0 when empty); computed once."""
        if self._max < 0:
            self._max = max((qs[0] for qs in self.seqs), default=0)
        return self._max

    def min_seq(self) -> int:
        return min((qs[-1] for qs in self.seqs), default=0)

    def merge(self, *others: Fragments) -> Fragments:
        """The fragments of these tombstones and those of ``others``."""
        if not any(others):
            return self
        if not self and len(others) == 1:
            return others[0]
        return Fragments.of(itertools.chain(self.tombstones(), *(o.tombstones() for o in others)))

    def retained(self, snapshots: Sequence[int], bottom: bool) -> Fragments:
        """What a merge writes of these pieces: in each, the newest sequence and each older one some live
        snapshot reads (a snapshot ``s`` with ``q <= s < newer kept``), as for versions of a key; in the
        oldest table also only the sequences above the oldest snapshot (nothing older is left for them to
        hide once the merge dropped what they covered), so with no snapshot nothing."""
        starts: list[bytes] = []
        ends: list[bytes] = []
        seqs: list[tuple[int, ...]] = []
        oldest = snapshots[0] if snapshots else None
        for start, end, qs in zip(self.starts, self.ends, self.seqs):
            kept = [qs[0]]
            for q in qs[1:]:
                i = bisect.bisect_left(snapshots, q)
                if i < len(snapshots) and snapshots[i] < kept[-1]:
                    kept.append(q)
            if bottom:
                kept = [q for q in kept if oldest is not None and q > oldest]
            if not kept:
                continue
            here = tuple(kept)
            if ends and ends[-1] == start and seqs[-1] == here:
                ends[-1] = end
            else:
                starts.append(start)
                ends.append(end)
                seqs.append(here)
        return Fragments(starts, ends, seqs)

    def hides_all(self, low: bytes, high: bytes, min_seq: int, max_seq: int, snapshots: Sequence[int]) -> bool:
        """Whether every version of keys ``[low, high]`` with sequences in ``[min_seq, max_seq]`` is one a
        merge drops (``drops``): one piece covers the whole key range with a sequence above ``max_seq``
        and no snapshot reads between ``min_seq`` and it.  A table for which this holds is dropped whole,
        unread.

        >>> f = Fragments.of([(b"a", b"m", 9)])
        >>> f.hides_all(b"b", b"k", 2, 8, []), f.hides_all(b"b", b"m", 2, 8, []), f.hides_all(b"b", b"k", 2, 8, [5])
        (True, False, False)
        """
        i = bisect.bisect_right(self.starts, low) - 1
        if i < 0 or high >= self.ends[i]:
            return False
        newest = self.seqs[i][0]
        if newest <= max_seq:
            return False
        j = bisect.bisect_left(snapshots, min_seq)
        return j == len(snapshots) or snapshots[j] >= newest

    def drops(self, keys: list[bytes], seqs: list[int], snapshots: Sequence[int]) -> list[bool]:
        """For a merge: of the entries (``keys`` ascending, ``seqs``), which a tombstone here hides from
        every live snapshot (the newest tombstone sequence above the entry's comes before any snapshot at
        or above the entry), so the merge may drop them."""
        out = [False] * len(keys)
        if not self.starts:
            return out
        starts, ends, pieces = self.starts, self.ends, self.seqs
        count = len(starts)
        i = self.piece(keys[0]) if keys else 0
        for n, key in enumerate(keys):
            if i < count and ends[i] <= key:
                i = self.piece(key)  # past this piece: one bisect, however many pieces are skipped
            if i == count:
                break
            if key < starts[i]:
                continue
            seq = seqs[n]
            above = [q for q in pieces[i] if q > seq]
            if not above:
                continue
            j = bisect.bisect_left(snapshots, seq)
            out[n] = j == len(snapshots) or snapshots[j] >= above[-1]
        return out


def encode(fragments: Fragments) -> bytes:
    """The section payload of ``fragments`` (module docstring); ``ValueError`` for a bound over
    ``MAX_BOUND`` bytes (the public calls refuse such bounds first)."""
    out = [_HEAD.pack(SECTION_VERSION, len(fragments))]
    for start, end, seqs in zip(fragments.starts, fragments.ends, fragments.seqs):
        if len(start) > MAX_BOUND or len(end) > MAX_BOUND:
            raise ValueError(f"a range tombstone bound is longer than {MAX_BOUND} bytes")
        out.append(_PIECE.pack(len(start), len(end), len(seqs)))
        out.append(struct.pack(f"<{len(seqs)}Q", *seqs))
        out.append(start)
        out.append(end)
    return b"".join(out)


def decode(data: bytes, path: str, offset: int) -> Fragments:
    """The fragments of the section payload ``data`` (its checksum already checked) at ``offset`` of
    ``path``; ``CorruptSSTableError`` when it is cut short or breaks an invariant, ``UnsupportedFormatError``
    for a newer section version."""

    def bad(why: str) -> CorruptSSTableError:
        return CorruptSSTableError(path, offset, f"range tombstone section: {why}")

    if len(data) < _HEAD.size:
        raise bad(f"{len(data)} bytes is too short")
    version, count = _HEAD.unpack_from(data, 0)
    if version > SECTION_VERSION:
        raise UnsupportedFormatError(f"{path}: range tombstone section version {version} is newer than "
                                     f"{SECTION_VERSION}, the newest this kvstore reads")
    if version < 1:
        raise bad(f"version {version}")
    starts: list[bytes] = []
    ends: list[bytes] = []
    seqs: list[tuple[int, ...]] = []
    pos, limit = _HEAD.size, len(data)
    for _ in range(count):
        if pos + _PIECE.size > limit:
            raise bad("cut short")
        slen, elen, nseq = _PIECE.unpack_from(data, pos)
        pos += _PIECE.size
        need = 8 * nseq + slen + elen
        if nseq == 0 or pos + need > limit:
            raise bad("cut short" if nseq else "a piece with no sequence")
        piece = struct.unpack_from(f"<{nseq}Q", data, pos)
        pos += 8 * nseq
        start, end = bytes(data[pos : pos + slen]), bytes(data[pos + slen : pos + slen + elen])
        pos += slen + elen
        if not start < end or (ends and start < ends[-1]):
            raise bad("pieces out of order or overlapping")
        if piece[-1] < 1 or any(a <= b for a, b in itertools.pairwise(piece)):
            raise bad("sequences not descending")
        starts.append(start)
        ends.append(end)
        seqs.append(piece)
    if pos != limit:
        raise bad(f"{limit - pos} bytes after the last piece")
    return Fragments(starts, ends, seqs)
