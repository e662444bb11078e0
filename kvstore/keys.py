"""The arguments of the public API: keys, values and scan bounds, checked and copied to ``bytes``.

Every public call takes ``bytes``, ``bytearray`` or ``memoryview`` (the
``Bytes`` alias) and works on an immutable ``bytes`` copy, so a caller that
changes its buffer afterwards changes nothing stored.  Anything else is a
``TypeError`` naming the argument (``core.Core._key`` and ``_value`` add the
size checks: ``KeyOrValueTooLargeError``, raised before anything is written).
"""

from __future__ import annotations

__all__ = ["Bytes", "as_bytes", "bounds", "successor"]

#: What callers may pass as a key or value; it is copied to ``bytes``.
Bytes = bytes | bytearray | memoryview


def as_bytes(data: object, what: str) -> bytes:
    """``data`` as ``bytes`` (itself when it already is); ``TypeError`` naming ``what`` otherwise."""
    if type(data) is bytes:
        return data
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    raise TypeError(f"{what} must be bytes, bytearray or memoryview, not {type(data).__name__}")


def successor(prefix: bytes) -> bytes | None:
    """The smallest key greater than every key starting with ``prefix``; None when there is none.

    >>> successor(b"ab"), successor(b"a\\xff"), successor(b"\\xff")
    (b'ac', b'b', None)
    """
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes([stripped[-1] + 1])


def bounds(start: object, end: object, prefix: object) -> tuple[bytes | None, bytes | None]:
    """``[lo, hi)`` of a scan: ``[start, end)`` intersected with the keys starting with ``prefix``."""
    lo = None if start is None else as_bytes(start, "start")
    hi = None if end is None else as_bytes(end, "end")
    if prefix is not None:
        p = as_bytes(prefix, "prefix")
        if lo is None or lo < p:
            lo = p
        succ = successor(p)
        if succ is not None and (hi is None or hi > succ):
            hi = succ
    return lo, hi
