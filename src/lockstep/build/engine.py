"""Loading an image archive into a local Docker engine (the docker SDK)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lockstep.build.oci import read_archive
from lockstep.errors import BadInput, CheckFailed, ServiceFailed


def docker_client(base_url: str | None = None) -> Any:
    """A docker SDK client for ``base_url`` (default: ``$DOCKER_HOST`` or the local socket)."""
    try:
        import docker
    except ImportError as exc:
        raise BadInput("the docker SDK is not installed; install lockstep[build]") from exc
    try:
        client = docker.DockerClient(base_url=base_url) if base_url else docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        raise ServiceFailed(
            f"no Docker engine answered ({exc}); start dockerd or set DOCKER_HOST"
        ) from exc
    return client


def load_archive(path: Path, base_url: str | None = None) -> str:
    """Load ``path`` into the engine; return the image ID, checked against our config digest."""
    archive = read_archive(path)
    client = docker_client(base_url)
    import docker

    try:
        with path.open("rb") as f:
            images = client.images.load(f.read())
    except docker.errors.APIError as exc:
        raise ServiceFailed(f"{path}: the Docker engine refused the archive ({exc})") from exc
    ids = {image.id for image in images}
    if ids != {archive.config_digest}:
        raise CheckFailed(
            f"{path}: docker loaded {sorted(ids)}, expected image ID {archive.config_digest}"
        )
    return archive.config_digest
