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
    """Tunables of one KV.  Change one with ``attrs.evolve(config, field=value)``.

    >>> Config(memtable_size=1 << 20).block_size
    4096
    >>> Config(growth_factor=1.5)
    Traceback (most recent call last):
    ...
    ValueError: Config.growth_factor must be in [2.0, 1000.0], got 1.5
    """

    #: Encoded bytes (keys, values, per-entry overhead) the memtable holds before it is flushed.
    memtable_size: int = attrs.field(default=4 << 20, validator=_positive_int(1, 1 << 40))
    #: Tables i and i+1 (newest first) merge when size[i+1] <= (growth_factor - 1) * size[i].
    growth_factor: float = attrs.field(default=2.0, validator=_growth)
    #: Default durability of commit(): True fsyncs the WAL before returning.
    sync: bool = attrs.field(default=True, validator=_bool)
    #: Target size of a table data block, in bytes.
    block_size: int = attrs.field(default=4096, validator=_positive_int(64, 1 << 24))
    #: Bloom filter bits per key; 0 disables the filter.
    bloom_bits_per_key: int = attrs.field(default=10, validator=_positive_int(0, 64))
    #: Bytes of decoded table blocks kept in the block cache.
    cache_size: int = attrs.field(default=8 << 20, validator=_positive_int(0, 1 << 40))
    #: Largest key accepted, in bytes.
    max_key_size: int = attrs.field(default=65535, validator=_positive_int(0, MAX_KEY_SIZE_CAP))
    #: Largest value accepted, in bytes.
    max_value_size: int = attrs.field(default=64 << 20, validator=_positive_int(0, MAX_VALUE_SIZE_CAP))
    #: Flush and merge in a background thread (this version runs them inline either way).
    background: bool = attrs.field(default=True, validator=_bool)
    #: "strict" refuses a damaged WAL before its durable point; "salvage" keeps the longest valid prefix.
    recovery: Literal["strict", "salvage"] = attrs.field(default="strict", validator=_recovery)
    #: Create the directory and a new database when missing.
    create_if_missing: bool = attrs.field(default=True, validator=_bool)
    #: Open without writing anything (shared lock, WAL replayed in memory).
    read_only: bool = attrs.field(default=False, validator=_bool)
