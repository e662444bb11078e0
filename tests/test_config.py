"""Config (docs/tuning.md, the API reference): defaults, validation naming the field, frozen, attrs.evolve."""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from kvstore import Config
from kvstore.config import MAX_KEY_SIZE_CAP, MAX_VALUE_SIZE_CAP

DEFAULTS: list[tuple[str, object]] = [
    ("memtable_size", 4 * 1024 * 1024),
    ("growth_factor", 2.0),
    ("sync", True),
    ("block_size", 4096),
    ("bloom_bits_per_key", 10),
    ("cache_size", 24 * 1024 * 1024),
    ("max_key_size", 65535),
    ("max_value_size", 64 * 1024 * 1024),
    ("background", True),
    ("merge_process", True),
    ("recovery", "strict"),
    ("create_if_missing", True),
    ("read_only", False),
]


@pytest.mark.parametrize(("field", "default"), DEFAULTS, ids=[f for f, _ in DEFAULTS])
def test_config_default_is_the_documented_one(field: str, default: object) -> None:
    assert getattr(Config(), field) == default


def test_config_has_exactly_the_documented_fields() -> None:
    assert {f.name for f in attrs.fields(Config)} == {f for f, _ in DEFAULTS}


INVALID: list[tuple[str, Any]] = [
    ("memtable_size", 0),
    ("memtable_size", -1),
    ("growth_factor", 1.99),
    ("growth_factor", 1.0),
    ("growth_factor", 0.0),
    ("growth_factor", float("nan")),
    ("block_size", 0),
    ("block_size", -4096),
    ("bloom_bits_per_key", -1),
    ("cache_size", -1),
    ("max_key_size", -1),
    ("max_key_size", MAX_KEY_SIZE_CAP + 1),
    ("max_value_size", -1),
    ("max_value_size", MAX_VALUE_SIZE_CAP + 1),
    ("recovery", "lenient"),
    ("recovery", ""),
]


@pytest.mark.parametrize(("field", "value"), INVALID, ids=[f"{f}={v!r}" for f, v in INVALID])
def test_config_invalid_value_raises_value_error_naming_the_field(field: str, value: Any) -> None:
    with pytest.raises(ValueError, match=field):
        Config(**{field: value})


WRONG_TYPE: list[tuple[str, Any]] = [
    ("memtable_size", "4MiB"),
    ("memtable_size", 1.5),
    ("growth_factor", "2"),
    ("sync", 1),
    ("sync", "yes"),
    ("block_size", None),
    ("background", 0),
    ("merge_process", "yes"),
    ("create_if_missing", None),
    ("read_only", "no"),
    ("recovery", None),
]


@pytest.mark.parametrize(("field", "value"), WRONG_TYPE, ids=[f"{f}={v!r}" for f, v in WRONG_TYPE])
def test_config_wrong_type_is_rejected_naming_the_field(field: str, value: Any) -> None:
    # a wrong type is a TypeError or ValueError, never silently stored
    with pytest.raises((TypeError, ValueError), match=field):
        Config(**{field: value})


VALID: list[tuple[str, Any]] = [
    ("growth_factor", 2.0),
    ("growth_factor", 3),
    ("growth_factor", 10.0),
    ("bloom_bits_per_key", 0),
    ("cache_size", 0),
    ("max_key_size", MAX_KEY_SIZE_CAP),
    ("max_value_size", MAX_VALUE_SIZE_CAP),
    ("recovery", "salvage"),
    ("sync", False),
    ("read_only", True),
    ("memtable_size", 1),
]


@pytest.mark.parametrize(("field", "value"), VALID, ids=[f"{f}={v!r}" for f, v in VALID])
def test_config_valid_value_is_kept_as_given(field: str, value: Any) -> None:
    assert getattr(Config(**{field: value}), field) == value


def test_config_caps_fit_the_on_disk_length_fields() -> None:
    assert MAX_KEY_SIZE_CAP <= 0xFFFF  # u16 key length in blocks and WAL entries
    assert MAX_VALUE_SIZE_CAP < 0xFFFF_FFFF  # u32 value length


@pytest.mark.parametrize("field", [f for f, _ in DEFAULTS], ids=[f for f, _ in DEFAULTS])
def test_config_is_frozen(field: str) -> None:
    config = Config()
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        setattr(config, field, getattr(config, field))


def test_config_evolve_changes_one_field_and_keeps_the_rest() -> None:
    base = Config(block_size=1024, sync=False)
    changed = attrs.evolve(base, memtable_size=1 << 16)
    assert changed.memtable_size == 1 << 16
    assert changed.block_size == 1024 and changed.sync is False
    assert base.memtable_size == 4 << 20


def test_config_evolve_validates() -> None:
    with pytest.raises(ValueError, match="growth_factor"):
        attrs.evolve(Config(), growth_factor=1.5)


def test_config_is_hashable_and_compares_by_value() -> None:
    assert Config(block_size=512) == Config(block_size=512)
    assert Config(block_size=512) != Config()
    assert hash(Config(block_size=512)) == hash(Config(block_size=512))
