"""Provenance: an in-toto Statement v1 with a SLSA v1 provenance predicate, from the locks.

The subjects are the produced images (manifest digests); the build definition
names the source (the declared files' tree digest always, the git commit when
stamped), both locks by digest and every resolved dependency — each ``.deb``
and each wheel by URL and sha256 — and the run details name the builder, its
format and the digest of its own code. Like the SBOM it holds no clock and no
random id, so a rebuild of the same inputs writes the same bytes.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lockstep.core.digests import hex_of

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
MEDIA_TYPE = "application/vnd.in-toto+json"
FILE_NAME = "provenance.intoto.json"


def file_name(suffix: str = "") -> str:
    """Where a build writes one platform's statement: ``provenance<suffix>.intoto.json``
    (``suffix``: ``-<arch>`` in a project of several platforms, else empty)."""
    return FILE_NAME.replace(".", f"{suffix}.", 1)


@dataclass(frozen=True)
class Subject:
    name: str  # lockstep-worker, or the pushed repository HOST/REPO/lockstep-worker
    digest: str  # sha256:… of the image manifest


@dataclass(frozen=True)
class Dependency:
    name: str
    digest: str  # sha256:…
    uri: str = ""


@dataclass(frozen=True)
class BuildFacts:
    project: str
    version: str
    source_url: str
    builder_format: str  # the builder's identity: lockstep-build/2 zlib-ng/2.3.3 (…)
    builder_code: str  # digest of the running builder's code
    build_id: str
    inputs: Mapping[str, str]  # the build manifest's inputs
    stamp: Mapping[str, Any] | None
    created: str
    python_lock: str  # the lock files' paths in the project
    debian_lock: str


def _descriptor(dep: Dependency) -> dict[str, Any]:
    out: dict[str, Any] = {"name": dep.name, "digest": {"sha256": hex_of(dep.digest)}}
    if dep.uri:
        out["uri"] = dep.uri
    return out


def format_uri_part(identity: str) -> str:
    """The builder format of an identity (``lockstep-build/2`` of ``lockstep-build/2
    zlib-ng/2.3.3 (python-zlib-ng 1.1.0)``): the part ``buildType`` and ``builder.id`` name,
    as they must be URIs (RFC 3986: no spaces); the whole identity goes into
    ``internalParameters`` and ``builder.version``."""
    return urllib.parse.quote(identity.split(" ", 1)[0], safe="/")


def statement(
    facts: BuildFacts,
    subjects: Sequence[Subject],
    dependencies: Sequence[Dependency],
    byproducts: Sequence[Dependency] = (),
) -> bytes:
    """The statement's bytes (sorted keys, two-space indent)."""
    base = (facts.source_url or "https://lockstep.invalid").rstrip("/")
    commit = facts.stamp.get("commit") if facts.stamp else None
    source: dict[str, Any] = {
        "name": "sources",
        "digest": {"sha256": hex_of(facts.inputs["sources"])},
        "annotations": {
            "lockstep": "tree digest of the declared source files (docs/design.md §4.1)"
        },
    }
    if commit:
        source["digest"]["gitCommit"] = commit
        if facts.source_url:
            source["uri"] = f"git+{facts.source_url}@{commit}"
    resolved = [
        source,
        _descriptor(Dependency(facts.python_lock, facts.inputs["python_lock"])),
        _descriptor(Dependency(facts.debian_lock, facts.inputs["debian_lock"])),
        *(_descriptor(d) for d in dependencies),
    ]
    doc = {
        "_type": STATEMENT_TYPE,
        "subject": [
            {"name": s.name, "digest": {"sha256": hex_of(s.digest)}}
            for s in sorted(subjects, key=lambda s: s.name)
        ],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": f"{base}/build-types/{format_uri_part(facts.builder_format)}",
                "externalParameters": {
                    "project": facts.project,
                    "version": facts.version,
                    "source": source.get("uri", base),
                    "stamp": dict(facts.stamp) if facts.stamp else None,
                },
                "internalParameters": {"builder": facts.builder_format},
                "resolvedDependencies": resolved,
            },
            "runDetails": {
                "builder": {
                    "id": f"{base}/builders/{format_uri_part(facts.builder_format)}",
                    "version": {
                        facts.project: facts.version,
                        "code": facts.builder_code,
                        "toolchain": facts.builder_format,
                    },
                },
                "metadata": {"invocationId": facts.build_id},
                "byproducts": [_descriptor(b) for b in byproducts],
            },
        },
    }
    return (json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()
