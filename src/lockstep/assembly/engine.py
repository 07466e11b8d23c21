"""Loading an image archive into a local Docker engine (the docker SDK)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lockstep.assembly import ocidir
from lockstep.assembly.oci import read_archive
from lockstep.core.errors import BadInput, CheckFailed, ServiceFailed
from lockstep.core.platforms import Platform


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


def load_archive(
    path: Path,
    base_url: str | None = None,
    image: str | None = None,
    platform: Platform | None = None,
) -> str:
    """Load the archive at ``path`` (or, for a layout directory, its ``image``: a ref name or
    a role; of an image index, ``platform``'s image, the host's by default) into the
    engine; the image ID, checked against our config digest."""
    if path.is_dir():
        found = ocidir.read_image(path, image, platform)
        data, expected = ocidir.docker_archive(path, found), found.image.config_digest
    else:
        if image is not None:
            raise BadInput(f"{path}: --image picks an image of a layout directory, not an archive")
        expected = read_archive(path).config_digest
        data = path.read_bytes()
    client = docker_client(base_url)
    import docker

    try:
        images = client.images.load(data)
    except docker.errors.APIError as exc:
        raise ServiceFailed(f"{path}: the Docker engine refused the archive ({exc})") from exc
    ids = {loaded.id for loaded in images}
    if ids != {expected}:
        raise CheckFailed(f"{path}: docker loaded {sorted(ids)}, expected image ID {expected}")
    return expected
