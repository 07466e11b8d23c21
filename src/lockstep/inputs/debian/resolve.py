"""``lockstep lock debian``: the closure of the root packages over the mirror's indexes.

Reads the mirror's ``Packages.xz`` indexes for bookworm, bookworm-updates and
bookworm-security (never the host's apt state) and computes the closure of
the root packages over ``Depends`` + ``Pre-Depends``: the first alternative
of each ``|`` group, virtual packages through ``Provides``, version
constraints ignored (the newest version across the suites wins). Packages
needed only by maintainer scripts, which an image build never runs, are left
out (``DEFAULT_EXCLUDE``: ``dpkg``, ``debconf``); a dependency whose first
alternative is excluded is dropped.
"""

from __future__ import annotations

import lzma
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from lockstep.core.digests import sha256_digest
from lockstep.core.errors import BadInput, ServiceFailed
from lockstep.core.http import NotFound
from lockstep.core.settings import DEBIAN_MIRROR
from lockstep.inputs.debian.lock import (
    DEFAULT_ARCH,
    DEFAULT_EXCLUDE,
    SUITES,
    DebianLock,
    DebianLocks,
    DebPackage,
    Suite,
)
from lockstep.inputs.debian.mirror import archive_url, http_get
from lockstep.inputs.debian.versions import compare_versions


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


INDEX = "main/binary-{arch}/Packages.xz"  # an index's path below dists/<suite>/


def _get(url: str) -> bytes:
    try:
        return http_get(url)
    except NotFound as exc:
        raise ServiceFailed(
            f"Debian mirror: {url} not found (HTTP {exc.code}); check {DEBIAN_MIRROR}"
        ) from exc


def release_hashes(text: str) -> dict[str, str]:
    """The ``SHA256:`` section of a ``Release`` file: path below the suite → hex."""
    out: dict[str, str] = {}
    section = False
    for line in text.splitlines():
        if line and line[0] not in " \t":
            section = line.strip() == "SHA256:"
            continue
        parts = line.split()
        if section and len(parts) == 3:
            out[parts[2]] = parts[0].lower()
    return out


def fetch_snapshot(
    mirror: str, suites: Sequence[Suite], arches: Sequence[str]
) -> tuple[dict[str, dict[Suite, str]], dict[str, str]]:
    """Every architecture's index of every suite, from one snapshot of the mirror: each
    suite's ``Release`` is read once and each ``Packages.xz`` must be the one it lists, so
    a mirror that moves during the run fails it (rerun) instead of mixing two states.
    Returns the indexes per architecture and ``<archive>/<suite>`` → the Release digest."""
    indexes: dict[str, dict[Suite, str]] = {arch: {} for arch in arches}
    snapshot: dict[str, str] = {}
    for suite in suites:
        base = f"{archive_url(mirror, suite.archive)}/dists/{suite.suite}"
        release = _get(f"{base}/Release")
        snapshot[f"{suite.archive}/{suite.suite}"] = sha256_digest(release)
        listed = release_hashes(release.decode("utf-8", "replace"))
        for arch in arches:
            path = INDEX.format(arch=arch)
            raw = _get(f"{base}/{path}")
            if sha256_digest(raw) != f"sha256:{listed.get(path, '')}":
                raise ServiceFailed(
                    f"Debian mirror: {base}/{path} is not the one its Release lists (the "
                    "mirror changed during the run, or it lacks that architecture); rerun "
                    f"`lockstep lock debian` or check {DEBIAN_MIRROR}"
                )
            indexes[arch][suite] = _decompress(raw, f"{base}/{path}")
    return indexes, snapshot


def fetch_index(mirror: str, suite: Suite, arch: str) -> str:
    url = f"{archive_url(mirror, suite.archive)}/dists/{suite.suite}/{INDEX.format(arch=arch)}"
    return _decompress(_get(url), url)


def _decompress(raw: bytes, url: str) -> str:
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
    arches: Sequence[str] = (DEFAULT_ARCH,),
    exclude: Sequence[str] = DEFAULT_EXCLUDE,
    suites: Sequence[Suite] = SUITES,
) -> DebianLocks:
    """Resolve ``roots`` for each of ``arches`` against one snapshot of the mirror's indexes
    (bookworm, -updates, -security)."""
    if not roots:
        raise BadInput("no Debian packages to lock; set [tool.lockstep] debian_packages")
    indexes, snapshot = fetch_snapshot(mirror, suites, arches)
    locks = tuple(resolve_from_indexes(indexes[a], roots, a, exclude) for a in arches)
    return DebianLocks(locks, tuple(snapshot.items()))
