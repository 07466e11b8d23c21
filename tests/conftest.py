"""Session fixtures for the real parts: a private Docker engine and an OCI registry.

Both are started once per test session, only when a test asks for them, and
stopped at the end by the pid of the process the fixture started. When the
part is not installed (or, for dockerd, not root), ``tests.support.require``
skips the test locally and fails it in CI (``LOCKSTEP_REQUIRE_ALL=1``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# Test modules import helpers as ``tests.…``; the ``pytest`` script does not put
# the repository root on sys.path (``python -m pytest`` does), so do it here.
_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from tests.engine import DockerEngine, find_dockerd  # noqa: E402
from tests.registry import OciRegistry, find_registry  # noqa: E402
from tests.support import require  # noqa: E402


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[DockerEngine]:
    """A private dockerd: ``.client`` (docker SDK), ``.host`` (DOCKER_HOST url),
    ``.cli(*args)`` / ``.env()`` for the docker CLI, ``.log_tail()``."""
    require(find_dockerd() is not None, "dockerd is not installed (Debian package docker.io)")
    require(os.geteuid() == 0, "dockerd needs root")
    engine = DockerEngine.start()
    try:
        yield engine
    finally:
        engine.stop()


@pytest.fixture(scope="session")
def oci_registry() -> Iterator[OciRegistry]:
    """A private docker-registry on 127.0.0.1: ``.address`` ("127.0.0.1:PORT"),
    ``.url``, ``.stop(kill=…)`` and ``.start()`` (same port, same storage)."""
    require(find_registry() is not None,
            "docker-registry is not installed (Debian package docker-registry)")
    registry = OciRegistry.start_new()
    try:
        yield registry
    finally:
        registry.close()


@pytest.fixture
def registry_running(oci_registry: OciRegistry) -> OciRegistry:
    """``oci_registry``, restarted first if an earlier test left it stopped."""
    oci_registry.start()
    return oci_registry
