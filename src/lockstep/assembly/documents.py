"""The build's documents as values: each image's SPDX SBOM and the in-toto provenance.

Both are computed from the input values (the locks' packages, with the licences
read once from the base layer's files and the wheels, cached under a key of their
inputs) and the images' digests; nothing is written here (``assembly.sinks``
writes them, ``release`` attaches them).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from lockstep.assembly import layout, provenance, sbom, suppliers
from lockstep.assembly.identity import builder_code_digest
from lockstep.assembly.layercache import LayerCache, LayerRecord
from lockstep.core.digests import canonical_json, of_hex, sha256_digest
from lockstep.core.progress import Progress
from lockstep.inputs.build_inputs import BuildInputs
from lockstep.inputs.python import fetch as pyfetch
from lockstep.inputs.python.lock import LockedWheel
from lockstep.manifest import BuildManifest


def inventory(
    inputs: BuildInputs, layers: LayerCache, base_record: LayerRecord, progress: Progress
) -> dict[str, Any]:
    """The packages of the locks with their licences (cached under its inputs' key):
    ``debian``, ``python`` (the shared lock), and ``python:<role>`` for a role with a lock
    of its own (the shared wheels and its own, as that role's image holds them)."""
    key = layers.key(
        "sbom",
        inventory=sbom.INVENTORY_FORMAT,
        base=base_record.digest,
        python_lock=inputs.python.digest,
        mirror=inputs.mirror,
        **{f"{role}_lock": own.digest for role, own in inputs.roles.items()},
    )
    known = layers.get_fact("sbom", key)
    if isinstance(known, dict):
        return known
    wheels = list(inputs.python.wheels)
    own_wheels = [w for own in inputs.roles.values() for w in own.wheels]
    facts = wheel_facts(layers, [*wheels, *own_wheels], progress)
    found = {
        "debian": sbom.debian_inventory(
            inputs.debian.lock, inputs.mirror, layers.staged(base_record)
        ),
        "python": sbom.python_inventory(wheels, facts),
    }
    for role, own in inputs.roles.items():
        found[_python(role)] = sbom.python_inventory([*wheels, *own.wheels], facts)
    layers.put_fact("sbom", key, found)
    return dict(json.loads(canonical_json(found)))  # as a cached one reads back


def wheel_facts(
    layers: LayerCache, wheels: Sequence[LockedWheel], progress: Progress
) -> dict[tuple[str, str], Any]:
    """``sbom.wheel_facts`` of each wheel by (sha256, URL), each cached under those: only a
    wheel not seen before is read (verified, once)."""
    keys = {
        (w.sha256, w.url): layers.key(
            "sbom-wheel", facts=sbom.WHEEL_FACTS_FORMAT, sha256=w.sha256, url=w.url
        )
        for w in wheels
    }
    facts = {which: layers.get_fact("sbom-wheel", key) for which, key in keys.items()}
    missing = [w for w in wheels if not isinstance(facts[w.sha256, w.url], dict)]
    data = pyfetch.fetch_wheels(missing, layers.cache, progress)
    for w in missing:
        facts[w.sha256, w.url] = sbom.wheel_facts(w, data[w.sha256])
        layers.put_fact("sbom-wheel", keys[w.sha256, w.url], facts[w.sha256, w.url])
    return facts


def sbom_documents(
    inputs: BuildInputs,
    manifest: BuildManifest,
    digests: Mapping[str, str],
    created: str,
    found: Mapping[str, Any],
) -> dict[str, bytes]:
    """Each role's SPDX document (``digests``: role -> image manifest digest)."""
    project = inputs.project
    out = {}
    for role, digest in digests.items():
        facts = sbom.ImageFacts(
            project=project.name,
            version=project.version,
            role=role,
            image_name=layout.image_name(project.name, role),
            digest=digest,
            created=created,
            build_id=manifest.build_id,
            sources=manifest.inputs["sources"],
            license=project.license,
            source_url=project.source_url,
            commit=manifest.stamp.commit if manifest.stamp else None,
            dependencies=sbom.requirement_names(project.dependencies),
            supplier=suppliers.project_supplier(project.people, project.source_url),
        )
        held = {"debian": found["debian"], "python": found.get(_python(role), found["python"])}
        out[role] = sbom.document(facts, held)
    return out


def provenance_statement(
    inputs: BuildInputs,
    manifest: BuildManifest,
    digests: Mapping[str, str],
    sboms: Mapping[str, bytes],
    created: str,
    found: Mapping[str, Any],
) -> bytes:
    """The in-toto statement (SLSA v1 provenance) of the images (``digests``: role -> image
    manifest digest), naming each SBOM as a byproduct."""
    project = inputs.project
    facts = provenance.BuildFacts(
        project=project.name,
        version=project.version,
        source_url=project.source_url,
        builder_format=manifest.inputs["builder"],
        builder_code=builder_code_digest(),
        build_id=manifest.build_id,
        inputs=manifest.inputs,
        stamp=manifest.stamp.to_dict() if manifest.stamp else None,
        created=created,
        python_lock=inputs.python.path.relative_to(project.root).as_posix(),
        debian_lock=inputs.debian.path.relative_to(project.root).as_posix(),
    )
    deps = [
        provenance.Dependency(f"deb:{r['name']}", of_hex(r["sha256"]), r["url"])
        for r in found["debian"]
    ]
    wheels = {r["sha256"]: r for role in ("", *inputs.roles) for r in found[_python(role)]}
    deps += [
        provenance.Dependency(f"pypi:{r['name']}", of_hex(r["sha256"]), r["url"])
        for r in wheels.values()
    ]
    subjects = [
        provenance.Subject(layout.image_name(project.name, role), digest)
        for role, digest in digests.items()
    ]
    suffix = layout.platform_suffix(inputs.platform.architecture, len(project.platforms))
    byproducts = [  # named as the sinks write them
        provenance.Dependency(sbom.file_name(role + suffix), sha256_digest(data))
        for role, data in sboms.items()
    ]
    return provenance.statement(facts, subjects, deps, byproducts)


def _python(role: str) -> str:
    """The inventory's wheels of ``role``'s image (``""``: the shared lock's)."""
    return f"python:{role}" if role else "python"
