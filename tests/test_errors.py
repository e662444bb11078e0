"""The closed set of exceptions of docs/errors.md: hierarchy, docstrings, and CorruptionError's fields."""

from __future__ import annotations

import inspect
import pickle

import pytest

import kvstore
from kvstore import errors

# (class, the bases docs/errors.md gives it)
HIERARCHY: list[tuple[type[BaseException], tuple[type[BaseException], ...]]] = [
    (errors.KVError, (Exception,)),
    (errors.CorruptionError, (errors.KVError,)),
    (errors.BadChecksumError, (errors.CorruptionError,)),
    (errors.CorruptSSTableError, (errors.CorruptionError,)),
    (errors.UnsupportedFormatError, (errors.KVError,)),
    (errors.KeyOrValueTooLargeError, (errors.KVError, ValueError)),
    (errors.TxClosedError, (errors.KVError,)),
    (errors.ConflictError, (errors.KVError,)),
    (errors.ClosedError, (errors.KVError, ValueError)),
    (errors.LockedError, (errors.KVError, OSError)),
    (errors.FailedError, (errors.KVError, OSError)),
    (errors.InvalidCursorError, (errors.KVError,)),
    (errors.ReadOnlyError, (errors.KVError, PermissionError)),
]
IDS = [cls.__name__ for cls, _ in HIERARCHY]


@pytest.mark.parametrize(("cls", "bases"), HIERARCHY, ids=IDS)
def test_error_subclasses_the_documented_bases(cls: type[BaseException], bases: tuple[type, ...]) -> None:
    for base in bases:
        assert issubclass(cls, base), (cls, base)
    assert issubclass(cls, errors.KVError)


@pytest.mark.parametrize(("cls", "bases"), HIERARCHY, ids=IDS)
def test_error_is_re_exported_from_the_package(cls: type[BaseException], bases: tuple[type, ...]) -> None:
    assert getattr(kvstore, cls.__name__) is cls
    assert cls.__name__ in kvstore.__all__
    assert cls.__name__ in errors.__all__


def test_errors_module_defines_exactly_the_documented_set() -> None:
    defined = {name for name, obj in vars(errors).items()
               if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == errors.__name__}
    assert defined == {cls.__name__ for cls, _ in HIERARCHY}
    assert set(errors.__all__) == defined


@pytest.mark.parametrize("cls", [cls for cls, _ in HIERARCHY], ids=IDS)
def test_error_docstring_starts_with_raised_when(cls: type[BaseException]) -> None:
    assert cls.__doc__ is not None
    assert cls.__doc__.startswith("Raised when"), cls.__doc__


@pytest.mark.parametrize("cls", [errors.CorruptionError, errors.BadChecksumError, errors.CorruptSSTableError],
                         ids=["CorruptionError", "BadChecksumError", "CorruptSSTableError"])
def test_corruption_error_carries_path_offset_and_reason(cls: type[errors.CorruptionError]) -> None:
    exc = cls("/db/000007.sst", 4096, "block checksum mismatch")
    assert exc.path == "/db/000007.sst"
    assert exc.offset == 4096
    assert exc.reason == "block checksum mismatch"
    assert "/db/000007.sst" in str(exc)
    assert "4096" in str(exc)


def test_corruption_error_accepts_a_path_like() -> None:
    import pathlib

    exc = errors.CorruptionError(pathlib.Path("/db/meta0"), 0, "bad")
    assert exc.path == "/db/meta0"
    assert isinstance(exc.path, str)


@pytest.mark.parametrize("cls", [errors.CorruptionError, errors.BadChecksumError, errors.CorruptSSTableError],
                         ids=["CorruptionError", "BadChecksumError", "CorruptSSTableError"])
def test_corruption_error_survives_pickling(cls: type[errors.CorruptionError]) -> None:
    exc = cls("/db/000003.log", 57, "frame checksum mismatch")
    back = pickle.loads(pickle.dumps(exc))
    assert type(back) is cls
    assert (back.path, back.offset, back.reason) == (exc.path, exc.offset, exc.reason)
    assert str(back) == str(exc)


@pytest.mark.parametrize("cls", [errors.LockedError, errors.FailedError],
                         ids=["LockedError", "FailedError"])
def test_os_error_subclasses_keep_errno_and_pickle(cls: type[OSError]) -> None:
    import errno

    exc = cls(errno.EAGAIN, "locked", "/db/LOCK")
    assert exc.errno == errno.EAGAIN
    assert exc.filename == "/db/LOCK"
    back = pickle.loads(pickle.dumps(exc))
    assert type(back) is cls
    assert back.errno == errno.EAGAIN


def test_value_error_subclasses_are_caught_as_value_error() -> None:
    with pytest.raises(ValueError):
        raise errors.KeyOrValueTooLargeError("key too large")
    with pytest.raises(ValueError):
        raise errors.ClosedError("closed")
