"""Shared test configuration: Hypothesis settings profiles, and what a long run may keep alive.

``ci`` (the default) is deterministic and sized for a two-core CI machine;
``long`` runs many more, random examples; ``quick`` is ``ci`` without
shrinking (a failure as first found).  Pick one with the environment
variable ``HYPOTHESIS_PROFILE`` (``HYPOTHESIS_PROFILE=long python3 -m pytest``).

A Hypothesis test is one pytest test however many examples it runs, so
whatever one example leaves behind lives until the last: a long crash-machine
run grew by gigabytes.  Two things kept examples alive, and both are bounded
here (``tests/test_crash.py`` checks each bound):

- pytest's log capture keeps every record of a test, and a record keeps its
  arguments: kvstore logs the ``OSError`` that stopped a KV, whose traceback
  holds the frames, so the KV, its ``SimFS`` and every byte written to it.
  Each record is formatted when it is made and keeps only its text.
- Hypothesis keeps the last ``CACHE_SIZE`` test cases (10,000), each with
  every choice it drew: a 200-step stateful example is thousands.  It only
  saves re-running a choice sequence already run (shrinking tries many
  twice), so a smaller one costs at most a re-run, and changes no rule,
  step or check.
"""

from __future__ import annotations

import logging
import os
import traceback
from typing import Any

from hypothesis import HealthCheck, Phase, settings
from hypothesis.internal.conjecture import engine

#: test cases Hypothesis keeps (its default is 10,000: about 0.7 MB each for the crash machine)
HYPOTHESIS_CACHE_SIZE = 500

settings.register_profile(
    "ci",
    max_examples=100,
    stateful_step_count=200,
    derandomize=True,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "long",
    max_examples=1000,
    stateful_step_count=200,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
# ``ci`` without shrinking: the first failure as found, for a quick look while debugging
settings.register_profile("quick", settings.get_profile("ci"), phases=[Phase.explicit, Phase.reuse, Phase.generate])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# read when each test's runner is made; a Hypothesis without it fails here, not silently
assert isinstance(engine.CACHE_SIZE, int)
engine.CACHE_SIZE = min(engine.CACHE_SIZE, HYPOTHESIS_CACHE_SIZE)

_make_record = logging.getLogRecordFactory()


def _text_only_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
    """A log record with its message and traceback already formatted, holding no argument or traceback
    object (the output of any formatter is unchanged: it formats ``exc_text`` when it is set)."""
    record = _make_record(*args, **kwargs)
    if record.args:
        record.msg = record.getMessage()
        record.args = ()
    if record.exc_info:
        record.exc_text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
        record.exc_info = None
    return record


logging.setLogRecordFactory(_text_only_record)
