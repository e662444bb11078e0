"""Config: every tunable of a KV, frozen and validated on construction.

An invalid value raises ``ValueError`` naming the field; nothing is silently
replaced.  The caps (``MAX_KEY_SIZE_CAP``, ``MAX_VALUE_SIZE_CAP``) are what the
on-disk formats can hold (DESIGN.md, "Limits").
"""

from __future__ import annotations

from typing import Any, Literal

import attrs

__all__ = ["MAX_KEY_SIZE_CAP", "MAX_VALUE_SIZE_CAP", "Config"]

#: Keys are stored with a u16 length in table blocks.
MAX_KEY_SIZE_CAP = 0xFFFF
#: Values are stored with a u32 length; one WAL record (a whole transaction) is capped below 4 GiB too.
MAX_VALUE_SIZE_CAP = 0xFFFF_FFFF - 0xFFFF - 64


def _positive_int(lo: int, hi: int) -> Any:
    def check(inst: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"Config.{attribute.name} must be an int, not {type(value).__name__}")
        if not lo <= value <= hi:
            raise ValueError(f"Config.{attribute.name} must be in [{lo}, {hi}], got {value}")

    return check


def _bool(inst: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"Config.{attribute.name} must be a bool, not {type(value).__name__}")


def _growth(inst: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"Config.growth_factor must be a number, not {type(value).__name__}")
    if not 2.0 <= value <= 1000.0:
        raise ValueError(f"Config.growth_factor must be in [2.0, 1000.0], got {value}")


def _recovery(inst: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value not in ("strict", "salvage"):
        raise ValueError(f"Config.recovery must be 'strict' or 'salvage', got {value!r}")


@attrs.frozen
class Config:
    """Tunables of one KV, given to ``KV.open(path, config)``.  Change one with ``attrs.evolve(config, field=value)``.

    Frozen: assigning a field raises ``attrs.exceptions.FrozenInstanceError``.
    Every field is validated on construction: a value out of range raises
    ``ValueError`` and a value of the wrong type ``TypeError``, each naming
    the field; nothing is silently replaced.

    Examples:
        >>> Config(memtable_size=1 << 20).block_size
        4096
        >>> Config(growth_factor=1.5)
        Traceback (most recent call last):
        ...
        ValueError: Config.growth_factor must be in [2.0, 1000.0], got 1.5
    """

    memtable_size: int = attrs.field(default=4 << 20, validator=_positive_int(1, 1 << 40))
    """Encoded bytes (keys, values, 16 bytes per version) the memtable holds before it is flushed to a table.
    Default 4 MiB; from 1 byte to 1 TiB.  Memory, table size and replay time at open grow with it."""
    growth_factor: float = attrs.field(default=2.0, validator=_growth)
    """Each table (newest first) is kept more than ``growth_factor - 1`` times all newer tables together; the
    first that is not is merged with the newer tables it needs.  Default 2.0; from 2.0 to 1000.0.  Larger:
    fewer tables, more rewriting."""
    sync: bool = attrs.field(default=True, validator=_bool)
    """Default durability of ``commit()`` and of one-operation writes: True fsyncs the WAL before returning.
    Default True.  ``commit(sync=...)`` overrides it for one commit."""
    block_size: int = attrs.field(default=4096, validator=_positive_int(64, 1 << 24))
    """Target size of a table data block, in bytes.  Default 4096; from 64 bytes to 16 MiB."""
    bloom_bits_per_key: int = attrs.field(default=10, validator=_positive_int(0, 64))
    """Bloom filter bits per key in each table; 0 disables the filter.  Default 10; from 0 to 64."""
    cache_size: int = attrs.field(default=24 << 20, validator=_positive_int(0, 1 << 40))
    """Bytes of memory the block cache keeps decoded table blocks in, shared by every table of the KV (a
    block is charged its size on disk plus 96 bytes per entry for its decoded objects).
    Default 24 MiB; from 0 (no cache) to 1 TiB."""
    max_key_size: int = attrs.field(default=65535, validator=_positive_int(0, MAX_KEY_SIZE_CAP))
    """Largest key accepted, in bytes.  Default and cap 65,535 (``MAX_KEY_SIZE_CAP``)."""
    max_value_size: int = attrs.field(default=64 << 20, validator=_positive_int(0, MAX_VALUE_SIZE_CAP))
    """Largest value accepted, in bytes.  Default 64 MiB; at most ``MAX_VALUE_SIZE_CAP`` (4,294,901,696)."""
    background: bool = attrs.field(default=True, validator=_bool)
    """Flush and merge in two background threads (True, the default); False runs them inline in the
    committing thread, deterministic, for tests."""
    merge_process: bool = attrs.field(default=True, validator=_bool)
    """Write tables (flushes and merges) in a helper process (True, the default: the same Python, started on
    the first flush or merge and kept), so that work does not hold the interpreter lock the application's
    threads need; False writes them in this process.  Only on the real file system; if the helper fails,
    the work runs in this process."""
    recovery: Literal["strict", "salvage"] = attrs.field(default="strict", validator=_recovery)
    """``"strict"`` (the default) refuses a WAL damaged before its durable point with ``CorruptionError``;
    ``"salvage"`` keeps the longest valid prefix of the logs and reports what it dropped."""
    create_if_missing: bool = attrs.field(default=True, validator=_bool)
    """Create the directory and a new database when missing (True, the default); False raises
    ``FileNotFoundError`` instead."""
    read_only: bool = attrs.field(default=False, validator=_bool)
    """Open without writing anything: WAL replayed in memory, a shared lock, writes raise ``ReadOnlyError``.
    Default False."""
