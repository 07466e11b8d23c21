"""``lockstep release``: one build, pushed by digest, pinned, recorded and tagged.

In order, so a failure at any step leaves no release behind:

1. checks: the version is the project's, the tree is clean, the tag is free
   (or already at HEAD: a re-run), no other release of this version exists;
2. the stamped build of both images (DESIGN.md §4), into a temporary directory;
3. the push: every blob and both manifests, from the archives' exact bytes,
   skipping what the registry has (so a run after a failure resumes);
4. every pushed manifest checked by digest (``HEAD``);
5. deployment files rendered into ``release/<version>/`` and the release
   manifest ``release/<version>.json``, each written under a temporary name
   and renamed into place;
6. the annotated tag, last.

``dry_run`` does all but steps 3, 4 and 6 and touches no network. The
release files are outputs and are not committed: the tag points at the
commit that was built, and CI publishes the files (see the README).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from lockstep.atomic import staging_dir, write_bytes
from lockstep.build import oci
from lockstep.build.builder import BuildResult
from lockstep.build.cache import Cache
from lockstep.errors import BadInput, CheckFailed
from lockstep.project import ROLES, Project
from lockstep.release import render, vcs
from lockstep.release.auth import credentials_for
from lockstep.release.record import ImageRecord, ReleaseManifest
from lockstep.release.reference import Target
from lockstep.release.registry import PushStats, RegistryClient
from lockstep.release.stamped import build_stamped, release_stamp

log = logging.getLogger(__name__)
UPLOADS_AT_ONCE = 4
Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


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


def image_name(project: Project, role: str) -> str:
    """The repository name of one role's image under the target: ``lockstep-worker``."""
    return f"{project.name}-{role}"


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
    progress: Progress = _quiet,
) -> ReleaseResult:
    """Release ``project`` at its HEAD as ``version`` to ``target`` (see the module doc)."""
    check_version(project, version)
    repo = vcs.open_repo(project.root)
    vcs.check_clean(repo)
    commit = vcs.head_commit(repo)
    tag = vcs.tag_name(version)
    tag_exists = vcs.check_tag_free(repo, tag, commit)
    release_dir = project.root / vcs.RELEASE_DIR
    manifest_path = release_dir / f"{version}.json"
    if manifest_path.exists():
        previous = ReleaseManifest.read(manifest_path)
        if previous.commit != commit:
            raise CheckFailed(
                f"{manifest_path} already records release {version} of commit "
                f"{previous.commit[:12]}, not HEAD {commit[:12]}; bump [project] "
                "version, or remove that file if that release never happened"
            )

    with tempfile.TemporaryDirectory(prefix="lockstep-release-") as tmp:
        stamp = release_stamp(project.root, tag)
        if stamp.commit != commit or stamp.dirty:
            raise CheckFailed(
                f"{project.root}: HEAD moved or the tree changed during the release; run it again"
            )
        progress(f"building {version} (stamped {tag} at {commit[:12]})")
        result = build_stamped(project, cache, Path(tmp) / "out", stamp, progress)
        archives = {role: oci.read_archive(result.images[role].path) for role in ROLES}
        references = {
            role: target.pinned(image_name(project, role), archives[role].digest) for role in ROLES
        }
        stats = PushStats()
        if not dry_run:
            push_release(project, target, archives, version, stats, plain_http, progress)
        record = make_record(project, version, tag, commit, target, result, references)

    values = {
        "version": version,
        "tag": tag,
        "commit": commit,
        "build_id": result.build_id,
        "short_id": result.manifest.short_id,
        "registry": str(target),
        **{f"{role}_image": ref for role, ref in references.items()},
    }
    deploy_dir = release_dir / version
    with staging_dir(deploy_dir) as staged:
        files = render.render(project.root, values, staged, result.manifest.executors)
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
        tuple(deploy_dir / f.name for f in files),
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
    result: BuildResult,
    references: Mapping[str, str],
) -> ReleaseManifest:
    return ReleaseManifest(
        version=version,
        tag=tag,
        commit=commit,
        build_id=result.build_id,
        registry=str(target),
        images={
            role: ImageRecord(
                references[role], result.images[role].digest, result.images[role].config
            )
            for role in ROLES
        },
        executors=result.manifest.executors,
        inputs=dict(result.manifest.inputs),
        layers={name: record.digest for name, record in result.layers.items()},
    )


def push_release(
    project: Project,
    target: Target,
    archives: Mapping[str, oci.Archive],
    version: str,
    stats: PushStats,
    plain_http: bool,
    progress: Progress,
) -> None:
    """Push both images (blobs, then manifests by digest and by the version tag) and
    check that the registry serves each manifest under our digest."""
    client = RegistryClient(target.host, credentials_for(target.host), plain_http=plain_http)
    try:
        progress(f"pushing to {target} ({client.scheme})")
        pushed_to: str | None = None
        for role in ROLES:
            archive = archives[role]
            name = target.name(image_name(project, role))
            digests = [layer["digest"] for layer in archive.manifest["layers"]]
            digests.append(archive.config_digest)
            # Blobs of one image go up side by side; the next image mounts them.
            with ThreadPoolExecutor(UPLOADS_AT_ONCE, thread_name_prefix="push") as pool:
                futures = [
                    pool.submit(
                        client.push_blob, name, digest, archive.blob(digest), stats, pushed_to
                    )
                    for digest in digests
                ]
            for future in futures:
                future.result()
            raw = archive.blob(archive.digest)
            media_type = archive.manifest.get("mediaType", oci.MANIFEST_MEDIA_TYPE)
            client.put_manifest(name, archive.digest, raw, media_type, archive.digest, stats)
            client.put_manifest(name, version, raw, media_type, archive.digest, stats)
            pushed_to = name
        for role in ROLES:
            name = target.name(image_name(project, role))
            if not client.has_manifest(name, archives[role].digest):
                raise CheckFailed(
                    f"registry {target.host} does not serve {name}@"
                    f"{archives[role].digest} right after the push; check the "
                    "registry"
                )
        progress(
            f"pushed {stats.uploaded} blobs ({stats.uploaded_bytes} bytes), "
            f"{stats.present} already there, {stats.mounted} mounted; "
            f"{stats.manifests} manifest puts, all verified by digest"
        )
    finally:
        client.close()
