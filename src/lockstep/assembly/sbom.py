"""The SBOM: an SPDX 2.3 JSON document per image, computed from the locks, not scanned.

Every Debian package of the Debian lock (name, version, source package, the
``.deb``'s sha256 and URL, the licence named by its ``copyright`` file — which
the base keeps under ``usr/share/doc`` — and its ``Depends`` from the
``var/lib/dpkg/status.d`` stanza), every wheel of the Python lock (name,
version, sha256, URL, the licence and supplier of its ``METADATA``, its
``Requires-Dist``), the app, and the image that contains them all. Licences are
normalised SPDX expressions (``licenses``), every package has a supplier
(``suppliers``): the NTIA minimum elements hold.

The bytes are reproducible: no clock (``created`` is the image's own created
time: the epoch, or the stamped commit's time), no random ids (the namespace is
the image digest; every SPDXID is derived from a package's name and sha256).
The inventory (the part read from the .debs' files and the wheels) is cached
under a key of its inputs, so a no-op rebuild reads no package; what a wheel's
``METADATA`` says is cached per wheel (``wheel_facts``), so a one-wheel change reads
that wheel alone.
"""

from __future__ import annotations

import email.parser
import io
import json
import re
import urllib.parse
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lockstep.assembly import suppliers
from lockstep.assembly.licenses import NOASSERTION, copyright_license, paragraphs, wheel_license
from lockstep.core.errors import BadInput
from lockstep.inputs.debian.fetch import deb_url
from lockstep.inputs.debian.lock import DebianLock
from lockstep.inputs.python.lock import LockedWheel

SPDX_VERSION = "SPDX-2.3"
MEDIA_TYPE = "application/spdx+json"
DEBIAN_DISTRO = "debian-12"
# The inventory rows' format, part of their cache key: 2 added suppliers and licences
# normalised by license-expression.
INVENTORY_FORMAT = "2"
# The per-wheel facts' format (``wheel_facts``), part of their cache key.
WHEEL_FACTS_FORMAT = "1"


def file_name(role: str) -> str:
    """Where a build writes an image's SBOM, beside its archive ``<name>.tar``: ``<name>.spdx.json``
    (``<role>`` or, in a project of several platforms, ``<role>-<arch>``)."""
    return f"{role}.spdx.json"


def spdx_id(*parts: str) -> str:
    """``SPDXRef-`` + the parts, with every character SPDX does not allow made ``-``."""
    return "SPDXRef-" + "-".join(re.sub(r"[^A-Za-z0-9.]+", "-", p).strip("-") for p in parts)


# -- Debian -----------------------------------------------------------------------------


def _dep_names(value: str) -> list[str]:
    """Package names of a ``Depends`` field (first alternatives, no versions or arches)."""
    names = []
    for clause in value.split(","):
        first = clause.split("|")[0].strip()
        name = re.split(r"[\s(:\[]", first, maxsplit=1)[0]
        if name:
            names.append(name)
    return names


def debian_inventory(lock: DebianLock, mirror: str, base_root: Path) -> list[dict[str, Any]]:
    """One row per locked package, from the base layer's files at ``base_root``."""
    controls: dict[str, dict[str, str]] = {}
    for pkg in lock.packages:
        path = base_root / "var/lib/dpkg/status.d" / pkg.name
        try:
            controls[pkg.name] = paragraphs(path.read_text(errors="replace"))[0]
        except (OSError, IndexError) as exc:
            raise BadInput(
                f"{path}: the base layer lacks the control stanza of {pkg.name}"
            ) from exc
    by_source: dict[str, str] = {}  # source package -> a copyright file of it
    copyrights: dict[str, str] = {}
    for pkg in lock.packages:
        source = controls[pkg.name].get("source", pkg.name).split(" ")[0] or pkg.name
        path = base_root / "usr/share/doc" / pkg.name / "copyright"
        if path.is_file() and not path.is_symlink():
            copyrights[pkg.name] = path.read_text(errors="replace")
            by_source.setdefault(source, pkg.name)
    locked = set(lock.names())
    rows = []
    for pkg in lock.packages:
        control = controls[pkg.name]
        source_field = control.get("source", pkg.name)
        source = source_field.split(" ")[0] or pkg.name
        match = re.search(r"\(([^)]+)\)", source_field)
        source_version = match.group(1) if match else pkg.version
        # A package whose doc directory is a link to its source sibling's uses that copyright.
        owner = pkg.name if pkg.name in copyrights else by_source.get(source)
        where = f"/usr/share/doc/{owner or pkg.name}/copyright"
        lic = copyright_license(copyrights[owner], where) if owner else NOASSERTION
        depends = _dep_names(
            ", ".join(v for k, v in control.items() if k in ("depends", "pre-depends"))
        )
        rows.append(
            {
                "name": pkg.name,
                "version": pkg.version,
                "arch": pkg.arch,
                "source": source,
                "source_version": source_version,
                "sha256": pkg.sha256,
                "url": deb_url(mirror, pkg),
                "license": lic.expression,
                "license_refs": dict(lic.refs),
                "depends": sorted({d for d in depends if d in locked and d != pkg.name}),
            }
        )
    return rows


# -- Python ----------------------------------------------------------------------------


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def wheel_facts(wheel: LockedWheel, data: bytes) -> dict[str, Any]:
    """What a wheel's ``METADATA`` says (``data``: its bytes, verified by the caller):
    licence, supplier and every ``Requires-Dist`` name; a fact of the wheel's bytes and
    its URL alone, so it is read once per wheel, not once per lock that holds it."""
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = [
            n for n in zf.namelist() if n.count("/") == 1 and n.endswith(".dist-info/METADATA")
        ]
        if len(names) != 1:
            raise BadInput(f"{wheel.filename}: expected one .dist-info/METADATA")
        meta = email.parser.Parser().parsestr(zf.read(names[0]).decode("utf-8", "replace"))
    lic = wheel_license(meta, f"{wheel.filename} METADATA")
    requires = {
        _normalize(re.split(r"[\s;<>=!~\[(]", r.strip(), maxsplit=1)[0])
        for r in meta.get_all("Requires-Dist") or []
    }
    return {
        "license": lic.expression,
        "license_refs": dict(lic.refs),
        "supplier": suppliers.wheel_supplier(meta, wheel.url),
        "requires": sorted(requires),
    }


def python_inventory(
    wheels: Sequence[LockedWheel], facts: Mapping[tuple[str, str], Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """One row per locked wheel (``facts``: ``wheel_facts`` by sha256 and URL): its lock
    entry, its ``METADATA``'s licence and supplier, and the locked projects it requires."""
    locked = {_normalize(w.project) for w in wheels}
    rows = []
    for wheel in wheels:
        found = facts[wheel.sha256, wheel.url]
        rows.append(
            {
                "name": wheel.project,
                "version": wheel.version,
                "sha256": wheel.sha256,
                "url": wheel.url,
                "license": found["license"],
                "license_refs": dict(found["license_refs"]),
                "supplier": found["supplier"],
                "requires": sorted(set(found["requires"]) & locked - {_normalize(wheel.project)}),
            }
        )
    return rows


# -- the document ------------------------------------------------------------------------


def _purl_version(version: str) -> str:
    return urllib.parse.quote(version, safe=":~")


def deb_purl(row: Mapping[str, Any]) -> str:
    qualifiers = f"arch={row['arch']}&distro={DEBIAN_DISTRO}"
    if row["source"] != row["name"]:
        qualifiers += f"&upstream={urllib.parse.quote(row['source'], safe='')}"
    return f"pkg:deb/debian/{row['name']}@{_purl_version(row['version'])}?{qualifiers}"


def pypi_purl(row: Mapping[str, Any]) -> str:
    return f"pkg:pypi/{_normalize(row['name'])}@{_purl_version(row['version'])}"


def _package(
    spdxid: str,
    name: str,
    version: str,
    download: str,
    license_: str,
    purl: str,
    *,
    sha256: str | None = None,
    supplier: str = "NOASSERTION",
    purpose: str = "LIBRARY",
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    pkg: dict[str, Any] = {
        "SPDXID": spdxid,
        "name": name,
        "versionInfo": version,
        "supplier": supplier,
        "downloadLocation": download,
        "filesAnalyzed": False,
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": license_,
        "copyrightText": "NOASSERTION",
        "primaryPackagePurpose": purpose,
        "externalRefs": [
            {
                "referenceCategory": "PACKAGE-MANAGER",
                "referenceType": "purl",
                "referenceLocator": purl,
            }
        ],
    }
    if sha256:
        pkg["checksums"] = [{"algorithm": "SHA256", "checksumValue": sha256}]
    pkg.update(extra or {})
    return pkg


@dataclass(frozen=True)
class ImageFacts:
    """What the SBOM says about the image itself and the app in it."""

    project: str
    version: str
    role: str
    image_name: str  # lockstep-worker
    digest: str  # the image manifest's digest
    created: str
    build_id: str
    sources: str  # the sources tree digest
    license: str
    source_url: str
    commit: str | None  # when stamped
    dependencies: tuple[str, ...]  # the app's direct requirements (names)
    supplier: str  # of the image and the app (assembly.suppliers.project_supplier)


def document(facts: ImageFacts, inventory: Mapping[str, Any]) -> bytes:
    """The SPDX 2.3 JSON document of one image (sorted keys, two-space indent)."""
    hexd = facts.digest.removeprefix("sha256:")
    base = (facts.source_url or "https://lockstep.invalid").rstrip("/")
    image_id = spdx_id("image", facts.image_name)
    app_id = spdx_id("app", facts.project)
    packages: list[dict[str, Any]] = []
    relationships: list[dict[str, str]] = [
        {
            "spdxElementId": "SPDXRef-DOCUMENT",
            "relationshipType": "DESCRIBES",
            "relatedSpdxElement": image_id,
        }
    ]
    refs: dict[str, str] = {}

    def rel(a: str, kind: str, b: str) -> None:
        relationships.append(
            {"spdxElementId": a, "relationshipType": kind, "relatedSpdxElement": b}
        )

    packages.append(
        _package(
            image_id,
            facts.image_name,
            facts.version,
            "NOASSERTION",
            facts.license or "NOASSERTION",
            f"pkg:oci/{facts.image_name}@{urllib.parse.quote(facts.digest, safe='')}",
            sha256=hexd,
            supplier=facts.supplier,
            purpose="CONTAINER",
            extra={"comment": f"build {facts.build_id}; role {facts.role}"},
        )
    )
    download = (
        f"git+{facts.source_url}@{facts.commit}"
        if facts.commit and facts.source_url
        else "NOASSERTION"
    )
    app_purl = f"pkg:generic/{facts.project}@{_purl_version(facts.version)}"
    if download != "NOASSERTION":
        app_purl += "?vcs_url=" + urllib.parse.quote(download, safe="")
    packages.append(
        _package(
            app_id,
            facts.project,
            facts.version,
            download,
            facts.license or "NOASSERTION",
            app_purl,
            supplier=facts.supplier,
            purpose="APPLICATION",
            extra={"comment": f"declared sources, tree digest {facts.sources}"},
        )
    )
    rel(image_id, "CONTAINS", app_id)
    deb_ids: dict[str, str] = {}
    for row in inventory["debian"]:
        deb_ids[row["name"]] = spdx_id("deb", row["name"], row["sha256"][:12])
    for row in inventory["debian"]:
        refs.update(row["license_refs"])
        packages.append(
            _package(
                deb_ids[row["name"]],
                row["name"],
                row["version"],
                row["url"],
                row["license"],
                deb_purl(row),
                sha256=row["sha256"],
                supplier=suppliers.DEBIAN,
                extra={
                    "sourceInfo": f"built package from: {row['source']} {row['source_version']}"
                },
            )
        )
        rel(image_id, "CONTAINS", deb_ids[row["name"]])
        for dep in row["depends"]:
            rel(deb_ids[row["name"]], "DEPENDS_ON", deb_ids[dep])
    wheel_ids = {
        _normalize(row["name"]): spdx_id("pypi", row["name"], row["sha256"][:12])
        for row in inventory["python"]
    }
    for row in inventory["python"]:
        wid = wheel_ids[_normalize(row["name"])]
        refs.update(row["license_refs"])
        packages.append(
            _package(
                wid,
                row["name"],
                row["version"],
                row["url"],
                row["license"],
                pypi_purl(row),
                sha256=row["sha256"],
                supplier=row["supplier"],
            )
        )
        rel(image_id, "CONTAINS", wid)
        for dep in row["requires"]:
            rel(wid, "DEPENDS_ON", wheel_ids[dep])
    for dep in facts.dependencies:
        if _normalize(dep) in wheel_ids:
            rel(app_id, "DEPENDS_ON", wheel_ids[_normalize(dep)])
    doc = {
        "spdxVersion": SPDX_VERSION,
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": f"{facts.image_name}@{facts.digest}",
        "documentNamespace": f"{base}/spdx/{facts.image_name}/{hexd}",
        "creationInfo": {
            "created": facts.created,
            "creators": [f"Tool: {facts.project}-{facts.version}"],
        },
        "packages": packages,
        "relationships": relationships,
    }
    if refs:
        doc["hasExtractedLicensingInfos"] = [
            {"licenseId": ref, "extractedText": text, "name": ref.removeprefix("LicenseRef-")}
            for ref, text in sorted(refs.items())
        ]
    return (json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def requirement_names(requirements: Iterable[str]) -> tuple[str, ...]:
    return tuple(
        sorted({re.split(r"[\s;<>=!~\[(]", r.strip(), maxsplit=1)[0] for r in requirements})
    )
