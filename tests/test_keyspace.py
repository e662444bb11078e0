"""kvstore.keyspace: the stored keys of the KV's own space and of collections keep each space's order and
never meet."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvstore.errors import CorruptionError
from kvstore.keyspace import DEFAULT_END, check_name, prefix_of, split, stored, successor, user_key

KEYS = st.binary(max_size=8) | st.builds(lambda rest: b"\xff" + rest, st.binary(max_size=6))
NAMES = st.text(min_size=1, max_size=6).filter(lambda n: len(n.encode("utf-8", "surrogatepass")) <= 255
                                               and not any(0xD800 <= ord(c) <= 0xDFFF for c in n))
SPACES = st.none() | NAMES


def _stored(space: str | None, key: bytes) -> bytes:
    return stored(key, None if space is None else prefix_of(space))


@given(SPACES, KEYS, KEYS)
def test_order_within_a_space_is_kept(space: str | None, a: bytes, b: bytes) -> None:
    assert (a < b) == (_stored(space, a) < _stored(space, b))
    assert (a == b) == (_stored(space, a) == _stored(space, b))


@given(SPACES, KEYS)
def test_every_stored_key_splits_back_and_lies_inside_its_space(space: str | None, key: bytes) -> None:
    s = _stored(space, key)
    assert split(s) == (space, key)
    if space is None:
        assert s < DEFAULT_END and user_key(s) == key and s != b"\xff"
    else:
        assert prefix_of(space) <= s < successor(prefix_of(space))


@given(SPACES, KEYS, SPACES, KEYS)
def test_keys_of_two_spaces_never_meet(s1: str | None, k1: bytes, s2: str | None, k2: bytes) -> None:
    if s1 != s2:
        assert _stored(s1, k1) != _stored(s2, k2)


@given(NAMES, NAMES, KEYS)
def test_a_collection_range_holds_only_its_own_keys(n1: str, n2: str, key: bytes) -> None:
    p1 = prefix_of(n1)
    s = _stored(n2, key)
    assert (p1 <= s < successor(p1)) == (n1 == n2)
    assert not (p1 <= stored(key) < successor(p1))  # nor any key of the KV itself


def test_worked_example() -> None:
    assert stored(b"apple") == b"apple"
    assert stored(b"\xff\x01") == b"\xff\x00\x01"
    assert stored(b"k", prefix_of("users")).hex(" ") == "ff 05 75 73 65 72 73 6b"
    assert successor(prefix_of("users")) == b"\xff\x05usert"
    assert split(b"\xff\x02\xc3\xa9x") == ("\u00e9", b"x")


@pytest.mark.parametrize("bad", [b"\xff", b"\xff\x05us", b"\xff\x01\xff"])
def test_a_stored_key_no_mapping_makes_is_corruption(bad: bytes) -> None:
    with pytest.raises(CorruptionError):
        split(bad, "t.sst", 40)


@pytest.mark.parametrize(("name", "error"), [(b"x", TypeError), (None, TypeError), (1, TypeError),
                                             ("", ValueError), ("x" * 256, ValueError), ("\u00e9" * 128, ValueError),
                                             ("\ud800", ValueError)])
def test_bad_names_are_refused(name: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        check_name(name)


def test_names_up_to_255_bytes_are_accepted() -> None:
    assert check_name("x" * 255) == "x" * 255
    assert check_name("\u00e9" * 127) == "\u00e9" * 127
    assert len(prefix_of("x" * 255)) == 257


def test_design_doc_worked_examples_are_what_the_mapping_stores() -> None:
    import ast
    import pathlib
    import re

    text = (pathlib.Path(__file__).parent.parent / "DESIGN.md").read_text(encoding="utf-8")
    section = text[text.index("## Collections") : text.index("## The asyncio API")]
    rows = re.findall(r"^\| (the KV's own|`[^`]+`) \| `([^`]*)` \| `([0-9a-f ]+)` \|$", section, re.M)
    assert len(rows) == 6
    for space, key, hexed in rows:
        name = None if space == "the KV's own" else space.strip("`")
        raw = ast.literal_eval('b"' + key + '"')
        assert stored(raw, None if name is None else prefix_of(name)).hex(" ") == hexed, (space, key)
        assert split(bytes.fromhex(hexed)) == (name, raw)
