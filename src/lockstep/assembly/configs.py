"""Each image's config as a value: the role's labels and config, every layer's history
entry, and the base-only image that ``org.opencontainers.image.base.*`` names.

Pure functions of the build's input values, its layer records and its manifest.
"""

from __future__ import annotations

from collections.abc import Sequence

from lockstep.assembly import layout, oci
from lockstep.assembly.layercache import LayerRecord
from lockstep.core import settings
from lockstep.core.digests import short_id
from lockstep.core.platforms import Platform
from lockstep.inputs.build_inputs import BuildInputs, DebianInput
from lockstep.manifest import BuildManifest


def base_holds(debian: DebianInput, python: str) -> str:
    """What the base layer holds, by the Debian lock it came from."""
    count = len(debian.lock.packages)
    return (
        f"Debian bookworm, {count} packages of {debian.path.name} {debian.digest}, python {python}"
    )


def layer_history(
    inputs: BuildInputs, name: str, record: LayerRecord, manifest: BuildManifest
) -> str:
    """The ``created_by`` of one layer: ``lockstep <name>: <what it holds>``, by the
    inputs it was made from (``lockstep inspect`` shows it)."""
    project = inputs.project
    if name == "base":
        what = base_holds(inputs.debian, manifest.python)
    elif name.startswith(("python:", *(f"{role}:" for role in inputs.roles))):
        what = str(record.facts.get("holds", "locked wheels"))
    elif name == "app":
        what = f"{project.name} {project.version} (sources {inputs.sources})"
    else:
        what = (
            f"the build manifest /{layout.MANIFEST_FILE} (build {manifest.build_id}), the "
            f"Python lock /{layout.PYTHON_LOCK_FILE} and complete platform /{layout.PLATFORM_FILE}"
        )
    return f"lockstep {name}: {what}"


def base_image(
    project_name: str, debian: DebianInput, base_record: LayerRecord, platform: Platform
) -> oci.Image:
    """The base-only image value: the Debian base layer with the images' env and user,
    so ``org.opencontainers.image.base.digest`` names something anyone can recompute."""
    labels = layout.base_labels(
        project_name=project_name,
        base_digest=base_record.digest,
        debian_lock=debian.digest,
        created=layout.EPOCH,
    )
    env = {k: v for k, v in layout.image_env("base").items() if k != settings.ROLE}
    return oci.make_image(
        platform=platform,
        layers=[base_record.ref()],
        entrypoint=[f"/{layout.PYTHON}"],
        env=env,
        labels=labels,
        history=[f"lockstep base: {base_holds(debian, str(base_record.facts['python']))}"],
    )


def role_image(
    inputs: BuildInputs,
    role: str,
    manifest: BuildManifest,
    refs: Sequence[oci.LayerRef],
    history: Sequence[str],
    created: str,
    base: oci.Image,
) -> oci.Image:
    """One role's image: the shared layers with its own config."""
    project = inputs.project
    spec = project.images[role]
    labels = layout.labels(
        project_name=project.name,
        version=project.version,
        source_url=project.source_url,
        role=role,
        build_id=manifest.build_id,
        executors=manifest.executors,
        revision=manifest.stamp.commit if manifest.stamp else None,
        created=created,
        description=project.description,
        licenses=project.license,
        base_name=layout.archive_name(
            project.name, layout.BASE_NAME, "bookworm", short_id(base.digest)
        ),
        base_digest=base.digest,
    )
    return oci.make_image(
        platform=inputs.platform,
        layers=refs,
        entrypoint=spec.entrypoint,
        cmd=spec.cmd,
        env=layout.image_env(role),
        labels=labels,
        history=history,
        created=created,
    )
