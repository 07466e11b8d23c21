"""Session fixtures for the real parts: a private Docker engine and an OCI registry.

Both are started once per test session, only when a test asks for them, and
stopped at the end by the pid of the process the fixture started. When the
part is not installed (or, for dockerd, not root), ``tests.support.require``
skips the test locally and fails it in CI (``LOCKSTEP_REQUIRE_ALL=1``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.buildfix import Built, build, clone
from tests.engine import DockerEngine, find_dockerd
from tests.registry import OciRegistry, find_registry
from tests.support import require


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
    require(
        find_registry() is not None,
        "docker-registry is not installed (Debian package docker-registry)",
    )
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


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's lockstep cache: ``$LOCKSTEP_CACHE_DIR`` if set, else a fresh one."""
    env = os.environ.get("LOCKSTEP_CACHE_DIR")
    return Path(env) if env else tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Built:
    """Both real images, built once per session by the CLI from a clone of the committed tree."""
    src = clone(tmp_path_factory.mktemp("first") / "lockstep")
    return build(src, src / "out", cache_dir)
