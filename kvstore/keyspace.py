"""Key spaces: the KV's own keys and each collection's, as stored keys that never meet.

A stored key is one of (DESIGN.md, "Collections"):

  - a key of the KV itself that does not start with ``0xFF``: stored as it is;
  - a key of the KV itself that starts with ``0xFF``: ``FF 00`` then the key without its first byte;
  - key ``k`` of collection ``name``: ``FF``, the length of ``name`` in UTF-8 (1 to 255), ``name``, ``k``.

Each mapping keeps the order of keys within its space, and the spaces are
disjoint: the KV's keys lie below ``FF 01``, a collection's between its prefix
and the prefix's successor.  The stored key ``FF`` alone is never produced.
UTF-8 never holds the byte ``FF``, so a prefix's successor is its last byte
plus one.

    >>> stored(b"apple"), stored(b"\\xffx"), stored(b"k", prefix_of("users"))
    (b'apple', b'\\xff\\x00x', b'\\xff\\x05usersk')
    >>> split(b"\\xff\\x05usersk")
    ('users', b'k')
"""

from __future__ import annotations

from kvstore.errors import CorruptionError

__all__ = ["COLLECTIONS_END", "COLLECTIONS_START", "DEFAULT", "DEFAULT_END", "LEGACY", "MAX_NAME_BYTES", "Space",
           "check_name", "prefix_of", "split", "stored", "successor", "user_key"]

#: The stored keys of the KV's own space lie below this key.
DEFAULT_END = b"\xff\x01"
#: Every collection's stored keys lie in ``[COLLECTIONS_START, COLLECTIONS_END)`` (UTF-8 never holds ``FF``).
COLLECTIONS_START = b"\xff\x01"
COLLECTIONS_END = b"\xff\xff\xff"
#: A collection name takes at most this many bytes in UTF-8.
MAX_NAME_BYTES = 255
_ESCAPE = b"\xff\x00"


def check_name(name: object) -> str:
    """``name`` if it can name a collection: ``TypeError`` for anything but a ``str``, ``ValueError`` for an
    empty one, one of more than 255 bytes in UTF-8, or one that cannot be encoded (a lone surrogate)."""
    if type(name) is not str:
        raise TypeError(f"a collection name must be a str, not {type(name).__name__}")
    if not name:
        raise ValueError("a collection name must not be empty")
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise ValueError(f"a collection name must be valid UTF-8: {exc}") from None
    if size > MAX_NAME_BYTES:
        raise ValueError(f"a collection name takes at most {MAX_NAME_BYTES} bytes in UTF-8, not {size}")
    return name


def prefix_of(name: str) -> bytes:
    """The stored prefix of collection ``name`` (a name ``check_name`` accepted)."""
    raw = name.encode("utf-8")
    return b"\xff" + bytes((len(raw),)) + raw


def successor(prefix: bytes) -> bytes:
    """The least stored key above every key that starts with the collection prefix ``prefix``."""
    return prefix[:-1] + bytes((prefix[-1] + 1,))


def stored(key: bytes, prefix: bytes | None = None) -> bytes:
    """The stored key of ``key``: of the KV's own space (``prefix`` None) or of the collection whose
    prefix is ``prefix``."""
    if prefix is not None:
        return prefix + key
    if key >= b"\xff":
        return _ESCAPE + key[1:]
    return key


def user_key(key: bytes) -> bytes:
    """The key of the KV's own space stored as ``key`` (a stored key below ``DEFAULT_END``)."""
    if key >= b"\xff":
        return b"\xff" + key[2:]
    return key


def split(key: bytes, path: str = "", offset: int = 0) -> tuple[str | None, bytes]:
    """(collection name or None for the KV's own space, key) of a stored key; ``CorruptionError`` (with
    ``path`` and ``offset``) for a stored key no mapping produces."""
    if key[:1] != b"\xff":
        return None, key
    if len(key) >= 2:
        size = key[1]
        if size == 0:
            return None, b"\xff" + key[2:]
        if len(key) >= 2 + size:
            try:
                return key[2 : 2 + size].decode("utf-8"), key[2 + size :]
            except UnicodeDecodeError:
                pass
    raise CorruptionError(path, offset, f"stored key {key[:32]!r} belongs to no key space")


class Space:
    """One key space as readers walk it: its stored keys lie in ``[lo, hi)``; ``key(stored)`` is the key a
    user sees, ``stored(key)`` the key stored; ``rows(chunk)`` turns a chunk of stored rows into user rows."""

    __slots__ = ("prefix", "lo", "hi", "_skip")

    def __init__(self, prefix: bytes | None) -> None:
        self.prefix = prefix
        self.lo = b"" if prefix is None else prefix
        self.hi = DEFAULT_END if prefix is None else successor(prefix)
        self._skip = 0 if prefix is None else len(prefix)

    def stored(self, key: bytes) -> bytes:
        return stored(key, self.prefix)

    def key(self, key: bytes) -> bytes:
        if self.prefix is None:
            return b"\xff" + key[2:] if key >= b"\xff" else key
        return key[self._skip :]

    def rows(self, rows: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """A chunk of stored rows as the user sees them (the same list when no key changes: a chunk of the
        KV's own space with no key starting with ``FF``)."""
        if self.prefix is None:
            if rows[0][0] < b"\xff" and rows[-1][0] < b"\xff":
                return rows
            return [(b"\xff" + k[2:] if k >= b"\xff" else k, v) for k, v in rows]
        skip = self._skip
        return [(k[skip:], v) for k, v in rows]


class _Legacy(Space):
    """The KV's own key space in a database of meta format 1 (opened read-only, not yet upgraded): every
    key stored as it is, and no collection."""

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__(None)
        self.hi = b"\xff" * 0x10000  # above every key a table holds

    def stored(self, key: bytes) -> bytes:
        return key

    def key(self, key: bytes) -> bytes:
        return key

    def rows(self, rows: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        return rows


#: The KV's own key space.
DEFAULT = Space(None)
#: The KV's own key space in a database of meta format 1.
LEGACY: Space = _Legacy()
