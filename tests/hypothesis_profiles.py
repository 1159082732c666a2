"""Hypothesis profiles: `ci` (the default, and ./scripts/test.sh's full run)
tries each property as many times as its test asks; `dev` (./scripts/test.sh
--fast sets HYPOTHESIS_PROFILE=dev) a fifth of that, for the edit-test loop.
A test asks through `examples(n)`: an explicit max_examples in @settings
would override any profile."""

from __future__ import annotations

import os

from hypothesis import settings

PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
settings.register_profile("ci", deadline=None, print_blob=True)
settings.register_profile("dev", deadline=None)
settings.load_profile(PROFILE if PROFILE in ("ci", "dev") else "ci")


def examples(n: int) -> int:
    """How many examples a property asking for `n` gets under this profile."""
    return max(10, n // 5) if PROFILE == "dev" else n
