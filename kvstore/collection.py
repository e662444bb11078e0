"""``Collection``: one named key space of a KV, or of a transaction (``kv.collection(name)``,
``tx.collection(name)``).

A collection's keys are stored under its prefix (``keyspace``): they never
meet the keys of another collection or of the KV itself, and keep their order.
A collection needs no creating: it holds the keys set in it, and
``kv.collections()`` lists those that hold at least one.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from kvstore.keys import Bytes
from kvstore.keyspace import Space, check_name, prefix_of

__all__ = ["Collection"]


class Collection:
    """The keys of collection ``name`` in a KV or a transaction, with the calls of that KV or transaction:
    ``get``, ``set``, ``delete``, ``delete_range``, ``ttl``, ``seek``, ``seek_for_prev`` and ``scan``,
    each with the same arguments, results, errors and costs.  Inside a transaction they read its snapshot
    and buffer into it, so one commit can change several collections atomically; conflicts are per key
    of each collection.  A collection that was dropped (``kv.drop_collection``) reads as empty, and keys
    set in it afterwards are new keys."""

    __slots__ = ("name", "_owner", "_space")

    def __init__(self, owner: Any, name: str) -> None:
        self.name = check_name(name)
        """The collection's name."""
        self._owner = owner
        self._space = Space(prefix_of(name))

    def __repr__(self) -> str:
        return f"Collection({self.name!r})"

    def get(self, key: Bytes) -> bytes | None:
        """The value of ``key`` in this collection, or None (as ``KV.get``)."""
        value: bytes | None = self._owner._get_in(self._space, key)
        return value

    def ttl(self, key: Bytes) -> float | None:
        """The seconds ``key`` has left before it expires, or None (as ``KV.ttl``)."""
        left: float | None = self._owner._ttl_in(self._space, key)
        return left

    def set(self, key: Bytes, value: Bytes, *, ttl: float | None = None) -> None:
        """Set ``key`` to ``value`` in this collection (as ``KV.set``; buffered in a transaction)."""
        self._owner._set_in(self._space, key, value, ttl)

    def delete(self, key: Bytes) -> bool:
        """Delete ``key`` from this collection; True when it existed (as ``KV.delete``)."""
        existed: bool = self._owner._delete_in(self._space, key)
        return existed

    def delete_range(self, start: Bytes, end: Bytes) -> None:
        """Delete every key of this collection in ``[start, end)`` (as ``KV.delete_range``)."""
        self._owner._delete_range_in(self._space, start, end)

    def seek(self, key: Bytes = b"") -> Any:
        """A ``Cursor`` on this collection's first key ``>= key``; it becomes invalid past the collection's
        last key (as ``KV.seek``)."""
        return self._owner._seek_in(self._space, key, False)

    def seek_for_prev(self, key: Bytes) -> Any:
        """A ``Cursor`` on this collection's last key ``<= key`` (as ``KV.seek_for_prev``)."""
        return self._owner._seek_in(self._space, key, True)

    def scan(self, start: Bytes | None = None, end: Bytes | None = None, *, prefix: Bytes | None = None,
             reverse: bool = False) -> Iterator[tuple[bytes, bytes]]:
        """``(key, value)`` of this collection's keys in ``[start, end)`` and ``prefix``, in key order
        (descending with ``reverse``), as ``KV.scan``."""
        rows: Iterator[tuple[bytes, bytes]] = self._owner._scan_in(self._space, start, end, prefix, reverse)
        return rows
