"""The Debian base: lock (resolve), fetch + verify, unpack safely, assemble the base layer.

Three steps, each a pure function of its inputs except where it talks to the mirror:

``resolve``
    Reads the mirror's ``Packages.xz`` indexes for bookworm, bookworm-updates
    and bookworm-security (never the host's apt state) and computes the closure
    of the root packages over ``Depends`` + ``Pre-Depends``: the first
    alternative of each ``|`` group, virtual packages through ``Provides``,
    version constraints ignored (the newest version across the suites wins).
    Packages needed only by maintainer scripts, which an image build never
    runs, are left out (``DEFAULT_EXCLUDE``: ``dpkg``, ``debconf``); a
    dependency whose first alternative is excluded is dropped.

``fetch``
    Downloads each locked ``.deb`` into the content-addressed cache and checks
    its size and sha256 against the lock, on download and on every cache read.

``deb_entries`` / ``base_entries``
    Unpack ``data.tar.*`` into layer entries with strict path rules (see
    ``deb_entries``) and add what dpkg's maintainer scripts would have made
    (usr-merge links, ``/tmp``, users, the CA bundle).
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import http.client
import io
import json
import lzma
import posixpath
import re
import tarfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lockstep.atomic import write_bytes
from lockstep.build.cache import Cache
from lockstep.build.layers import Entry, normalize, through_symlink
from lockstep.errors import BadInput, CheckFailed, LockstepError, ServiceFailed

LOCK_SCHEMA = "lockstep.debian-lock/v1"
DEFAULT_ARCH = "amd64"
DEFAULT_EXCLUDE: tuple[str, ...] = ("debconf", "dpkg")
RELOCK_HINT = "run `lockstep lock debian`"
USER_AGENT = "lockstep (debian base)"
HTTP_TIMEOUT = 60.0
FETCH_WORKERS = 4


@dataclass(frozen=True)
class Suite:
    """One index to read: ``<archive base>/dists/<suite>/main/binary-<arch>/Packages.xz``."""

    archive: str  # "debian" or "debian-security": the URL base below the mirror host
    suite: str  # "bookworm", "bookworm-updates", "bookworm-security"


SUITES: tuple[Suite, ...] = (
    Suite("debian", "bookworm"),
    Suite("debian", "bookworm-updates"),
    Suite("debian-security", "bookworm-security"),
)


@dataclass(frozen=True)
class DebPackage:
    """One locked ``.deb``: where it lives on the mirror and what its bytes must be."""

    name: str
    version: str
    arch: str  # "amd64" or "all"
    archive: str  # "debian" or "debian-security"
    suite: str
    filename: str  # pool path from Packages (no epoch), relative to the archive base
    size: int
    sha256: str  # hex

    @property
    def digest(self) -> str:
        return "sha256:" + self.sha256

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "arch": self.arch,
            "archive": self.archive,
            "suite": self.suite,
            "filename": self.filename,
            "size": self.size,
            "sha256": self.sha256,
        }


@dataclass(frozen=True)
class DebianLock:
    """The resolved package set. ``packages`` is sorted by name."""

    packages: tuple[DebPackage, ...]
    roots: tuple[str, ...] = ()
    suites: tuple[Suite, ...] = SUITES
    arch: str = DEFAULT_ARCH
    exclude: tuple[str, ...] = DEFAULT_EXCLUDE

    def __post_init__(self) -> None:  # one order, so equal locks compare equal
        object.__setattr__(self, "packages", tuple(sorted(self.packages, key=lambda p: p.name)))
        object.__setattr__(self, "roots", tuple(sorted(self.roots)))
        object.__setattr__(self, "exclude", tuple(sorted(self.exclude)))

    def names(self) -> list[str]:
        return [p.name for p in self.packages]

    def get(self, name: str) -> DebPackage:
        for pkg in self.packages:
            if pkg.name == name:
                return pkg
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": LOCK_SCHEMA,
            "arch": self.arch,
            "roots": sorted(self.roots),
            "exclude": sorted(self.exclude),
            "suites": [{"archive": s.archive, "suite": s.suite} for s in self.suites],
            "packages": [p.to_dict() for p in sorted(self.packages, key=lambda p: p.name)],
        }

    def to_json(self) -> bytes:
        """Stable pretty JSON: sorted keys, two-space indent, one package per object."""
        return (
            json.dumps(self.to_dict(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        ).encode()

    @property
    def digest(self) -> str:
        """``sha256:`` of the lock's canonical JSON (what the build inputs name)."""
        raw = json.dumps(
            self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode()
        return "sha256:" + hashlib.sha256(raw).hexdigest()


# --------------------------------------------------------------------------- lock file

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def _lock_from_dict(data: Any, where: str) -> DebianLock:
    def fail(what: str) -> BadInput:
        return BadInput(f"{where}: {what}; {RELOCK_HINT}")

    if not isinstance(data, dict):
        raise fail("not a JSON object")
    if data.get("schema") != LOCK_SCHEMA:
        raise fail(f"schema is {data.get('schema')!r}, expected {LOCK_SCHEMA!r}")
    arch = data.get("arch")
    if not isinstance(arch, str) or not arch:
        raise fail("arch missing")
    roots = data.get("roots", [])
    exclude = data.get("exclude", [])
    for key, value in (("roots", roots), ("exclude", exclude)):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise fail(f"{key} must be a list of strings")
    raw_suites = data.get("suites")
    if not isinstance(raw_suites, list) or not raw_suites:
        raise fail("suites missing")
    suites: list[Suite] = []
    for s in raw_suites:
        if not (
            isinstance(s, dict)
            and isinstance(s.get("archive"), str)
            and isinstance(s.get("suite"), str)
        ):
            raise fail("each suite needs archive and suite")
        suites.append(Suite(s["archive"], s["suite"]))
    raw_packages = data.get("packages")
    if not isinstance(raw_packages, list) or not raw_packages:
        raise fail("packages missing or empty")
    packages: list[DebPackage] = []
    for i, p in enumerate(raw_packages):
        if not isinstance(p, dict):
            raise fail(f"packages[{i}] is not an object")
        str_keys = ("name", "version", "arch", "archive", "suite", "filename", "sha256")
        if not all(isinstance(p.get(k), str) and p.get(k) for k in str_keys):
            raise fail(f"packages[{i}] needs {', '.join(str_keys)} as strings")
        size = p.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
            raise fail(f"packages[{i}] ({p['name']}) size must be a positive integer")
        if not _HEX64.match(p["sha256"]):
            raise fail(f"packages[{i}] ({p['name']}) sha256 is not 64 hex digits")
        filename = p["filename"]
        if filename.startswith("/") or ".." in filename.split("/"):
            raise fail(f"packages[{i}] ({p['name']}) filename {filename!r} escapes the archive")
        packages.append(
            DebPackage(
                p["name"],
                p["version"],
                p["arch"],
                p["archive"],
                p["suite"],
                filename,
                size,
                p["sha256"],
            )
        )
    names = [p.name for p in packages]
    if len(set(names)) != len(names):
        raise fail("a package is listed twice")
    return DebianLock(
        packages=tuple(sorted(packages, key=lambda p: p.name)),
        roots=tuple(sorted(roots)),
        suites=tuple(suites),
        arch=arch,
        exclude=tuple(sorted(exclude)),
    )


def read_lock(path: Path) -> DebianLock:
    """Read ``images/debian.lock.json``; BadInput naming the file if missing or malformed."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise BadInput(
            f"{path}: cannot read the Debian lock ({exc.strerror}); {RELOCK_HINT}"
        ) from exc
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadInput(f"{path}: not valid JSON ({exc}); {RELOCK_HINT}") from exc
    return _lock_from_dict(data, str(path))


def write_lock(path: Path, lock: DebianLock) -> None:
    """Write the lock atomically."""
    write_bytes(path, lock.to_json())


# --------------------------------------------------------------------------- versions


def _order(c: str) -> int:
    """dpkg's character order for the non-digit parts: ``~`` < end < letters < others."""
    if c == "~":
        return -1
    if c.isdigit():
        return 0
    if c.isalpha():
        return ord(c)
    return ord(c) + 256


def _compare_part(a: str, b: str) -> int:
    """dpkg's ``verrevcmp`` on one upstream-version or revision string."""
    i = j = 0
    while i < len(a) or j < len(b):
        first_diff = 0
        while (i < len(a) and not a[i].isdigit()) or (j < len(b) and not b[j].isdigit()):
            ac = _order(a[i]) if i < len(a) else 0
            bc = _order(b[j]) if j < len(b) else 0
            if ac != bc:
                return ac - bc
            i += 1
            j += 1
        while i < len(a) and a[i] == "0":
            i += 1
        while j < len(b) and b[j] == "0":
            j += 1
        while i < len(a) and a[i].isdigit() and j < len(b) and b[j].isdigit():
            if not first_diff:
                first_diff = ord(a[i]) - ord(b[j])
            i += 1
            j += 1
        if i < len(a) and a[i].isdigit():
            return 1
        if j < len(b) and b[j].isdigit():
            return -1
        if first_diff:
            return first_diff
    return 0


def _split_version(v: str) -> tuple[int, str, str]:
    epoch = 0
    if ":" in v:
        head, _, v = v.partition(":")
        epoch = int(head) if head.isdigit() else 0
    upstream, sep, revision = v.rpartition("-")
    if not sep:
        upstream, revision = v, ""
    return epoch, upstream, revision


def compare_versions(a: str, b: str) -> int:
    """Debian version comparison (epoch, upstream, revision, ``~``): <0, 0 or >0."""
    ea, ua, ra = _split_version(a)
    eb, ub, rb = _split_version(b)
    if ea != eb:
        return -1 if ea < eb else 1
    c = _compare_part(ua, ub)
    if c:
        return -1 if c < 0 else 1
    c = _compare_part(ra, rb)
    return -1 if c < 0 else (1 if c > 0 else 0)


# --------------------------------------------------------------------------- mirror I/O


def security_mirror(mirror: str) -> str:
    """The security archive next to ``mirror``: its last ``debian`` path part becomes
    ``debian-security`` (``http://deb.debian.org/debian`` → ``…/debian-security``)."""
    parts = urllib.parse.urlsplit(mirror.rstrip("/"))
    segs = parts.path.split("/")
    for i in range(len(segs) - 1, -1, -1):
        if segs[i] == "debian":
            segs[i] = "debian-security"
            return urllib.parse.urlunsplit(parts._replace(path="/".join(segs)))
    return mirror.rstrip("/") + "-security"


def archive_url(mirror: str, archive: str) -> str:
    """The base URL of ``archive`` ("debian" or "debian-security") for ``mirror``."""
    if archive == "debian":
        return mirror.rstrip("/")
    if archive == "debian-security":
        return security_mirror(mirror)
    raise BadInput(f"unknown Debian archive {archive!r} in the lock; {RELOCK_HINT}")


class _NotFound(Exception):
    def __init__(self, url: str, code: int) -> None:
        super().__init__(url)
        self.url = url
        self.code = code


def _http_get(url: str, max_bytes: int | None = None) -> bytes:
    """GET ``url``; ``_NotFound`` for 404/410, ServiceFailed naming the URL otherwise.

    With ``max_bytes`` it reads at most one byte more, so an oversized answer is
    noticed without reading it all.
    """
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT) as resp:
            data: bytes = resp.read() if max_bytes is None else resp.read(max_bytes + 1)
            return data
    except urllib.error.HTTPError as exc:
        if exc.code in (404, 410):
            raise _NotFound(url, exc.code) from exc
        raise ServiceFailed(
            f"Debian mirror: GET {url} failed: HTTP {exc.code} {exc.reason}; "
            "check the mirror or LOCKSTEP_DEBIAN_MIRROR"
        ) from exc
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise ServiceFailed(
            f"Debian mirror: GET {url} failed: {reason}; check the network, "
            "the mirror or LOCKSTEP_DEBIAN_MIRROR"
        ) from exc


# --------------------------------------------------------------------------- resolve


@dataclass(frozen=True)
class _Candidate:
    pkg: DebPackage
    depends: str
    pre_depends: str
    provides: str


_FIELDS = (
    "Package",
    "Version",
    "Architecture",
    "Filename",
    "Size",
    "SHA256",
    "Depends",
    "Pre-Depends",
    "Provides",
)


def parse_packages(text: str, suite: Suite, arch: str) -> list[_Candidate]:
    """The stanzas of a ``Packages`` file for ``arch`` (and ``all``)."""
    out: list[_Candidate] = []
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in stanza.split("\n"):
            if not line or line[0] in " \t":
                continue
            key, sep, value = line.partition(":")
            if sep and key in _FIELDS:
                fields[key] = value.strip()
        if "Package" not in fields:
            continue
        if fields.get("Architecture") not in (arch, "all"):
            continue
        try:
            size = int(fields["Size"])
            pkg = DebPackage(
                fields["Package"],
                fields["Version"],
                fields["Architecture"],
                suite.archive,
                suite.suite,
                fields["Filename"],
                size,
                fields["SHA256"].lower(),
            )
        except (KeyError, ValueError) as exc:
            raise ServiceFailed(
                f"Debian mirror: {suite.archive}/{suite.suite} Packages has a "
                f"broken stanza for {fields['Package']!r} ({exc})"
            ) from exc
        out.append(
            _Candidate(
                pkg,
                fields.get("Depends", ""),
                fields.get("Pre-Depends", ""),
                fields.get("Provides", ""),
            )
        )
    return out


def _names_of_relation(field: str) -> list[list[str]]:
    """``a (>= 1) | b:any, c`` → ``[["a", "b"], ["c"]]`` (versions and qualifiers dropped)."""
    groups: list[list[str]] = []
    for group in field.split(","):
        alts = []
        for alt in group.split("|"):
            name = re.split(r"[\s(\[<]", alt.strip(), maxsplit=1)[0].split(":", 1)[0]
            if name:
                alts.append(name)
        if alts:
            groups.append(alts)
    return groups


def fetch_index(mirror: str, suite: Suite, arch: str) -> str:
    url = f"{archive_url(mirror, suite.archive)}/dists/{suite.suite}/main/binary-{arch}/Packages.xz"
    try:
        raw = _http_get(url)
    except _NotFound as exc:
        raise ServiceFailed(
            f"Debian mirror: {url} not found (HTTP {exc.code}); check LOCKSTEP_DEBIAN_MIRROR"
        ) from exc
    try:
        return lzma.decompress(raw).decode("utf-8", "replace")
    except lzma.LZMAError as exc:
        raise ServiceFailed(f"Debian mirror: {url} is not valid xz ({exc})") from exc


def resolve_from_indexes(
    indexes: Mapping[Suite, str],
    roots: Sequence[str],
    arch: str = DEFAULT_ARCH,
    exclude: Sequence[str] = DEFAULT_EXCLUDE,
) -> DebianLock:
    """The closure of ``roots`` over already-downloaded ``Packages`` texts (no network)."""
    best: dict[str, _Candidate] = {}
    for suite, text in indexes.items():  # suite order breaks version ties: first wins
        for cand in parse_packages(text, suite, arch):
            cur = best.get(cand.pkg.name)
            if cur is None or compare_versions(cand.pkg.version, cur.pkg.version) > 0:
                best[cand.pkg.name] = cand
    providers: dict[str, set[str]] = {}
    for cand in best.values():
        for group in _names_of_relation(cand.provides):
            providers.setdefault(group[0], set()).add(cand.pkg.name)

    excluded = set(exclude)
    chosen: dict[str, _Candidate] = {}
    queue: list[tuple[str, str]] = [(r, "requested root") for r in roots]
    while queue:
        name, why = queue.pop(0)
        if name in excluded or name in chosen:
            continue
        real = name
        if real not in best:
            options = sorted(providers.get(name, ()))
            if not options:
                raise BadInput(
                    f"Debian package {name!r} ({why}) is not in "
                    f"{', '.join(f'{s.archive}/{s.suite}' for s in indexes)} "
                    f"for {arch}; check the package list"
                )
            # A provider already chosen, else the alphabetically first: deterministic.
            already = [o for o in options if o in chosen]
            real = (already or options)[0]
            if real in excluded or real in chosen:
                continue
        cand = best[real]
        chosen[real] = cand
        for field in (cand.pre_depends, cand.depends):
            for alts in _names_of_relation(field):
                queue.append((alts[0], f"needed by {real}"))
    return DebianLock(
        packages=tuple(sorted((c.pkg for c in chosen.values()), key=lambda p: p.name)),
        roots=tuple(sorted(roots)),
        suites=tuple(indexes),
        arch=arch,
        exclude=tuple(sorted(excluded)),
    )


def resolve(
    mirror: str,
    roots: Sequence[str],
    arch: str = DEFAULT_ARCH,
    exclude: Sequence[str] = DEFAULT_EXCLUDE,
    suites: Sequence[Suite] = SUITES,
) -> DebianLock:
    """Resolve ``roots`` against the mirror's current indexes (bookworm, -updates, -security)."""
    if not roots:
        raise BadInput("no Debian packages to lock; set [tool.lockstep] debian_packages")
    indexes = {suite: fetch_index(mirror, suite, arch) for suite in suites}
    return resolve_from_indexes(indexes, roots, arch, exclude)


# --------------------------------------------------------------------------- fetch


def deb_url(mirror: str, pkg: DebPackage) -> str:
    return f"{archive_url(mirror, pkg.archive)}/{pkg.filename}"


def _check(pkg: DebPackage, data: bytes, origin: str) -> str | None:
    """None if ``data`` is ``pkg``'s bytes, else what is wrong."""
    if len(data) != pkg.size:
        got = f"more than {pkg.size}" if len(data) > pkg.size else str(len(data))
        return f"size {got} bytes, expected {pkg.size} ({origin})"
    actual = hashlib.sha256(data).hexdigest()
    if actual != pkg.sha256:
        return f"sha256 {actual}, expected {pkg.sha256} ({origin})"
    return None


def _download_deb(mirror: str, pkg: DebPackage) -> bytes:
    url = deb_url(mirror, pkg)
    try:
        data = _http_get(url, max_bytes=pkg.size)
    except _NotFound as exc:
        raise ServiceFailed(
            f"Debian package {pkg.name} {pkg.version}: {url} not found (HTTP {exc.code}); "
            f"the mirror no longer serves this version: re-lock ({RELOCK_HINT}) or point "
            "LOCKSTEP_DEBIAN_MIRROR at a snapshot mirror"
        ) from exc
    problem = _check(pkg, data, f"downloaded from {url}")
    if problem:
        raise CheckFailed(
            f"Debian package {pkg.name} {pkg.version}: {problem}; nothing was "
            f"cached: check the mirror, or {RELOCK_HINT} if the lock is stale"
        )
    return data


def fetch(
    lock: DebianLock, mirror: str, cache: Cache, progress: Callable[[str], None] | None = None
) -> dict[str, bytes]:
    """Every locked ``.deb``, by package name, verified against the lock.

    Each ``.deb`` is looked up in ``cache`` by its sha256 first. Every read from
    the cache is verified (size and sha256); an entry that fails is treated as
    a cache fault, not as input: it is deleted, reported through ``progress``,
    and the ``.deb`` is downloaded again, so tampered bytes are never used and
    the cache heals itself. If the download fails too, the error says the cache
    entry was corrupt. Downloads are verified before they are written to the
    cache: a size or sha256 mismatch is a CheckFailed naming the package, the
    expected and the actual value, and nothing is cached. A ``.deb`` the mirror
    no longer serves (404) is a ServiceFailed that says to re-lock or use a
    snapshot mirror.
    """
    say = progress or (lambda _line: None)
    result: dict[str, bytes] = {}
    missing: list[tuple[DebPackage, str]] = []
    for pkg in lock.packages:
        path = cache.blob_path(pkg.digest)
        existed = path.exists()
        data = cache.get_blob(pkg.digest)  # verifies sha256, removes a corrupt entry
        if data is not None and _check(pkg, data, "cache") is None:
            result[pkg.name] = data
            continue
        if existed:
            path.unlink(missing_ok=True)
            say(
                f"cache entry for {pkg.name} {pkg.version} ({path}) was corrupt: "
                "discarded, downloading again"
            )
            missing.append((pkg, f" (its cache entry {path} was corrupt and was discarded)"))
        else:
            missing.append((pkg, ""))

    def one(item: tuple[DebPackage, str]) -> bytes:
        pkg, note = item
        try:
            return _download_deb(mirror, pkg)
        except LockstepError as exc:
            exc.message += note
            exc.args = (exc.message,)
            raise

    if missing:
        with ThreadPoolExecutor(max_workers=FETCH_WORKERS) as pool:
            for (pkg, _), data in zip(missing, pool.map(one, missing), strict=True):
                cache.put_blob(data)
                result[pkg.name] = data
                say(f"fetched {pkg.name} {pkg.version} ({pkg.size} bytes)")
    return {p.name: result[p.name] for p in lock.packages}


# --------------------------------------------------------------------------- unpack

USR_MERGED = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")


def usr_merge(path: str) -> str:
    """``lib/x`` → ``usr/lib/x`` for the usr-merged top-level directories."""
    top, _, rest = path.partition("/")
    if top in USR_MERGED:
        return f"usr/{top}/{rest}" if rest else f"usr/{top}"
    return path


@dataclass(frozen=True)
class ArMember:
    name: str
    data: bytes


def read_ar(data: bytes, where: str) -> list[ArMember]:
    """The members of a (System V / GNU) ``ar`` archive, as ``dpkg-deb`` writes them."""
    if not data.startswith(b"!<arch>\n"):
        raise BadInput(f"{where}: not a .deb (no ar magic)")
    pos = 8
    out: list[ArMember] = []
    while pos < len(data):
        if data[pos : pos + 1] == b"\n":  # stray padding
            pos += 1
            continue
        header = data[pos : pos + 60]
        if len(header) != 60 or header[58:60] != b"`\n":
            raise BadInput(f"{where}: corrupt ar header at byte {pos}")
        name = header[:16].decode("ascii", "replace").rstrip()
        if name.endswith("/"):
            name = name[:-1]
        try:
            size = int(header[48:58].decode("ascii").strip())
        except ValueError as exc:
            raise BadInput(f"{where}: corrupt ar member size at byte {pos}") from exc
        start = pos + 60
        if start + size > len(data):
            raise BadInput(f"{where}: truncated ar member {name!r}")
        out.append(ArMember(name, data[start : start + size]))
        pos = start + size + (size & 1)
    return out


def _decompress(name: str, blob: bytes, where: str) -> bytes:
    try:
        if name.endswith(".xz"):
            return lzma.decompress(blob)
        if name.endswith(".gz"):
            return gzip.decompress(blob)
        if name.endswith(".bz2"):
            return bz2.decompress(blob)
        if name.endswith(".tar"):
            return blob
    except (lzma.LZMAError, OSError, EOFError, ValueError) as exc:
        raise BadInput(f"{where}: cannot decompress {name} ({exc})") from exc
    raise BadInput(
        f"{where}: {name} uses a compression lockstep does not read "
        "(xz, gz, bz2 or none); bookworm packages use xz"
    )


def _member(ar: list[ArMember], prefix: str, where: str) -> ArMember:
    for m in ar:
        if m.name == prefix or m.name.startswith(prefix + "."):
            return m
    raise BadInput(f"{where}: no {prefix}.* member")


def _open_tar(raw: bytes, where: str) -> tarfile.TarFile:
    try:
        return tarfile.open(fileobj=io.BytesIO(raw), mode="r:")
    except tarfile.TarError as exc:
        raise BadInput(f"{where} is not a tar archive ({exc})") from exc


def _clean_member(name: str, package: str) -> list[str]:
    if name.startswith("/"):
        raise BadInput(
            f"Debian package {package}: member {name!r} has an absolute path; refusing it"
        )
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise BadInput(f"Debian package {package}: member {name!r} contains '..'; refusing it")
    return parts


def _rewrite_target(package: str, member: str, orig: str, new: str, target: str) -> str:
    """The safe, relative target for a link at ``orig`` (package path) moved to ``new``.

    The target is resolved from the link's own directory (``/`` for an absolute
    one) and must stay inside the root; it is then mapped through usr-merge and
    written relative to the link's new directory.
    """
    if not target or "\0" in target:
        raise BadInput(f"Debian package {package}: symlink {member!r} has an empty target")
    if target.startswith("/"):
        resolved = posixpath.normpath(target)[1:]  # "/.." is "/" inside the image
    else:
        resolved = posixpath.normpath(posixpath.join(posixpath.dirname(orig), target))
        if resolved == ".." or resolved.startswith("../"):
            raise BadInput(
                f"Debian package {package}: symlink {member!r} -> {target!r} "
                "points outside the image root; refusing it"
            )
        if resolved == ".":
            resolved = ""
    mapped = usr_merge(resolved) if resolved else ""
    return posixpath.relpath(mapped or ".", posixpath.dirname(new) or ".")


def deb_entries(package_name: str, deb_bytes: bytes) -> list[Entry]:
    """The files of a ``.deb``'s ``data.tar.*`` as layer entries, sorted by path.

    Rules (anything else is refused with a BadInput naming package and member):

    * paths are relative; a member that is absolute or contains ``..`` is refused;
    * usr-merge: members under ``bin/``, ``sbin/``, ``lib/``, ``lib32/``,
      ``lib64/``, ``libx32/`` move to ``usr/…`` (the base links ``bin`` →
      ``usr/bin`` etc.);
    * symlinks: the target is resolved from the link's directory in the
      package (``/`` for an absolute target) and must stay inside the root, else
      it is refused (``../../../../etc``). Every target is then written
      *relative* to the link's place after usr-merge — absolute targets occur in
      bookworm (``lib64/ld-linux-x86-64.so.2`` → ``/lib/x86_64-linux-gnu/…``,
      ``usr/lib/ssl/certs`` → ``/etc/ssl/certs``), and a relative one means the
      same inside the image and cannot reach outside a materialised root on the
      host;
    * a member whose path passes through one of the package's symlinks is refused;
    * hardlinks become regular files with the linked member's bytes;
    * device nodes, fifos and other special files are refused;
    * the package's root directory (``./``) is dropped.
    """
    where = f"Debian package {package_name}"
    ar = read_ar(deb_bytes, where)
    data_member = _member(ar, "data.tar", where)
    raw = _decompress(data_member.name, data_member.data, where)
    entries: dict[str, Entry] = {}
    member_of: dict[str, str] = {}
    with _open_tar(raw, f"{where}: {data_member.name}") as tar:
        for info in tar.getmembers():
            parts = _clean_member(info.name, package_name)
            if not parts:
                if info.isdir():
                    continue
                raise BadInput(f"{where}: member {info.name!r} has no name; refusing it")
            orig = "/".join(parts)
            path = usr_merge(orig)
            mode = info.mode & 0o7777
            if info.isdir():
                entry = Entry.dir(path, mode)
            elif info.issym():
                entry = Entry.symlink(
                    path, _rewrite_target(package_name, info.name, orig, path, info.linkname)
                )
            elif info.islnk():
                # A hardlink shares its target's inode: same bytes, same mode.
                linked = entries.get(
                    usr_merge("/".join(_clean_member(info.linkname, package_name)))
                )
                if linked is None or linked.kind != "file":
                    raise BadInput(
                        f"{where}: hardlink {info.name!r} -> {info.linkname!r} "
                        "has no earlier regular file as its target"
                    )
                entry = Entry.file(path, linked.data, linked.mode)
            elif info.isfile():
                try:
                    handle = tar.extractfile(info)
                except (KeyError, tarfile.TarError) as exc:
                    raise BadInput(f"{where}: cannot read member {info.name!r}") from exc
                if handle is None:
                    raise BadInput(f"{where}: member {info.name!r} has no data")
                entry = Entry.file(path, handle.read(), mode)
            else:
                raise BadInput(
                    f"{where}: member {info.name!r} is a device, fifo or other "
                    "special file; an image base must not contain those"
                )
            if path in entries and not (entries[path].kind == entry.kind == "dir"):
                raise BadInput(f"{where}: member {info.name!r} appears twice")
            entries[path] = entry
            member_of[path] = info.name
    found = through_symlink(entries.values())
    if found:
        path, link = found
        raise BadInput(
            f"{where}: member {member_of[path]!r} passes through the "
            f"package's symlink {member_of[link]!r}; refusing it"
        )
    return [entries[p] for p in sorted(entries)]


def deb_control(package_name: str, deb_bytes: bytes) -> bytes:
    """The ``control`` file of a ``.deb`` (its stanza for ``/var/lib/dpkg/status.d``)."""
    where = f"Debian package {package_name}"
    ar = read_ar(deb_bytes, where)
    member = _member(ar, "control.tar", where)
    raw = _decompress(member.name, member.data, where)
    with _open_tar(raw, f"{where}: {member.name}") as tar:
        for info in tar.getmembers():
            if info.name in ("./control", "control") and info.isfile():
                handle = tar.extractfile(info)
                if handle is not None:
                    return handle.read()
    raise BadInput(f"{where}: control.tar has no control file")


# --------------------------------------------------------------------------- the base

# Docs, and glibc's iconv modules (gconv, 8 MB): Python's codecs never use iconv(3).
DROPPED_PREFIXES = (
    "usr/share/doc/",
    "usr/share/man/",
    "usr/share/info/",
    "usr/share/lintian/",
    "usr/share/bug/",
    "usr/lib/x86_64-linux-gnu/gconv/",
)
LIBC_BIN_KEEP = ("usr/lib/locale/C.utf8/",)
CA_BUNDLE = "etc/ssl/certs/ca-certificates.crt"
NONROOT_UID = 65532

PASSWD = (
    b"root:x:0:0:root:/root:/sbin/nologin\n"
    b"nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n"
    b"nonroot:x:65532:65532:nonroot:/nonexistent:/sbin/nologin\n"
)
GROUP = b"root:x:0:\nnogroup:x:65534:\nnonroot:x:65532:\n"
# Without nsswitch.conf glibc asks DNS before /etc/hosts; containers want files first.
NSSWITCH = (
    b"passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n"
    b"networks: files\nprotocols: files\nservices: files\n"
)
# Container runtimes mount their own /etc/hosts; this one serves a plain chroot or runc.
HOSTS = b"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"


def _keep(package: str, entry: Entry) -> bool:
    path = entry.path + ("/" if entry.kind == "dir" else "")
    if path.startswith("usr/share/doc/"):
        # Keep each package's copyright notice (licences), drop the rest of the docs.
        return entry.kind == "file" and path.endswith("/copyright")
    if path.startswith(DROPPED_PREFIXES):
        return False
    if package == "libc-bin":
        return path.startswith(LIBC_BIN_KEEP)
    return True


def ca_bundle(entries: Iterable[Entry]) -> bytes:
    """``usr/share/ca-certificates/**/*.crt`` sorted by path and concatenated."""
    certs = sorted(
        (
            e
            for e in entries
            if e.kind == "file"
            and e.path.startswith("usr/share/ca-certificates/")
            and e.path.endswith(".crt")
        ),
        key=lambda e: e.path,
    )
    out = bytearray()
    for e in certs:
        out += e.data
        if not e.data.endswith(b"\n"):
            out += b"\n"
    return bytes(out)


def base_entries(lock: DebianLock, debs: Mapping[str, bytes]) -> list[Entry]:
    """The base layer: every locked package's files plus what maintainer scripts would add.

    Dropped: ``usr/share/{doc,man,info,lintian,bug}`` (each package's
    ``copyright`` file is kept), and all of ``libc-bin`` but the ``C.utf8``
    locale. Added: usr-merge links, ``tmp`` (1777), ``root`` (700),
    ``etc/passwd``/``group`` (root, nobody, nonroot 65532), ``etc/nsswitch.conf``,
    ``etc/hosts`` (localhost),
    the CA bundle built from the ``ca-certificates`` package, ``etc/localtime`` → UTC
    (what tzdata's postinst sets up on a fresh system), ``usr/bin/python3``
    → ``python3.11``, and ``var/lib/dpkg/status.d/<package>`` control stanzas so
    image scanners can see the packages. Two packages shipping the same path with
    different contents is a BadInput.
    """
    owner: dict[str, tuple[str, Entry]] = {}
    for pkg in lock.packages:
        if pkg.name not in debs:
            raise BadInput(f"Debian package {pkg.name} is locked but was not fetched")
        for entry in deb_entries(pkg.name, debs[pkg.name]):
            if not _keep(pkg.name, entry):
                continue
            prev = owner.get(entry.path)
            if prev is not None and prev[1] != entry and not (prev[1].kind == entry.kind == "dir"):
                raise BadInput(
                    f"Debian packages {prev[0]} and {pkg.name} both ship "
                    f"{entry.path!r} with different contents"
                )
            if prev is None or prev[1].kind != "dir":
                owner[entry.path] = (pkg.name, entry)
        owner[f"var/lib/dpkg/status.d/{pkg.name}"] = (
            pkg.name,
            Entry.file(f"var/lib/dpkg/status.d/{pkg.name}", deb_control(pkg.name, debs[pkg.name])),
        )
    entries = [e for _, e in owner.values()]
    extra: list[Entry] = [
        Entry.dir("tmp", 0o1777),
        Entry.dir("root", 0o700),
        Entry.dir("etc", 0o755),
        Entry.dir("var/lib/dpkg/status.d"),
        Entry.file("etc/passwd", PASSWD),
        Entry.file("etc/group", GROUP),
        Entry.file("etc/nsswitch.conf", NSSWITCH),
        Entry.file("etc/hosts", HOSTS),
    ]
    for top in USR_MERGED:
        if f"usr/{top}" in owner or top in ("bin", "sbin", "lib", "lib64"):
            extra.append(Entry.symlink(top, f"usr/{top}"))
    if "ca-certificates" in debs:
        extra.append(Entry.file(CA_BUNDLE, ca_bundle(entries)))
    if "usr/share/zoneinfo/Etc/UTC" in owner and "etc/localtime" not in owner:
        extra.append(Entry.symlink("etc/localtime", "../usr/share/zoneinfo/Etc/UTC"))
    if "usr/bin/python3.11" in owner and "usr/bin/python3" not in owner:
        extra.append(Entry.symlink("usr/bin/python3", "python3.11"))
    out = normalize([*entries, *extra])
    found = through_symlink(out)
    if found:
        raise BadInput(f"base layer: {found[0]!r} passes through the symlink {found[1]!r}")
    return out
