"""``lockstep release``: one build, pushed by digest, pinned, recorded and tagged.

In order, so a failure at any step leaves no release behind:

1. checks: the version is the project's, the tree is clean, the tag is free
   (or already at HEAD: a re-run), no other release of this version exists;
2. the stamped build of both images for every platform the project declares, and
   each role's OCI image index over them (docs/design.md §4.1), as values: nothing
   is written;
3. the push, per role: every blob and each platform's manifest, then the index (by
   digest and by the version tag), the exact bytes of the values the build returned
   (layer blobs from the build's cache), skipping what the registry has (so a run
   after a failure resumes); then each platform image's SBOM and provenance, also
   the build's values (no file is read back), and with a key the signatures;
4. every pushed index and manifest checked by digest (``HEAD``);
5. deployment files rendered into ``release/<version>/`` (the Dask operator's
   form in ``operator/``; when signed, the admission policy for the signing key in
   ``admission/``) and the release
   manifest ``release/<version>.json``, each written under a temporary name
   and renamed into place;
6. the annotated tag, last.

``dry_run`` does all but steps 3, 4 and 6 and touches no network. The
release files are outputs and are not committed: the tag points at the
commit that was built, and CI publishes the files (see docs/guides/releasing.md).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lockstep.assembly import oci, provenance, sbom
from lockstep.assembly.builder import BuildResult, PlatformsResult
from lockstep.assembly.layercache import read_blob
from lockstep.assembly.layout import image_name
from lockstep.core import vcs
from lockstep.core.atomic import staging_dir, write_bytes
from lockstep.core.errors import BadInput, CheckFailed
from lockstep.core.progress import Progress, quiet
from lockstep.core.store import Cache
from lockstep.oci.auth import credentials_for
from lockstep.oci.client import PushStats, RegistryClient
from lockstep.oci.media import EMPTY_CONFIG, INDEX_MEDIA_TYPE, MANIFEST_MEDIA_TYPE
from lockstep.oci.reference import Target
from lockstep.project import ROLES, Project
from lockstep.release import attach, render, sign_release, signing
from lockstep.release.record import ImageRecord, PlatformImage, ReleaseManifest
from lockstep.release.tagging import (
    RELEASE_DIR,
    build_stamped,
    check_clean,
    check_tag_free,
    release_stamp,
    tag_name,
)

log = logging.getLogger(__name__)
UPLOADS_AT_ONCE = 4


@dataclass(frozen=True)
class ReleaseResult:
    manifest: ReleaseManifest
    manifest_path: Path
    deploy_dir: Path
    deploy_files: tuple[Path, ...]
    stats: PushStats
    tagged: bool  # a tag was created by this run
    dry_run: bool
    notes: tuple[str, ...] = field(default=())


def check_version(project: Project, version: str) -> None:
    if version != project.version:
        raise BadInput(
            f"release {version!r} but {project.pyproject} [project] version is "
            f'{project.version!r}; set version = "{version}" there and commit, or '
            f"release {project.version}"
        )


def tag_message(
    project: Project, version: str, build_id: str, references: Mapping[str, str]
) -> str:
    lines = [f"{project.name} {version}", "", f"build_id {build_id}"]
    lines += [f"{role} {ref}" for role, ref in sorted(references.items())]
    return "\n".join(lines) + "\n"


def release(
    project: Project,
    version: str,
    target: Target,
    cache: Cache,
    *,
    dry_run: bool = False,
    plain_http: bool = False,
    progress: Progress = quiet,
    sign_key: Path | None = None,
) -> ReleaseResult:
    """Release ``project`` at its HEAD as ``version`` to ``target`` (see the module doc).
    ``sign_key``: an ECDSA P-256 PEM key; each role's index, each platform's image and
    its SBOM and provenance artifacts are signed (``release.sign_release``)."""
    key = signing.load_private_key(sign_key) if sign_key else None
    if key is not None and (project.root / render.TEMPLATES_DIR / render.POLICY_FILE).exists():
        raise BadInput(
            f"{render.TEMPLATES_DIR}/{render.POLICY_FILE}: a signed release writes this "
            "file itself (the admission policy for the key); rename the template"
        )
    check_version(project, version)
    repo = vcs.open_repo(project.root, "a release")
    check_clean(repo)
    commit = vcs.head_commit(repo)
    tag = tag_name(version)
    tag_exists = check_tag_free(repo, tag, commit)
    release_dir = project.root / RELEASE_DIR
    manifest_path = release_dir / f"{version}.json"
    if manifest_path.exists():
        previous = ReleaseManifest.read(manifest_path)
        if previous.commit != commit:
            raise CheckFailed(
                f"{manifest_path} already records release {version} of commit "
                f"{previous.commit[:12]}, not HEAD {commit[:12]}; bump [project] "
                "version, or remove that file if that release never happened"
            )

    stamp = release_stamp(project.root, tag)
    if stamp.commit != commit or stamp.dirty:
        raise CheckFailed(
            f"{project.root}: HEAD moved or the tree changed during the release; run it again"
        )
    progress(f"building {version} (stamped {tag} at {commit[:12]})")
    result = build_stamped(project, cache, stamp, progress)
    indexes = {role: result.indexes[role] for role in ROLES}
    references = {
        role: target.pinned(image_name(project.name, role), indexes[role].digest) for role in ROLES
    }
    stats = PushStats()
    if not dry_run:
        push_release(project, target, indexes, cache, version, stats, plain_http, progress)
    attachments = attach_release(
        project, target, result, stats, plain_http, progress, key=key, dry_run=dry_run
    )
    record = make_record(project, version, tag, commit, target, result, references)
    record = dataclasses.replace(record, attachments=attachments)
    first = next(iter(result.results.values()))

    values = {
        "version": version,
        "tag": tag,
        "commit": commit,
        "build_id": result.build_id,
        "short_id": first.manifest.short_id,
        "registry": str(target),
        **{f"{role}_image": ref for role, ref in references.items()},
    }
    deploy_dir = release_dir / version
    with staging_dir(deploy_dir) as staged:
        files = render.render(
            project.root, values, staged, first.manifest.executors, project.deploy
        )
        if key is not None:
            policy = render.admission_policy(
                project.name,
                [f"{target.host}/{target.name(image_name(project.name, role))}" for role in ROLES],
                signing.public_pem(key).decode(),
            )
            policy_path = staged / render.POLICY_DIR / render.POLICY_FILE
            policy_path.parent.mkdir()
            policy_path.write_text(policy)
            files.append(policy_path)
    write_bytes(manifest_path, record.to_json())
    log.debug("wrote %s and %s/", manifest_path, deploy_dir)

    tagged = False
    notes = []
    if dry_run:
        notes.append("dry run: nothing pushed, no tag")
    elif tag_exists:
        message = vcs.tag_message(repo, tag) or ""
        if result.build_id not in message or not all(r in message for r in references.values()):
            notes.append(
                f"tag {tag} was already at HEAD (its message does not list this "
                "release's digests; left as it is)"
            )
        else:
            notes.append(f"tag {tag} was already at HEAD")
    else:
        vcs.create_tag(
            repo, tag, commit, tag_message(project, version, result.build_id, references)
        )
        tagged = True
    return ReleaseResult(
        record,
        manifest_path,
        deploy_dir,
        tuple(deploy_dir / f.relative_to(staged) for f in files),
        stats,
        tagged,
        dry_run,
        tuple(notes),
    )


def make_record(
    project: Project,
    version: str,
    tag: str,
    commit: str,
    target: Target,
    result: PlatformsResult,
    references: Mapping[str, str],
) -> ReleaseManifest:
    first = next(iter(result.results.values()))
    return ReleaseManifest(
        version=version,
        tag=tag,
        commit=commit,
        build_id=result.build_id,
        registry=str(target),
        images={
            role: ImageRecord(
                references[role],
                result.indexes[role].digest,
                {
                    p: PlatformImage(r.images[role].digest, r.images[role].config)
                    for p, r in result.results.items()
                },
            )
            for role in ROLES
        },
        executors=first.manifest.executors,
        inputs=dict(first.manifest.inputs),
        layers={
            p: {name: layer.digest for name, layer in r.layers.items()}
            for p, r in result.results.items()
        },
    )


ARTIFACT_TYPES = {"sbom": sbom.MEDIA_TYPE, "provenance": provenance.MEDIA_TYPE}


def attach_release(
    project: Project,
    target: Target,
    result: PlatformsResult,
    stats: PushStats,
    plain_http: bool,
    progress: Progress,
    *,
    key: Any = None,
    dry_run: bool = False,
) -> dict[str, dict[str, dict[str, str]]]:
    """Push each platform image's SBOM and provenance as artifacts whose ``subject`` is that
    image, list them in its ``sha256-<hex>`` referrers index, and with ``key`` sign the image
    and both artifacts and attest the provenance (``release.sign_release``), then sign each
    role's index. The digests, per role and per subject (a platform, or ``index``). A dry
    run only computes the artifacts' digests."""
    found: dict[str, dict[str, dict[str, str]]] = {role: {} for role in ROLES}
    artifacts = {
        (role, p): {
            kind: attach.artifact_manifest(
                ARTIFACT_TYPES[kind],
                _document(r, role, kind),
                r.images[role].image.manifest,
                r.created,
            )
            for kind in ARTIFACT_TYPES
        }
        for role in ROLES
        for p, r in result.results.items()
    }
    for (role, p), made in artifacts.items():
        found[role][p] = {kind: a.digest for kind, a in made.items()}
    if dry_run:
        return found
    created = next(iter(result.results.values())).created
    client = RegistryClient(target.host, credentials_for(target.host), plain_http=plain_http)
    try:
        for role in ROLES:
            name = target.name(image_name(project.name, role))
            for p, r in result.results.items():
                image = r.images[role].image
                made = artifacts[role, p]
                for kind, artifact in made.items():
                    blobs = [EMPTY_CONFIG, _document(r, role, kind)]
                    attach.push_artifact(client, name, artifact, blobs, stats)
                signed = (
                    sign_release.sign_image(
                        client, name, image.manifest, made, r.provenance, key, r.created, stats
                    )
                    if key is not None
                    else sign_release.UNSIGNED
                )
                found[role][p].update(signed.fields)
                found[role][p]["referrers"] = attach.add_referrers(
                    client,
                    name,
                    image.digest,
                    [(ARTIFACT_TYPES[k], a) for k, a in sorted(made.items())]
                    + list(signed.image_referrers),
                    stats,
                )
            if key is not None:
                index = result.indexes[role]
                signed = sign_release.sign_index(client, name, index.manifest, key, created, stats)
                found[role]["index"] = {
                    **signed.fields,
                    "referrers": attach.add_referrers(
                        client, name, index.digest, list(signed.image_referrers), stats
                    ),
                }
        progress(
            "attached SBOM and provenance to every platform's image"
            + (
                " and signed indexes, images and attachments (cosign signatures, Sigstore "
                "bundles, a signed provenance attestation per image)"
                if key is not None
                else ""
            )
        )
    finally:
        client.close()
    return found


def _document(result: BuildResult, role: str, kind: str) -> bytes:
    """One platform image's SBOM, or its platform's provenance (which names both roles)."""
    return result.images[role].sbom if kind == "sbom" else result.provenance


def push_release(
    project: Project,
    target: Target,
    indexes: Mapping[str, oci.ImageIndex],
    cache: Cache,
    version: str,
    stats: PushStats,
    plain_http: bool,
    progress: Progress,
) -> None:
    """Push each role's index: every platform image's blobs and manifest by digest, then the
    index by digest and by the version tag; then check that the registry serves each index
    and manifest under our digest. Layer blobs come from ``cache``, where the build put
    them; configs and manifests are the values' own."""
    client = RegistryClient(target.host, credentials_for(target.host), plain_http=plain_http)
    try:
        progress(f"pushing to {target} ({client.scheme})")
        pushed_to: str | None = None
        for role in ROLES:
            index = indexes[role]
            name = target.name(image_name(project.name, role))
            blobs: dict[str, bytes | Callable[[], bytes]] = {}
            for image in index.images:  # a layer the platforms share goes up once
                for layer in image.layers:
                    blobs.setdefault(
                        layer.digest, functools.partial(read_blob, cache, layer.digest)
                    )
                blobs[image.config_digest] = image.config
            # Blobs of one role go up side by side; the next role mounts them.
            with ThreadPoolExecutor(UPLOADS_AT_ONCE, thread_name_prefix="push") as pool:
                futures = [
                    pool.submit(client.push_blob, name, digest, data, stats, pushed_to)
                    for digest, data in blobs.items()
                ]
            for future in futures:
                future.result()
            for image in index.images:
                client.put_manifest(
                    name, image.digest, image.manifest, MANIFEST_MEDIA_TYPE, image.digest, stats
                )
            for reference in (index.digest, version):
                client.put_manifest(
                    name, reference, index.manifest, INDEX_MEDIA_TYPE, index.digest, stats
                )
            pushed_to = name
        for role in ROLES:
            name = target.name(image_name(project.name, role))
            index = indexes[role]
            served = [
                client.has_manifest(name, index.digest, (INDEX_MEDIA_TYPE,)),
                *(client.has_manifest(name, image.digest) for image in index.images),
            ]
            if not all(served):
                raise CheckFailed(
                    f"registry {target.host} does not serve {name}@{index.digest} (or a "
                    "platform's manifest in it) right after the push; check the registry"
                )
        progress(
            f"pushed {stats.uploaded} blobs ({stats.uploaded_bytes} bytes), "
            f"{stats.present} already there, {stats.mounted} mounted; "
            f"{stats.manifests} manifest puts, all verified by digest"
        )
    finally:
        client.close()
