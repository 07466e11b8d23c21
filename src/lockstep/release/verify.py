"""``lockstep verify``: rebuild a release from its tag and compare every digest.

The tagged commit is checked out into a temporary ``git worktree``, both
images are rebuilt with the release's stamp (see ``tagging.py``), and each
image digest is compared with the release manifest; on a mismatch the
message names the layer (base, python, app, manifest) or the config that
differs. With ``registry=True`` the registry must also serve exactly the
released manifest bytes under each pinned reference.
"""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lockstep.assembly import provenance
from lockstep.assembly.builder import BuildResult
from lockstep.core import vcs
from lockstep.core.digests import sha256_digest
from lockstep.core.errors import CheckFailed
from lockstep.core.progress import Progress, quiet
from lockstep.core.store import Cache
from lockstep.manifest import Stamp
from lockstep.oci.auth import credentials_for
from lockstep.oci.client import RegistryClient
from lockstep.oci.reference import parse_pinned
from lockstep.project import ROLES, load_project
from lockstep.release import attach, signing, sigstore_bundle
from lockstep.release.record import ReleaseManifest
from lockstep.release.tagging import build_stamped

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VerifyResult:
    release: ReleaseManifest
    rebuilt: dict[str, str]  # role -> digest
    registry_checked: bool
    signatures_checked: bool = False


def differences(release: ReleaseManifest, result: BuildResult) -> list[str]:
    """What differs between the release and the rebuild, most specific first."""
    found = []
    if result.build_id != release.build_id:
        inputs = [
            k
            for k in sorted(release.inputs)
            if release.inputs.get(k) != result.manifest.inputs.get(k)
        ]
        found.append(
            f"build id {result.build_id} vs released {release.build_id} "
            f"(inputs differ: {', '.join(inputs) or 'none named'})"
        )
    for name in [*release.layers, *(n for n in result.layers if n not in release.layers)]:
        ours = result.layers[name].digest if name in result.layers else None
        theirs = release.layers.get(name)
        if ours != theirs:
            found.append(f"layer {name!r} differs (released {theirs}, rebuilt {ours})")
    for role in ROLES:
        image = release.images.get(role)
        built = result.images[role]
        if image is None:
            found.append(f"the release has no {role} image")
            continue
        if built.config != image.config:
            found.append(f"{role} config differs (released {image.config}, rebuilt {built.config})")
        if built.digest != image.digest and built.config == image.config:
            found.append(
                f"{role} manifest differs (released {image.digest}, rebuilt {built.digest})"
            )
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
        manifests = {role: result.images[role].image.manifest for role in ROLES}
    problems = differences(release, result)
    if problems:
        raise CheckFailed(
            f"{release_path}: the rebuild of {release.tag} does not match: " + "; ".join(problems)
        )
    progress(f"rebuilt {release.tag}: both digests match the release")
    if registry:
        check_registry(release, manifests, plain_http)
        progress("the registry serves exactly the released manifests")
    if key is not None:
        check_signatures(release, key, plain_http)
        progress(
            "every image, SBOM and provenance is signed by the given key (cosign signature "
            "and Sigstore bundle), and each image's provenance attestation verifies"
        )
    return VerifyResult(
        release,
        {role: result.images[role].digest for role in ROLES},
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
    """Each image, and each attachment the release records, must be signed by ``key`` in
    both forms: a cosign signature (``.sig`` tag) and a Sigstore bundle referrer; and each
    image must carry a provenance attestation (a signed DSSE envelope) by ``key``."""
    with _clients(plain_http) as client_for:
        for role in ROLES:
            pinned = parse_pinned(release.images[role].reference)
            client = client_for(pinned.host)
            reference = f"{pinned.host}/{pinned.name}"
            found = release.attachments.get(role, {})
            wanted = {"image": pinned.digest}
            wanted.update({k: found[k] for k in ("sbom", "provenance") if k in found})
            for what, digest in sorted(wanted.items()):
                if not signed_by(client, pinned.name, reference, digest, key):
                    raise CheckFailed(
                        f"{release.images[role].reference}: the {what} {digest} has no "
                        "signature by the given public key in the registry; release it "
                        "with --sign-key, or check that you have the right key"
                    )
                sign = sigstore_bundle.SIGN_PREDICATE_TYPE
                if not sigstore_bundle.has_verified(
                    client, pinned.name, digest, key, sign, reference
                ):
                    raise CheckFailed(
                        f"{release.images[role].reference}: the {what} {digest} has no "
                        "Sigstore bundle signed by the given public key attached; release "
                        "it again with --sign-key, or check that you have the right key"
                    )
            predicate = provenance.PREDICATE_TYPE
            for form, found_it in (
                ("bundle", sigstore_bundle.has_verified),
                (
                    f"{attach.attestation_tag(pinned.digest)} tag",
                    sigstore_bundle.has_legacy_attestation,
                ),
            ):
                if not found_it(client, pinned.name, pinned.digest, key, predicate):
                    raise CheckFailed(
                        f"{release.images[role].reference}: no provenance attestation (a DSSE "
                        f"envelope of {predicate}) signed by the given public key in a {form}; "
                        "release it again with --sign-key, or check that you have the right key"
                    )


def check_registry(release: ReleaseManifest, manifests: dict[str, bytes], plain_http: bool) -> None:
    """Each pinned reference must serve exactly the rebuilt manifest bytes."""
    with _clients(plain_http) as client_for:
        for role in ROLES:
            pinned = parse_pinned(release.images[role].reference)
            client = client_for(pinned.host)
            served = client.get_manifest(pinned.name, pinned.digest)
            if served != manifests[role]:
                raise CheckFailed(
                    f"registry {pinned.host} serves {sha256_digest(served)} for "
                    f"{release.images[role].reference}, not the rebuilt manifest"
                )
