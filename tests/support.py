"""Test helpers shared by every module.

``require`` skips a test whose real part (engine, registry, mirror, Bazel) is
absent; with ``LOCKSTEP_REQUIRE_ALL=1`` (set by ``.ci/run``) it fails instead,
so CI runs every test.
"""

from __future__ import annotations

import os

import pytest

REQUIRE_ALL = os.environ.get("LOCKSTEP_REQUIRE_ALL") == "1"


def require(condition: bool, reason: str) -> None:
    """Skip (locally) or fail (in CI) unless ``condition`` holds."""
    if condition:
        return
    if REQUIRE_ALL:
        pytest.fail(f"required part missing (LOCKSTEP_REQUIRE_ALL=1): {reason}", pytrace=False)
    pytest.skip(reason)
