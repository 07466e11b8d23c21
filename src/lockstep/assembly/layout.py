"""The image's layout: where things live in it, who runs it, its env, labels and names.

Every fact about the image's shape that more than one step needs is defined
here once: the interpreter and site directory (the app and third-party
layers, the staged python, console scripts), the non-root user (the base's
``/etc/passwd`` and the config's ``User``), the environment, the labels, and
how each role's image and archive are named.
"""

from __future__ import annotations

from collections.abc import Mapping

from lockstep.core import settings
from lockstep.core.digests import short_id
from lockstep.manifest import PLATFORM_PATH, PYTHON_LOCK_PATH

PYTHON = "usr/bin/python3.11"  # the image's interpreter, relative to its root
PYTHON_PACKAGE = "python3.11-minimal"  # the Debian package that ships it
SITE_DIR = "usr/local/lib/python3.11/dist-packages"
BIN_DIR = "usr/local/bin"
CA_BUNDLE = "etc/ssl/certs/ca-certificates.crt"
MANIFEST_FILE = settings.MANIFEST_PATH.lstrip("/")  # the build manifest, in the top layer
# beside it, what a bundle is locked against (manifest.BESIDE)
PYTHON_LOCK_FILE = PYTHON_LOCK_PATH.lstrip("/")
PLATFORM_FILE = PLATFORM_PATH.lstrip("/")

NONROOT_UID = 65532
NONROOT = "nonroot"
USER = f"{NONROOT_UID}:{NONROOT_UID}"
WORKDIR = "/tmp"


def image_env(role: str) -> dict[str, str]:
    """The environment every process of the ``role`` image starts with."""
    return {
        "HOME": "/tmp",
        "LANG": "C.UTF-8",
        settings.ROLE: role,
        "PATH": f"/{BIN_DIR}:/usr/bin",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "SSL_CERT_FILE": f"/{CA_BUNDLE}",
    }


def image_name(project_name: str, role: str) -> str:
    """One role's image (and registry repository) name: ``lockstep-worker``."""
    return f"{project_name}-{role}"


def ref_name(version: str, short_id: str) -> str:
    """The tag of an unreleased build's archives: ``0.1.0-<12 hex of the build id>``."""
    return f"{version}-{short_id}"


def archive_name(
    project_name: str, role: str, version: str, short_id: str, architecture: str = ""
) -> str:
    """One role's name in its archive, both as the OCI index's ``ref.name`` (what podman
    and skopeo name a loaded image by) and as docker's ``RepoTags``:
    ``lockstep-worker:0.1.0-<12 hex>``. Each role has its own, so loading both keeps both.
    In a build of several platforms each platform's image adds its architecture
    (``…-<12 hex>-arm64``): docker keeps one architecture per tag, so loading both keeps
    both; the role's image index keeps the plain name."""
    tag = ref_name(version, short_id) + platform_suffix(architecture, 2 if architecture else 1)
    return f"{image_name(project_name, role)}:{tag}"


def platform_suffix(architecture: str, platforms: int) -> str:
    """What a project of several ``platforms`` adds to each image's tag and files' names:
    ``-<arch>`` (``worker-arm64.tar``); nothing in a project of one."""
    return f"-{architecture}" if platforms > 1 else ""


EPOCH = "1970-01-01T00:00:00Z"  # ``created`` of an unstamped image (stamped: the commit time)
BASE_NAME = "base"  # the base-only image: ``lockstep-base``


def base_labels(
    *, project_name: str, base_digest: str, debian_lock: str, created: str
) -> dict[str, str]:
    """The labels of the base-only image value (the Debian base layer and nothing else)."""
    return {
        "org.opencontainers.image.created": created,
        "org.opencontainers.image.description": (
            f"Debian bookworm base of {project_name} images, from the Debian lock {debian_lock}"
        ),
        "org.opencontainers.image.title": image_name(project_name, BASE_NAME),
        "org.opencontainers.image.version": short_id(base_digest),
    }


def labels(
    *,
    project_name: str,
    version: str,
    source_url: str,
    role: str,
    build_id: str,
    executors: tuple[str, ...],
    revision: str | None,
    created: str = EPOCH,
    description: str = "",
    licenses: str = "",
    base_name: str = "",
    base_digest: str = "",
) -> dict[str, str]:
    """The config labels (also the manifest's annotations) of one role's image.

    ``created`` is the epoch, or the stamped commit's time (never the clock), so
    a rebuild of the same commit has the same bytes. ``base_name``/``base_digest``
    name the base-only image value (``org.opencontainers.image.base.*``)."""
    out = {
        "io.lockstep.build-id": build_id,
        "io.lockstep.executors": ",".join(executors),
        "io.lockstep.role": role,
        "org.opencontainers.image.created": created,
        "org.opencontainers.image.title": image_name(project_name, role),
        "org.opencontainers.image.version": version,
    }
    if source_url:
        out["org.opencontainers.image.source"] = source_url
    if revision:
        out["org.opencontainers.image.revision"] = revision
    if description:
        out["org.opencontainers.image.description"] = f"{description} ({role} image)"
    if licenses:
        out["org.opencontainers.image.licenses"] = licenses
    if base_name:
        out["org.opencontainers.image.base.name"] = base_name
    if base_digest:
        out["org.opencontainers.image.base.digest"] = base_digest
    return out


def role_of(labels_: Mapping[str, str]) -> str | None:
    """The role an image's labels name."""
    return labels_.get("io.lockstep.role")
