"""Shared test configuration: Hypothesis settings profiles.

``ci`` (the default) is deterministic and sized for a two-core CI machine;
``long`` runs many more, random examples; ``quick`` is ``ci`` without
shrinking (a failure as first found).  Pick one with the environment
variable ``HYPOTHESIS_PROFILE`` (``HYPOTHESIS_PROFILE=long python3 -m pytest``).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, Phase, settings

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
