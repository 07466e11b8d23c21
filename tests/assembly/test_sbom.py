"""The SPDX SBOM of each image: computed from the locks, validated by spdx-tools, reproducible."""

from __future__ import annotations

import email.parser
import json
from pathlib import Path
from typing import Any

import pytest

from lockstep.assembly import licenses, sbom, suppliers
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
    assert lic.expression == (
        "(BSD-3-Clause OR LicenseRef-Artistic) AND GPL-2.0-or-later AND LicenseRef-odd-one"
    )
    assert lic.refs["LicenseRef-odd-one"] == "The full text of the odd licence."
    assert "see /usr/share/doc/demo/copyright" in lic.refs["LicenseRef-Artistic"]
    assert licenses.copyright_license("free-form text\n", "x") == licenses.NOASSERTION
    known = licenses.expression_of(["GPL-2+ or LGPL-2.1+"], {}, "x")
    assert known.expression == "GPL-2.0-or-later OR LGPL-2.1-or-later"


def test_licence_names_are_normalised_by_license_expression() -> None:
    """DEP-5's spellings (a bare major version, a trailing +, Expat) and SPDX ids in any
    case come out as the SPDX list spells them; what no list knows is a LicenseRef."""

    def dep5(name: str) -> str:
        return licenses.normalise(name, {}, "x", dep5=True).expression

    assert dep5("Ms-PL") == "MS-PL"  # an SPDX id, not LicenseRef-Ms-PL
    assert dep5("Expat") == "MIT"
    assert dep5("Apache-2") == "Apache-2.0"
    assert dep5("GPL-2") == "GPL-2.0-only"
    assert dep5("GFDL-1.3+") == "GFDL-1.3-or-later"
    assert dep5("bsd-3-clause") == "BSD-3-Clause"
    assert dep5("GPL-2+ with Autoconf-exception-2.0") == (
        "GPL-2.0-or-later WITH Autoconf-exception-2.0"
    )
    assert dep5("BSD-3-clause or Artistic, and MIT") == (
        "BSD-3-Clause OR (LicenseRef-Artistic AND MIT)"  # AND binds tighter, as in SPDX
    )
    odd = licenses.normalise("GPL-2+ with Odd-exception", {}, "x", dep5=True)
    assert odd.expression == "LicenseRef-GPL-2-WITH-Odd-exception"
    broken = licenses.normalise("A and (B", {}, "x")
    assert broken.expression == "LicenseRef-A-and-B"


def meta(text: str) -> Any:
    return email.parser.Parser().parsestr(text)


def test_wheel_licence_from_metadata() -> None:
    assert licenses.wheel_license(
        meta("License-Expression: Apache-2.0 OR BSD-2-Clause\n"), "w"
    ).expression == ("Apache-2.0 OR BSD-2-Clause")
    assert licenses.wheel_license(meta("License: Apache 2.0\n"), "w").expression == "Apache-2.0"
    by_classifier = meta("Classifier: License :: OSI Approved :: MIT License\n")
    assert licenses.wheel_license(by_classifier, "w").expression == "MIT"
    vague = licenses.wheel_license(
        meta("Classifier: License :: OSI Approved :: BSD License\n"), "w"
    )
    assert vague.expression == "LicenseRef-BSD"  # a classifier without a version
    assert licenses.wheel_license(meta("Name: x\n"), "w") == licenses.NOASSERTION


def test_wheel_suppliers_from_metadata_else_the_index() -> None:
    url = "https://files.pythonhosted.org/packages/x/y.whl"
    assert suppliers.wheel_supplier(meta("Maintainer-email: Pallets <c@p.com>\n"), url) == (
        "Person: Pallets (c@p.com)"
    )
    both = meta("Author: Michael Williamson\nAuthor-email: mike@z.org\n")
    assert suppliers.wheel_supplier(both, url) == "Person: Michael Williamson (mike@z.org)"
    quoted = meta('Author-email: "Jason R. Coombs" <j@j.com>, Other <o@o.org>\n')
    assert suppliers.wheel_supplier(quoted, url) == "Person: Jason R. Coombs (j@j.com)"
    maintainer_first = meta("Author: A\nMaintainer: M (the one)\n")
    assert suppliers.wheel_supplier(maintainer_first, url) == "Person: M the one"
    assert suppliers.wheel_supplier(meta("Name: x\n"), url) == (
        "Organization: files.pythonhosted.org"
    )
    assert suppliers.project_supplier([], "https://github.com/o/r") == "Organization: github.com"
    assert suppliers.project_supplier([("", "a@b.c")], "") == "Person: a@b.c (a@b.c)"


def test_purls() -> None:
    row = {"name": "zlib1g", "version": "1:1.2.13.dfsg-1", "arch": "amd64", "source": "zlib"}
    assert sbom.deb_purl(row) == (
        "pkg:deb/debian/zlib1g@1:1.2.13.dfsg-1?arch=amd64&distro=debian-12&upstream=zlib"
    )
    assert sbom.pypi_purl({"name": "PyYAML", "version": "6.0.4"}) == "pkg:pypi/pyyaml@6.0.4"


# -- the real images ------------------------------------------------------------------


def load(built: Built, role: str) -> dict[str, Any]:
    path = Path(built.result["images"][role]["sbom"])
    assert path == built.out / f"{role}-amd64.spdx.json"  # beside worker-amd64.tar
    return dict(json.loads(path.read_bytes()))


@pytest.mark.slow
def test_sbom_validates_with_spdx_tools(built: Built) -> None:
    from spdx_tools.spdx.parser.parse_anything import parse_file
    from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

    for role in ("runner", "worker"):
        document = parse_file(str(built.out / f"{role}-amd64.spdx.json"))
        problems = validate_full_spdx_document(document)
        assert problems == [], [p.validation_message for p in problems[:5]]


@pytest.mark.slow
def test_sbom_lists_every_locked_package_and_the_image(built: Built) -> None:
    debs = read_debian_lock(built.root / "images/debian.lock.json").of("amd64").packages
    shared = read_python_lock(built.root / "images/python.lock.json")
    own = read_python_lock(built.root / "images/python-runner.lock.json")  # pyarrow alone
    assert [w.project for w in own] == ["pyarrow"]
    for role in ("runner", "worker"):
        wheels = [*shared, *own] if role == "runner" else shared
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
        assert ("pkg:pypi/pyarrow@26.0.1" in by_purl) == (role == "runner")
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
        == len(read_debian_lock(ROOT / "images/debian.lock.json").of("amd64").packages)
        + len(read_python_lock(ROOT / "images/python.lock.json"))
        + 2  # and the app and the image
    )


@pytest.mark.slow
def test_sbom_meets_the_ntia_minimum_elements(built: Built) -> None:
    """ntia-conformance-checker (the reference checker of the NTIA minimum elements):
    every component has a name, version, identifier and supplier; author, timestamp and
    dependency relationships are there."""
    from ntia_conformance_checker.sbom_checker import SbomChecker

    for role in ("runner", "worker"):
        checker = SbomChecker(str(built.out / f"{role}-amd64.spdx.json"))
        missing = {
            "suppliers": checker.components_without_suppliers,
            "names": checker.components_without_names,
            "versions": checker.components_without_versions,
            "identifiers": checker.components_without_identifiers,
        }
        assert checker.compliant, (role, {k: v for k, v in missing.items() if v})
        doc = load(built, role)
        assert all(p["supplier"] != "NOASSERTION" for p in doc["packages"])
        by_name = {p["name"]: p for p in doc["packages"]}
        assert by_name["distributed"]["supplier"].startswith("Person: Matthew Rocklin (")
        assert by_name["libc6"]["supplier"] == "Organization: Debian"
        assert by_name[f"lockstep-{role}"]["supplier"] == "Person: The lockstep developers"
