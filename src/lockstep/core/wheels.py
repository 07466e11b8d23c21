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
import stat
import zipfile
from collections.abc import Callable, Iterator
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


class WheelRejected(ValueError):
    """A wheel whose members are not what its ``RECORD`` says, or not plain files."""


@dataclass(frozen=True)
class Member:
    """One file a wheel installs: where in the site directory, its bytes, its exec bit."""

    target: str
    content: bytes
    executable: bool


def verified_members(
    data: bytes, project: str | None = None, take: Callable[[int], None] | None = None
) -> Iterator[Member]:
    """The files the wheel ``data`` installs in a flat site directory, each checked: every
    member a plain relative path (no ``..``, absolute path, link or device), in the archive
    once and of the size its header says, listed in the ``RECORD`` with the hash of its
    bytes, and every hashed ``RECORD`` row present. ``project``: the name the lock gives it.
    ``take(size)`` is called per member first (a budget may refuse). Members come one at a
    time (a wheel is never held unpacked); ``WheelRejected``, with what is wrong, may come
    after some, so a caller installs into a place it discards on failure. The build's
    layers and the workers' environments both install by this."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise WheelRejected(f"not a zip archive ({exc})") from None
    with zf:
        infos = zf.infolist()
        tops = {i.filename.split("/")[0] for i in infos if "/" in i.filename}
        dist_infos = sorted(t for t in tops if t.endswith(".dist-info"))
        if len(dist_infos) != 1:
            raise WheelRejected(f"expected one top-level .dist-info, found {len(dist_infos)}")
        dist_info = dist_infos[0]
        dist_name = normalize_name(dist_info.removesuffix(".dist-info").rsplit("-", 1)[0])
        if project is not None and dist_name != normalize_name(project):
            raise WheelRejected(f"it is {dist_name}, the lock says {project}")
        data_dir = dist_info.removesuffix(".dist-info") + ".data"
        record_name = f"{dist_info}/RECORD"
        try:
            rows = parse_record(zf.read(record_name))
        except KeyError:
            raise WheelRejected(f"it has no {record_name}") from None
        except ValueError as exc:
            raise WheelRejected(f"its RECORD does not read ({exc})") from None
        record: dict[str, str] = {}
        for path, digest, _size in rows:
            if path in record:
                raise WheelRejected(f"its RECORD lists {path} twice")
            record[path] = digest
        seen: set[str] = set()
        for info in infos:
            name = info.filename
            problem = unsafe_member(name)
            if problem:
                raise WheelRejected(f"member {name!r} {problem}")
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise WheelRejected(f"member {name} is a symbolic link")
            if stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
                raise WheelRejected(f"member {name} is not a regular file")
            if info.is_dir():
                continue
            if name in seen:
                raise WheelRejected(f"member {name} is in it twice")
            seen.add(name)
            if take is not None:
                take(info.file_size)
            with zf.open(info) as opened:
                content = opened.read(info.file_size + 1)
            if len(content) != info.file_size:
                raise WheelRejected(f"member {name} is not the size its header says")
            if not (name == record_name or name.startswith(f"{dist_info}/RECORD.")):
                want = record.get(name)  # the RECORD (and its signature) cannot list itself
                if not want:
                    raise WheelRejected(f"member {name} is not listed with a hash in its RECORD")
                if record_hash(content) != want:
                    raise WheelRejected(f"member {name} does not have the hash its RECORD lists")
            target = installed_path(name, data_dir)
            if target is not None:
                yield Member(target, content, bool(mode & 0o111))
        missing = sorted(p for p, h in record.items() if h and p not in seen)
        if missing:
            raise WheelRejected(f"its RECORD lists {missing[0]}, which it does not contain")
