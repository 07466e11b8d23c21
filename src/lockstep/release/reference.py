"""Where a release goes (``HOST[:PORT]/REPO``) and image references pinned by digest.

A pinned reference is ``HOST/REPO/NAME@sha256:<64 hex>``: it can only ever
pull the bytes that were released. Tags (``:latest``, ``:0.1.0``) can move,
so deployment files never use them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lockstep.core.distribution import is_loopback
from lockstep.core.errors import BadInput

__all__ = [
    "DIGEST",
    "Pinned",
    "Target",
    "is_loopback",
    "parse_pinned",
    "parse_target",
    "pin_problem",
]

DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
# The distribution spec's repository name grammar, one path component.
_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_HOST = re.compile(r"^(?:\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+)(?::[0-9]{1,5})?$")


@dataclass(frozen=True)
class Target:
    """A registry and a repository path under it: ``127.0.0.1:5000/team``."""

    host: str
    repository: str

    def name(self, image: str) -> str:
        """The repository name of one image under the target: ``team/lockstep-worker``."""
        return f"{self.repository}/{image}"

    def pinned(self, image: str, digest: str) -> str:
        """``HOST/REPO/NAME@sha256:…``."""
        return f"{self.host}/{self.name(image)}@{digest}"

    def __str__(self) -> str:
        return f"{self.host}/{self.repository}"


def parse_target(text: str) -> Target:
    """Parse ``HOST[:PORT]/REPO``; ``BadInput`` saying what a good one looks like."""
    host, _, repository = text.strip().partition("/")
    problem = None
    if not host or not _HOST.match(host):
        problem = f"{host!r} is not a registry host[:port]"
    elif not repository:
        problem = "it names no repository after the host"
    elif not all(_COMPONENT.match(part) for part in repository.split("/")):
        problem = f"repository {repository!r} must be lowercase path components (a-z0-9._-)"
    if problem:
        raise BadInput(
            f"--registry {text!r}: {problem}; use HOST[:PORT]/REPO, "
            "e.g. registry.example.com/sim or 127.0.0.1:5000/team"
        )
    return Target(host, repository)


@dataclass(frozen=True)
class Pinned:
    """A reference split into registry host, repository name and digest."""

    host: str
    name: str
    digest: str


def parse_pinned(reference: str) -> Pinned:
    """Split ``HOST/NAME@sha256:…``; ``BadInput`` if it is not pinned or has no host."""
    head, at, digest = reference.partition("@")
    host, _, name = head.partition("/")
    if not at or not DIGEST.match(digest):
        raise BadInput(f"{reference!r} is not pinned by digest (NAME@sha256:<64 hex>)")
    if not name or not ("." in host or ":" in host or host == "localhost"):
        raise BadInput(f"{reference!r} names no registry host; expected HOST/REPO/NAME@sha256:…")
    return Pinned(host, name.rsplit(":", 1)[0] if ":" in name.rsplit("/", 1)[-1] else name, digest)


def pin_problem(reference: object) -> str | None:
    """Why ``reference`` is not a digest-pinned image reference, or None if it is."""
    if not isinstance(reference, str) or not reference.strip():
        return "is empty"
    ref = reference.strip()
    if "{{" in ref or "${" in ref:
        return "is a template placeholder, not a reference"
    head, at, digest = ref.partition("@")
    if at:
        if not DIGEST.match(digest):
            return f"has a malformed digest {digest!r} (expected sha256:<64 hex>)"
        return None
    last = head.rsplit("/", 1)[-1]
    if ":" in last:
        return f"uses the tag :{last.split(':', 1)[1]} and no digest"
    return "has no tag and no digest (it means :latest)"
