"""References, one grammar: ``HOST[:PORT]/REPO`` targets and ``HOST/NAME@sha256:…`` pins.

A pinned reference can only ever pull the bytes that were released or pushed.
Tags (``:latest``, ``:0.1.0``) can move, so deployment files and job specs
never use them. The host is a DNS name, an IPv4 address or a bracketed IPv6
address, with an optional port; every repository path component follows the
distribution spec's grammar (lowercase, ``._-`` separators).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from lockstep.core.digests import is_digest
from lockstep.core.errors import BadInput

# The distribution spec's repository name grammar, one path component.
_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_HOST = re.compile(r"^(?:\[[0-9a-fA-F:]+\]|[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)(?::[0-9]{1,5})?$")


class ReferenceRefused(ValueError):
    """A reference that is not ``HOST/NAME@sha256:<64 hex>``; its text says why."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` (``name[:port]`` or ``[v6]:port``) is a loopback address."""
    name = host
    if name.startswith("["):
        name = name[1:].split("]", 1)[0]
    elif name.count(":") == 1:
        name = name.rsplit(":", 1)[0]
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def is_host(text: str) -> bool:
    """Whether ``text`` is a registry ``host[:port]`` by the grammar."""
    return bool(_HOST.match(text))


def is_repository(text: str) -> bool:
    """Whether ``text`` is a repository path (``a/b-c``) by the grammar."""
    return bool(text) and all(_COMPONENT.match(part) for part in text.split("/"))


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
    if not host or not is_host(host):
        problem = f"{host!r} is not a registry host[:port]"
    elif not repository:
        problem = "it names no repository after the host"
    elif not is_repository(repository):
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

    def __str__(self) -> str:
        return f"{self.host}/{self.name}@{self.digest}"


def parse_reference(text: str) -> Pinned:
    """``HOST[:PORT]/NAME[:TAG]@sha256:<64 hex>`` (a tag beside the digest is dropped);
    ``ReferenceRefused`` saying what is wrong with it."""
    head, at, digest = text.strip().partition("@")
    host, _, name = head.partition("/")
    tag = ""
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        tag = last.split(":", 1)[1]
        name = name[: len(name) - len(tag) - 1]
    problem = None
    if not host or not is_host(host) or not name:
        problem = "it is not HOST[:PORT]/REPO@sha256:<64 hex>"
    elif not is_repository(name):
        problem = f"repository {name!r} must be lowercase path components (a-z0-9._-)"
    elif not at and tag:
        problem = f"it names the tag :{tag}, which can move"
    elif not at:
        problem = "it has no digest"
    elif not is_digest(digest):
        problem = f"its digest {digest!r} is not sha256:<64 hex>"
    if problem:
        raise ReferenceRefused(problem)
    return Pinned(host, name, digest)


def parse_pinned(reference: str) -> Pinned:
    """``parse_reference`` for an image reference; ``BadInput`` if it is not one or its
    first component does not name a registry host."""
    try:
        pinned = parse_reference(reference)
    except ReferenceRefused as exc:
        raise BadInput(
            f"{reference!r} is not pinned by digest ({exc}); expected HOST/REPO/NAME@sha256:…"
        ) from exc
    if not _names_host(pinned.host):
        raise BadInput(f"{reference!r} names no registry host; expected HOST/REPO/NAME@sha256:…")
    return pinned


def _names_host(first: str) -> bool:
    """A first path component that can only be a host: a port, a dot, or ``localhost``."""
    return is_host(first) and (":" in first or "." in first or first == "localhost")


def looks_like_reference(text: str) -> bool:
    """Whether a text names a registry (``@``, or a first path component that is a host:
    a port, a dot inside it, or ``localhost``) rather than a directory."""
    if "@" in text:
        return True
    first, slash, _rest = text.partition("/")
    if not slash or first in (".", "..") or first.startswith("."):
        return False
    return _names_host(first)


def pin_problem(reference: object) -> str | None:
    """Why ``reference`` is not a digest-pinned image reference, or None if it is."""
    if not isinstance(reference, str) or not reference.strip():
        return "is empty"
    ref = reference.strip()
    if "{{" in ref or "${" in ref:
        return "is a template placeholder, not a reference"
    head, at, digest = ref.partition("@")
    if at:
        if not is_digest(digest):
            return f"has a malformed digest {digest!r} (expected sha256:<64 hex>)"
        return None
    last = head.rsplit("/", 1)[-1]
    if ":" in last:
        return f"uses the tag :{last.split(':', 1)[1]} and no digest"
    return "has no tag and no digest (it means :latest)"
