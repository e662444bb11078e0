"""The names of a database directory's files, in one place (DESIGN.md, "Directory layout").

A directory holds ``meta0`` and ``meta1`` (the double-buffered meta slots,
each written through ``metaN.tmp`` when it does not exist yet), numbered
tables ``NNNNNN.sst``, numbered logs ``NNNNNN.log`` and the ``LOCK`` file.
Numbers are written with at least six digits.  Any other file is not
kvstore's and is never touched.

Invariants:
  - ``parse(table_name(n)) == (n, TABLE)`` and ``parse(log_name(n)) == (n, LOG)`` for every
    ``0 <= n <= record.MAX_COUNTER``;
  - a name with a number past ``record.MAX_COUNTER`` is not kvstore's (counting on from it would
    overflow the u64 counters of the meta).
"""

from __future__ import annotations

import os
import re

from kvstore import record

__all__ = [
    "LOCK_NAME", "LOG", "META_NAMES", "META_TEMP_NAMES", "TABLE", "log_name", "log_path", "parse", "table_name",
    "table_path",
]

#: The lock file every open KV holds (shared by a read-only one).
LOCK_NAME = "LOCK"
#: The two meta slots.
META_NAMES = ("meta0", "meta1")
#: The temporary files a meta slot is first written through.
META_TEMP_NAMES = ("meta0.tmp", "meta1.tmp")
#: The kinds ``parse`` tells apart.
TABLE = "sst"
LOG = "log"

_NUMBERED = re.compile(r"^(\d{6,})\.(sst|log)$")


def table_name(number: int) -> str:
    """The file name of table ``number``: ``000007.sst``."""
    return f"{number:06d}.sst"


def log_name(number: int) -> str:
    """The file name of log ``number``: ``000007.log``."""
    return f"{number:06d}.log"


def table_path(dirpath: str, number: int) -> str:
    """The path of table ``number`` in directory ``dirpath``."""
    return os.path.join(dirpath, table_name(number))


def log_path(dirpath: str, number: int) -> str:
    """The path of log ``number`` in directory ``dirpath``."""
    return os.path.join(dirpath, log_name(number))


def parse(name: str) -> tuple[int, str] | None:
    """``(number, TABLE or LOG)`` for a table or log name kvstore could have written, else None."""
    m = _NUMBERED.match(name)
    if m is None:
        return None
    number = int(m.group(1))
    return (number, m.group(2)) if number <= record.MAX_COUNTER else None
