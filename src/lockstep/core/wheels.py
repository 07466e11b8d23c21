"""Wheels as plain facts: file names and their tags, ``RECORD`` rows and hashes, member paths.

Pure functions, standard library only: the build (``lockstep bundle lock``),
the runner (preflight) and the worker (``lockstep.runtime.bundle_env``, which
unpacks wheels itself: no pip in the image) read wheels through these, so all
three agree on what a wheel is and where its files go.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import re
from dataclasses import dataclass

# PEP 427: {distribution}-{version}(-{build tag})?-{python tag}-{abi tag}-{platform tag}.whl
_WHEEL = re.compile(
    r"^(?P<name>[A-Za-z0-9_.]+)-(?P<version>[A-Za-z0-9_.!+]+)"
    r"(-(?P<build>\d[A-Za-z0-9_.]*))?-(?P<python>[A-Za-z0-9_.]+)-(?P<abi>[A-Za-z0-9_.]+)"
    r"-(?P<platform>[A-Za-z0-9_.]+)\.whl$"
)
_NORMALIZE = re.compile(r"[-_.]+")


def normalize_name(name: str) -> str:
    """PEP 503 normalised project name: ``Foo_Bar.baz`` -> ``foo-bar-baz``."""
    return _NORMALIZE.sub("-", name).lower()


@dataclass(frozen=True)
class WheelName:
    """A wheel's file name, parsed."""

    filename: str
    project: str  # normalised
    version: str
    tags: frozenset[str]  # every ``python-abi-platform`` the name expands to

    def fits(self, compatible: object) -> bool:
        """Whether any of the wheel's tags is in ``compatible`` (a set or list of tags)."""
        return any(t in compatible for t in self.tags)  # type: ignore[operator]


def parse_wheel_name(filename: str) -> WheelName | None:
    """The parsed name of a ``.whl`` file, or None if ``filename`` is not one."""
    found = _WHEEL.match(filename)
    if not found:
        return None
    tags = frozenset(
        f"{py}-{abi}-{plat}"
        for py in found["python"].split(".")
        for abi in found["abi"].split(".")
        for plat in found["platform"].split(".")
    )
    return WheelName(filename, normalize_name(found["name"]), found["version"], tags)


def record_hash(data: bytes) -> str:
    """A ``RECORD`` hash field: ``sha256=<urlsafe base64, no padding>``."""
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def parse_record(data: bytes) -> list[tuple[str, str, str]]:
    """``RECORD`` rows ``(path, hash, size)``; ``ValueError`` if it is not a CSV of those."""
    try:
        text = data.decode()
    except UnicodeDecodeError as exc:
        raise ValueError(f"RECORD is not UTF-8 ({exc})") from None
    rows = []
    for row in csv.reader(io.StringIO(text)):
        if not row:
            continue
        if len(row) != 3:
            raise ValueError(f"RECORD row {row!r} does not have 3 fields")
        rows.append((row[0], row[1], row[2]))
    return rows


def unsafe_member(name: str) -> str:
    """Why ``name`` (a zip member) may not be unpacked; ``""`` if it is a plain relative path."""
    if not name or "\0" in name or "\\" in name:
        return "has an empty name, a NUL byte or a backslash"
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return "is an absolute path"
    parts = name.rstrip("/").split("/")
    if any(p in ("", ".", "..") for p in parts):
        return "has an empty, '.' or '..' path part (it would leave the install directory)"
    return ""


def installed_path(member: str, data_dir: str) -> str | None:
    """Where a wheel member goes in a flat site directory; None if it is not installed.

    Top-level members (packages, the ``.dist-info``) go as they are;
    ``NAME.data/purelib`` and ``platlib`` are merged into the site directory;
    ``scripts``, ``headers`` and ``data`` are not installed (a task imports
    modules, it runs no console scripts).
    """
    head, _, rest = member.partition("/")
    if head != data_dir:
        return member
    scheme, _, rest = rest.partition("/")
    if scheme in ("purelib", "platlib") and rest:
        return rest
    return None
