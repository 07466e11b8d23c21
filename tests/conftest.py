"""Fixtures for the real parts: a private Docker engine, an OCI registry, the built images,
and a Dask cluster of lockstep processes.

The engine, the registry and the images are made once per test session, only
when a test asks for them; the cluster once per test module that uses it.
Every process is stopped by the pid the fixture started. When a part is not
installed (or, for dockerd, not root), ``tests.fixtures.support.require``
skips the test locally and fails it in CI (``LOCKSTEP_REQUIRE_ALL=1``). The
helpers behind these fixtures live in ``tests/fixtures/``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.build import Built, build, clone
from tests.fixtures.cluster import Cluster, ClusterOptions, running_cluster
from tests.fixtures.engine import DockerEngine, find_dockerd
from tests.fixtures.registry import OciRegistry, find_registry
from tests.fixtures.support import require


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


@pytest.fixture(scope="session")
def built_platforms(built: Built, tmp_path_factory: pytest.TempPathFactory) -> Built:
    """Every platform of the committed tree, with an OCI layout (the session's cache: the
    amd64 layers are there already)."""
    src = clone(tmp_path_factory.mktemp("platforms") / "lockstep")
    return build(src, src / "out", built.cache, "--layout", str(src / "layout"), platform=())


@pytest.fixture(scope="module")
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """A scheduler and workers of build "a" for the test module (its ``CLUSTER`` options,
    else one worker per executor), with a connected runner client."""
    options = getattr(request.module, "CLUSTER", ClusterOptions())
    with running_cluster(tmp_path_factory.mktemp("cluster"), options) as running:
        yield running
