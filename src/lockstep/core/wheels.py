"""Wheels as plain facts: file names and their tags, ``RECORD`` rows and hashes, member paths.

Pure functions, standard library only: the build (``lockstep bundle lock``),
the runner (preflight) and the worker (``lockstep.bundles.env``, which
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
from collections.abc import Iterable, Iterator
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
    return _record_field(hashlib.sha256(data).digest())


def _record_field(digest: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


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


TEST_DIRS = frozenset({"test", "tests"})


def in_test_dir(path: str) -> bool:
    """Whether ``path`` (``/``-separated) is inside a wheel's own test suite: a directory
    named ``test`` or ``tests``. Its modules are installed but not compiled (a task never
    imports them; in the heavy stack they are half of all ``.py`` files)."""
    return not TEST_DIRS.isdisjoint(path.split("/")[:-1])


class WheelRejected(ValueError):
    """A wheel whose members are not what its ``RECORD`` says, or not plain files."""


@dataclass(frozen=True)
class Member:
    """One file a wheel installs: where in the site directory, its bytes, its exec bit and
    the sha256 (hex) of its bytes."""

    target: str
    content: bytes
    executable: bool
    sha256: str


@dataclass(frozen=True)
class WheelPlan:
    """A wheel whose structure was checked (``plan_wheel``): its file members, each with
    the ``RECORD`` hash it must have ("" for the ``RECORD`` itself) and where it installs
    (None: not installed). Only the members' bytes are left to check (``read_members``)."""

    data: bytes
    files: tuple[zipfile.ZipInfo, ...]
    hashes: tuple[str, ...]
    targets: tuple[str | None, ...]

    @property
    def unpacked_size(self) -> int:
        return sum(i.file_size for i in self.files)


def plan_wheel(data: bytes, project: str | None = None) -> WheelPlan:
    """Check everything about the wheel ``data`` that its directory tells: one
    ``.dist-info`` (of ``project``, the name the lock gives it, if given), a ``RECORD``
    that reads, every member a plain relative path (no ``..``, absolute path, link or
    device) in the archive once and listed with a hash, and every hashed ``RECORD`` row
    present. ``WheelRejected`` with what is wrong; nothing is unpacked."""
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
    files: list[zipfile.ZipInfo] = []
    hashes: list[str] = []
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
        want = ""
        if not (name == record_name or name.startswith(f"{dist_info}/RECORD.")):
            want = record.get(name, "")  # the RECORD (and its signature) cannot list itself
            if not want:
                raise WheelRejected(f"member {name} is not listed with a hash in its RECORD")
        files.append(info)
        hashes.append(want)
    missing = sorted(p for p, h in record.items() if h and p not in seen)
    if missing:
        raise WheelRejected(f"its RECORD lists {missing[0]}, which it does not contain")
    targets = tuple(installed_path(i.filename, data_dir) for i in files)
    return WheelPlan(data, tuple(files), tuple(hashes), targets)


def read_members(plan: WheelPlan, which: Iterable[int] | None = None) -> Iterator[Member]:
    """The installed members of ``plan`` (indexes into ``plan.files``; all if None), one at
    a time, each of the size its header says and with the hash its ``RECORD`` lists;
    ``WheelRejected`` may come after some. Each call reads the archive on its own, so
    threads may read parts of one wheel at once."""
    with zipfile.ZipFile(io.BytesIO(plan.data)) as zf:
        for index in range(len(plan.files)) if which is None else which:
            info, want, target = plan.files[index], plan.hashes[index], plan.targets[index]
            if target is None and not want:
                continue  # neither installed nor hashed (a RECORD signature outside site)
            with zf.open(info) as opened:
                content = opened.read(info.file_size + 1)
            if len(content) != info.file_size:
                raise WheelRejected(f"member {info.filename} is not the size its header says")
            digest = hashlib.sha256(content).digest()
            if want and want != _record_field(digest):
                raise WheelRejected(
                    f"member {info.filename} does not have the hash its RECORD lists"
                )
            if target is not None:
                yield Member(target, content, bool((info.external_attr >> 16) & 0o111),
                             digest.hex())  # fmt: skip


def verified_members(data: bytes, project: str | None = None) -> Iterator[Member]:
    """The files the wheel ``data`` installs in a flat site directory, every one checked
    (``plan_wheel``, then ``read_members``), one at a time: a wheel is never held
    unpacked. The build's layers and the workers' environments both install by this."""
    yield from read_members(plan_wheel(data, project))
