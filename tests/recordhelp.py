"""What the record, log and block tests share (tests/test_record.py, tests/test_record_wal.py,
tests/test_block.py): the path their errors name, Hypothesis strategies for keys, values and writes, and the
damage done to encoded bytes."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from hypothesis import strategies as st

from kvstore import record
from kvstore.errors import CorruptionError, UnsupportedFormatError

PATH = "/db/000007.sst"

keys_st = st.binary(max_size=24)
values_st = st.one_of(st.none(), st.binary(max_size=40))
#: a transaction's writes as the log holds them: in key order, each key once
writes_st = st.dictionaries(keys_st, values_st, max_size=12).map(lambda d: sorted(d.items()))
#: any finite expiry, the extremes of a float among them
expiries_st = st.floats(allow_nan=False, allow_infinity=False)
expiring_st = st.builds(record.Expiring.of, st.binary(max_size=40), expiries_st)
#: values, deletes and expiring values (``record.Expiring``)
any_values_st = st.one_of(st.none(), st.binary(max_size=40), expiring_st)
expiring_writes_st = st.dictionaries(keys_st, any_values_st, max_size=12).map(lambda d: sorted(d.items()))
#: an expiry: 2026-01-01 00:00 UTC
EXPIRES = 1767225600.0


def _flip(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


def _decodes_or_corrupt(fn: Callable[[], Any]) -> None:
    """Call ``fn``; only a result, ``CorruptionError`` or ``UnsupportedFormatError`` may come out."""
    with contextlib.suppress(CorruptionError, UnsupportedFormatError):
        fn()


@st.composite
def mutations(draw: st.DrawFn, data: bytes) -> tuple[str, bytes]:
    """One damage done to ``data``: a truncation, an extension or one flipped bit."""
    kind = draw(st.sampled_from(["truncate", "extend", "flip"]))
    if kind == "truncate":
        return kind, data[: draw(st.integers(0, len(data) - 1))]
    if kind == "extend":
        return kind, data + draw(st.binary(min_size=1, max_size=16))
    return kind, _flip(data, draw(st.integers(0, len(data) * 8 - 1)))
