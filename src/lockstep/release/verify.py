"""``lockstep verify``: rebuild a release from its tag and compare every digest.

The tagged commit is checked out into a temporary ``git worktree``, both
images of every platform are rebuilt with the release's stamp (see
``tagging.py``), and each platform's image digest and each role's index digest
are compared with the release manifest; on a mismatch the message names the
platform and the layer (base, python, app, manifest) or the config that
differs. With ``registry=True`` the registry must also serve exactly the
rebuilt index bytes under each pinned reference, and each platform's manifest
bytes by its digest.
"""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lockstep.assembly import oci, provenance
from lockstep.assembly.builder import PlatformsResult
from lockstep.core import vcs
from lockstep.core.digests import sha256_digest
from lockstep.core.errors import CheckFailed
from lockstep.core.progress import Progress, quiet
from lockstep.core.store import Cache
from lockstep.manifest import Stamp
from lockstep.oci.auth import credentials_for
from lockstep.oci.client import RegistryClient
from lockstep.oci.media import INDEX_MEDIA_TYPE, MANIFEST_MEDIA_TYPES
from lockstep.oci.reference import parse_pinned
from lockstep.project import ROLES, load_project
from lockstep.release import attach, signing, sigstore_bundle
from lockstep.release.record import ReleaseManifest
from lockstep.release.tagging import build_stamped

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VerifyResult:
    release: ReleaseManifest
    rebuilt: dict[str, str]  # role -> its index's digest
    registry_checked: bool
    signatures_checked: bool = False


def differences(release: ReleaseManifest, result: PlatformsResult) -> list[str]:
    """What differs between the release and the rebuild, most specific first."""
    found = []
    first = next(iter(result.results.values()))
    if result.build_id != release.build_id:
        inputs = [
            k
            for k in sorted(release.inputs)
            if release.inputs.get(k) != first.manifest.inputs.get(k)
        ]
        found.append(
            f"build id {result.build_id} vs released {release.build_id} "
            f"(inputs differ: {', '.join(inputs) or 'none named'})"
        )
    platforms = [*release.layers, *(p for p in result.results if p not in release.layers)]
    for p in platforms:
        rebuilt = result.results.get(p)
        if rebuilt is None or p not in release.layers:
            found.append(
                f"platform {p} is {'not rebuilt' if rebuilt is None else 'not released'} "
                f"(released {', '.join(release.layers)}; rebuilt {', '.join(result.results)})"
            )
            continue
        theirs_all = release.layers[p]
        for name in [*theirs_all, *(n for n in rebuilt.layers if n not in theirs_all)]:
            ours = rebuilt.layers[name].digest if name in rebuilt.layers else None
            theirs = theirs_all.get(name)
            if ours != theirs:
                found.append(f"{p} layer {name!r} differs (released {theirs}, rebuilt {ours})")
        for role in ROLES:
            image = release.images.get(role)
            built = rebuilt.images[role]
            recorded = image.platforms.get(p) if image is not None else None
            if recorded is None:
                found.append(f"the release has no {p} {role} image")
                continue
            if built.config != recorded.config:
                found.append(
                    f"{role} {p} config differs (released {recorded.config}, rebuilt "
                    f"{built.config})"
                )
            elif built.digest != recorded.digest:
                found.append(
                    f"{role} {p} manifest differs (released {recorded.digest}, rebuilt "
                    f"{built.digest})"
                )
    for role in ROLES:
        image = release.images.get(role)
        index = result.indexes[role]
        if image is not None and not found and index.digest != image.digest:
            found.append(f"{role} index differs (released {image.digest}, rebuilt {index.digest})")
    return found


def verify(
    release_path: Path,
    repo_root: Path,
    cache: Cache,
    *,
    registry: bool = False,
    plain_http: bool = False,
    progress: Progress = quiet,
    public_key: Path | None = None,
) -> VerifyResult:
    """Rebuild the release at ``release_path`` from its tag in the repository at
    ``repo_root``; CheckFailed naming what differs."""
    release = ReleaseManifest.read(release_path)
    key = signing.load_public_key(public_key) if public_key else None
    repo = vcs.open_repo(repo_root, "verify")
    at = vcs.tag_commit(repo, release.tag)
    if at is None:
        raise CheckFailed(
            f"{release_path}: tag {release.tag} is not in {repo.working_tree_dir}; "
            "fetch the tags (git fetch --tags) and verify again"
        )
    if at != release.commit:
        raise CheckFailed(
            f"{release_path}: tag {release.tag} points at {at[:12]}, but the "
            f"release was built from {release.commit[:12]}"
        )
    with tempfile.TemporaryDirectory(prefix="lockstep-verify-") as tmp:
        tree = Path(tmp) / "tree"
        repo.git.worktree("add", "--detach", str(tree), release.commit)
        try:
            progress(f"rebuilding {release.tag} ({release.commit[:12]}) in a fresh worktree")
            project = load_project(tree)
            stamp = Stamp(commit=release.commit, tag=release.tag, dirty=False)
            result = build_stamped(project, cache, stamp, progress)
        finally:
            repo.git.worktree("remove", "--force", str(tree))
    problems = differences(release, result)
    if problems:
        raise CheckFailed(
            f"{release_path}: the rebuild of {release.tag} does not match: " + "; ".join(problems)
        )
    progress(
        f"rebuilt {release.tag}: every platform's images ({', '.join(result.results)}) and "
        "both indexes match the release"
    )
    if registry:
        check_registry(release, {role: result.indexes[role] for role in ROLES}, plain_http)
        progress("the registry serves exactly the released indexes and manifests")
    if key is not None:
        check_signatures(release, key, plain_http)
        progress(
            "every index, image, SBOM and provenance is signed by the given key (cosign signature "
            "and Sigstore bundle), and each image's provenance attestation verifies"
        )
    return VerifyResult(
        release,
        {role: result.indexes[role].digest for role in ROLES},
        registry,
        key is not None,
    )


def signed_by(client: RegistryClient, name: str, reference: str, digest: str, key: Any) -> bool:
    """Whether ``name``'s ``.sig`` tag for ``digest`` holds a payload for exactly this
    digest and repository, signed by ``key``."""
    for payload, signature in attach.read_signatures(client, name, digest):
        if not signing.verify(key, payload, signature):
            continue
        try:
            critical = json.loads(payload)["critical"]
            ok = (
                critical["type"] == attach.SIGNATURE_TYPE
                and critical["image"]["docker-manifest-digest"] == digest
                and critical["identity"]["docker-reference"] == reference
            )
        except (ValueError, KeyError, TypeError):
            ok = False
        if ok:
            return True
    return False


@contextlib.contextmanager
def _clients(plain_http: bool) -> Iterator[Callable[[str], RegistryClient]]:
    """``client_for(host)``: one client per registry host, all closed at the end."""
    clients: dict[str, RegistryClient] = {}

    def client_for(host: str) -> RegistryClient:
        if host not in clients:
            clients[host] = RegistryClient(host, credentials_for(host), plain_http=plain_http)
        return clients[host]

    try:
        yield client_for
    finally:
        for client in clients.values():
            client.close()


def check_signatures(release: ReleaseManifest, key: Any, plain_http: bool) -> None:
    """Each role's index, each platform's image and each attachment the release records
    must be signed by ``key`` in both forms: a cosign signature (``.sig`` tag) and a
    Sigstore bundle referrer; and each platform's image must carry a provenance attestation
    (a signed DSSE envelope) by ``key``."""
    with _clients(plain_http) as client_for:
        for role in ROLES:
            image = release.images[role]
            pinned = parse_pinned(image.reference)
            client = client_for(pinned.host)
            reference = f"{pinned.host}/{pinned.name}"
            found = release.attachments.get(role, {})
            wanted = {"index": pinned.digest}
            for p, platform_image in image.platforms.items():
                wanted[f"{p} image"] = platform_image.digest
                kinds = found.get(p, {})
                wanted.update({f"{p} {k}": kinds[k] for k in ("sbom", "provenance") if k in kinds})
            for what, digest in sorted(wanted.items()):
                if not signed_by(client, pinned.name, reference, digest, key):
                    raise CheckFailed(
                        f"{image.reference}: the {what} {digest} has no signature by the "
                        "given public key in the registry; release it with --sign-key, or "
                        "check that you have the right key"
                    )
                sign = sigstore_bundle.SIGN_PREDICATE_TYPE
                if not sigstore_bundle.has_verified(
                    client, pinned.name, digest, key, sign, reference
                ):
                    raise CheckFailed(
                        f"{image.reference}: the {what} {digest} has no Sigstore bundle "
                        "signed by the given public key attached; release it again with "
                        "--sign-key, or check that you have the right key"
                    )
            predicate = provenance.PREDICATE_TYPE
            for p, platform_image in image.platforms.items():
                digest = platform_image.digest
                for form, found_it in (
                    ("bundle", sigstore_bundle.has_verified),
                    (
                        f"{attach.attestation_tag(digest)} tag",
                        sigstore_bundle.has_legacy_attestation,
                    ),
                ):
                    if not found_it(client, pinned.name, digest, key, predicate):
                        raise CheckFailed(
                            f"{image.reference}: the {p} image {digest} has no provenance "
                            f"attestation (a DSSE envelope of {predicate}) signed by the given "
                            f"public key in a {form}; release it again with --sign-key, or "
                            "check that you have the right key"
                        )


def check_registry(
    release: ReleaseManifest, indexes: Mapping[str, oci.ImageIndex], plain_http: bool
) -> None:
    """Each pinned reference must serve exactly the rebuilt index bytes, and the registry
    each platform's rebuilt manifest bytes by its digest."""
    with _clients(plain_http) as client_for:
        for role in ROLES:
            pinned = parse_pinned(release.images[role].reference)
            client = client_for(pinned.host)
            index = indexes[role]
            wanted: list[tuple[str, bytes, Sequence[str]]] = [
                (pinned.digest, index.manifest, (INDEX_MEDIA_TYPE,))
            ]
            wanted += [(i.digest, i.manifest, MANIFEST_MEDIA_TYPES) for i in index.images]
            for digest, manifest, accept in wanted:
                served = client.get_manifest(pinned.name, digest, accept)
                if served != manifest:
                    raise CheckFailed(
                        f"registry {pinned.host} serves {sha256_digest(served)} for "
                        f"{pinned.host}/{pinned.name}@{digest} of "
                        f"{release.images[role].reference}, not the rebuilt bytes"
                    )
