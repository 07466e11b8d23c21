"""The SPDX SBOM of each image: computed from the locks, validated by spdx-tools, reproducible."""

from __future__ import annotations

import email.parser
import json
from pathlib import Path
from typing import Any

import pytest

from lockstep.assembly import licenses, sbom
from lockstep.inputs.debian.lock import read_lock as read_debian_lock
from lockstep.inputs.python.lock import read_lock as read_python_lock
from tests.fixtures.build import ROOT, Built

DEP5 = """Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: demo

Files: *
Copyright: someone
License: GPL-2+

Files: lib/*
Copyright: someone else
License: BSD-3-clause or Artistic

Files: tests/*
Copyright: a third
License: odd-one
 Some odd licence text.

License: odd-one
 The full text of the odd licence.
"""


def test_dep5_copyright_becomes_an_spdx_expression() -> None:
    lic = licenses.copyright_license(DEP5, "/usr/share/doc/demo/copyright")
    assert (
        lic.expression
        == "GPL-2.0-or-later AND LicenseRef-BSD-3-clause-or-Artistic AND LicenseRef-odd-one"
    )
    assert lic.refs["LicenseRef-odd-one"] == "The full text of the odd licence."
    assert "see /usr/share/doc/demo/copyright" in lic.refs["LicenseRef-BSD-3-clause-or-Artistic"]
    assert licenses.copyright_license("free-form text\n", "x") == licenses.NOASSERTION
    known = licenses.expression_of(["GPL-2+ or LGPL-2.1+"], {}, "x")
    assert known.expression == "(GPL-2.0-or-later OR LGPL-2.1-or-later)"


def meta(text: str) -> Any:
    return email.parser.Parser().parsestr(text)


def test_wheel_licence_from_metadata() -> None:
    assert licenses.wheel_license(
        meta("License-Expression: Apache-2.0 OR BSD-2-Clause\n"), "w"
    ).expression == ("Apache-2.0 OR BSD-2-Clause")
    assert licenses.wheel_license(meta("License: Apache 2.0\n"), "w").expression == "Apache-2.0"
    by_classifier = meta("Classifier: License :: OSI Approved :: MIT License\n")
    assert licenses.wheel_license(by_classifier, "w").expression == "MIT"
    bsd = meta("Classifier: License :: OSI Approved :: BSD License\n")
    vague = licenses.wheel_license(bsd, "w")
    assert vague.expression == "LicenseRef-BSD-License"
    assert licenses.wheel_license(meta("Name: x\n"), "w") == licenses.NOASSERTION


def test_purls() -> None:
    row = {"name": "zlib1g", "version": "1:1.2.13.dfsg-1", "arch": "amd64", "source": "zlib"}
    assert sbom.deb_purl(row) == (
        "pkg:deb/debian/zlib1g@1:1.2.13.dfsg-1?arch=amd64&distro=debian-12&upstream=zlib"
    )
    assert sbom.pypi_purl({"name": "PyYAML", "version": "6.0.4"}) == "pkg:pypi/pyyaml@6.0.4"


# -- the real images ------------------------------------------------------------------


def load(built: Built, role: str) -> dict[str, Any]:
    path = Path(built.result["images"][role]["sbom"])
    assert path == built.out / f"{role}.spdx.json"
    return dict(json.loads(path.read_bytes()))


@pytest.mark.slow
def test_sbom_validates_with_spdx_tools(built: Built) -> None:
    from spdx_tools.spdx.parser.parse_anything import parse_file
    from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

    for role in ("runner", "worker"):
        document = parse_file(str(built.out / f"{role}.spdx.json"))
        problems = validate_full_spdx_document(document)
        assert problems == [], [p.validation_message for p in problems[:5]]


@pytest.mark.slow
def test_sbom_lists_every_locked_package_and_the_image(built: Built) -> None:
    debs = read_debian_lock(built.root / "images/debian.lock.json").packages
    wheels = read_python_lock(built.root / "images/python.lock.json")
    for role in ("runner", "worker"):
        doc = load(built, role)
        digest = built.digest(role)
        assert doc["spdxVersion"] == "SPDX-2.3"
        assert doc["name"] == f"lockstep-{role}@{digest}"
        assert doc["documentNamespace"].endswith(f"/spdx/lockstep-{role}/{digest[7:]}")
        assert doc["creationInfo"]["created"] == "1970-01-01T00:00:00Z"  # never the clock
        by_purl = {p["externalRefs"][0]["referenceLocator"]: p for p in doc["packages"]}
        image = next(p for p in doc["packages"] if p["primaryPackagePurpose"] == "CONTAINER")
        assert image["checksums"] == [{"algorithm": "SHA256", "checksumValue": digest[7:]}]
        for deb in debs:
            [found] = [p for u, p in by_purl.items() if u.startswith(f"pkg:deb/debian/{deb.name}@")]
            assert found["versionInfo"] == deb.version
            assert found["checksums"][0]["checksumValue"] == deb.sha256
            assert found["sourceInfo"].startswith("built package from: ")
        libc6 = next(p for p in doc["packages"] if p["name"] == "libc6")
        assert "upstream=glibc" in libc6["externalRefs"][0]["referenceLocator"]
        zlib = next(p for p in doc["packages"] if p["name"] == "zlib1g")
        assert zlib["licenseDeclared"] == "Zlib"  # from its copyright file
        for wheel in wheels:
            purl = sbom.pypi_purl({"name": wheel.project, "version": wheel.version})
            assert by_purl[purl]["checksums"][0]["checksumValue"] == wheel.sha256
            assert by_purl[purl]["downloadLocation"] == wheel.url
        assert by_purl["pkg:pypi/distributed@2026.8.0"]["licenseDeclared"] == "BSD-3-Clause"
        assert len(doc["packages"]) == len(debs) + len(wheels) + 2  # + the app + the image
        ids = {p["name"]: p["SPDXID"] for p in doc["packages"]}
        relations = {
            (r["spdxElementId"], r["relationshipType"], r["relatedSpdxElement"])
            for r in doc["relationships"]
        }
        assert ("SPDXRef-DOCUMENT", "DESCRIBES", image["SPDXID"]) in relations
        assert (image["SPDXID"], "CONTAINS", ids["libc6"]) in relations
        assert (ids["lockstep"], "DEPENDS_ON", ids["distributed"]) in relations
        assert (ids["distributed"], "DEPENDS_ON", ids["dask"]) in relations
        assert (ids["python3.11"], "DEPENDS_ON", ids["python3.11-minimal"]) in relations


def test_inspect_lists_the_packages_from_the_sbom_beside_the_archive(built: Built) -> None:
    from tests.fixtures.build import lockstep

    proc = lockstep(
        ["inspect", str(built.path("worker")), "--packages", "--json"],
        cwd=built.root,
        cache=built.cache,
    )
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)["packages"]
    by_purl = {r["purl"].split("@")[0]: r for r in rows}
    assert by_purl["pkg:pypi/distributed"]["version"] == "2026.8.0"
    assert "pkg:deb/debian/python3.11" in by_purl
    assert (
        len(rows)
        == len(read_debian_lock(ROOT / "images/debian.lock.json").packages)
        + len(read_python_lock(ROOT / "images/python.lock.json"))
        + 2  # and the app and the image
    )
