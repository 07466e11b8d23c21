"""Bundles in an OCI registry, on the runner's side: push, resolve, pull, inspect.

``push_bundle`` uploads a bundle directory as the artifact of
``lockstep.bundles.artifact``: every blob the repository lacks (``HEAD``
first, so a re-push, or a push run again after the registry died in the
middle, uploads only what is missing), wheels from the runner's verified
cache (``core/fetch.py``) and only when they must be uploaded, the manifest
last, by its digest: ``HOST/REPO@sha256:…`` is the bundle's reference.

``resolve`` is what preflight does with a reference: the manifest (its bytes
checked against the digest), a ``HEAD`` of every blob, then the code blob
(checked, unpacked into the runner's cache by tree digest) so the local checks
(syntax, names, the import probe) run on exactly the bytes workers will pull.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lockstep.bundles.artifact import (
    CODE_TITLE,
    LOCK_TITLE,
    MAX_CODE_BYTES,
    Artifact,
    ArtifactRefused,
    Descriptor,
    build_manifest,
    code_tar,
    parse_bundle_reference,
    parse_manifest,
    read_code_tar,
)
from lockstep.bundles.format import Bundle, load_bundle
from lockstep.bundles.pull import fetch_manifest
from lockstep.bundles.store import BundleStore
from lockstep.core.digests import sha256_digest
from lockstep.core.errors import BadInput, CheckFailed
from lockstep.oci.auth import credentials_for
from lockstep.oci.client import PushStats, RegistryClient
from lockstep.oci.media import (
    BUNDLE_CODE_MEDIA_TYPE,
    BUNDLE_ENV_MEDIA_TYPE,
    BUNDLE_LOCK_MEDIA_TYPE,
    EMPTY_CONFIG,
    MANIFEST_MEDIA_TYPE,
    WHEEL_MEDIA_TYPE,
)
from lockstep.oci.reference import Pinned, ReferenceRefused

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pushed:
    reference: str
    digest: str  # the manifest's
    bundle: str  # the tree digest
    size: int  # every blob
    seconds: float
    stats: PushStats

    def to_json(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "digest": self.digest,
            "bundle": self.bundle,
            "size": self.size,
            "seconds": round(self.seconds, 3),
            **self.stats.to_dict(),
        }


def client_for(host: str, plain_http: bool = False) -> RegistryClient:
    return RegistryClient(host, credentials_for(host), plain_http=plain_http)


def ref_of(text: str) -> Pinned:
    try:
        return parse_bundle_reference(text)
    except ReferenceRefused as exc:
        raise BadInput(str(exc)) from exc


def push_bundle(
    root: Path,
    host: str,
    repository: str,
    *,
    plain_http: bool = False,
    progress: Callable[[str], None] = lambda _line: None,
    prebuilt: bool = False,
) -> Pushed:
    """Push the bundle at ``root`` to ``host/repository``; its pinned reference.
    ``prebuilt``: with its environment as one layer for this platform and Python
    (``bundles/prebuilt.py``), beside the wheels."""
    from lockstep.bundles.lockfile import relock_hint
    from lockstep.core.fetch import fetch_verified
    from lockstep.core.store import Cache, default_cache_dir

    start = time.monotonic()
    bundle, problems = load_bundle(root.resolve())
    if bundle is None or problems:
        raise BadInput("; ".join(f"{f}: {m}" for f, m in problems[:3]))
    raw_lock = bundle.lock_data()
    lock = bundle.lock()
    if raw_lock is not None and lock is None:
        raise BadInput(f"{root}/{LOCK_TITLE} does not read; {relock_hint(bundle.root)}")
    code = code_tar(bundle.files)
    blobs: list[tuple[Descriptor, bytes | Callable[[], bytes]]] = []
    code_desc = Descriptor(BUNDLE_CODE_MEDIA_TYPE, sha256_digest(code), len(code), CODE_TITLE)
    blobs.append((code_desc, code))
    lock_desc = None
    if raw_lock is not None:
        lock_desc = Descriptor(
            BUNDLE_LOCK_MEDIA_TYPE, sha256_digest(raw_lock), len(raw_lock), LOCK_TITLE
        )
        blobs.append((lock_desc, raw_lock))
    wheels: list[Descriptor] = []
    cache = Cache(default_cache_dir())
    for wheel in lock.wheels if lock else ():
        # Its size is in the manifest: read (and verify) it from the cache now.
        data = fetch_verified(
            cache, wheel.url, wheel.sha256, f"{root}: {wheel.filename}", relock_hint(root)
        )
        desc = Descriptor(WHEEL_MEDIA_TYPE, wheel.digest, len(data), wheel.filename)
        wheels.append(desc)
        blobs.append((desc, _reader(cache, wheel.url, wheel.sha256, wheel.filename, root)))
    envs: list[Descriptor] = []
    if prebuilt and lock is not None and lock.wheels:
        from lockstep.bundles.prebuilt import env_layer

        for platform, part in lock.platforms.items():
            if not part.wheels:
                continue
            progress(
                f"making the prebuilt environment of {len(part.wheels)} wheel(s) for {platform}"
            )
            layer = env_layer(
                lock, lambda w: _reader(cache, w.url, w.sha256, w.filename, root)(), cache,
                platform=platform,
            )  # fmt: skip
            env = Descriptor(BUNDLE_ENV_MEDIA_TYPE, layer.digest, layer.size,
                             f"env-{layer.tag}-{platform.replace('/', '-')}.tar.gz",
                             layer.platform, layer.tag)  # fmt: skip
            envs.append(env)
            blobs.append((env, _blob_reader(cache, layer.digest)))
    blobs.append((Descriptor("config", sha256_digest(EMPTY_CONFIG), 2, "config"), EMPTY_CONFIG))
    manifest = build_manifest(bundle.digest, code_desc, lock_desc, wheels, envs)
    digest = sha256_digest(manifest)
    client = client_for(host, plain_http)
    stats = PushStats()
    try:
        for desc, payload in blobs:
            client.push_blob(repository, desc.digest, payload, stats)
        client.put_manifest(repository, digest, manifest, MANIFEST_MEDIA_TYPE, digest, stats)
    finally:
        client.close()
    reference = f"{host}/{repository}@{digest}"
    pushed = Pushed(
        reference,
        digest,
        bundle.digest,
        sum(d.size for d, _ in blobs),
        time.monotonic() - start,
        stats,
    )
    progress(
        f"pushed bundle {bundle.digest} as {reference}: {stats.uploaded} blob(s) uploaded "
        f"({stats.uploaded_bytes} bytes), {stats.present} already there, "
        f"{pushed.seconds:.2f} s"
    )
    return pushed


def _reader(cache: Any, url: str, sha256: str, name: str, root: Path) -> Callable[[], bytes]:
    """The wheel's bytes, read again (and verified) only when it must be uploaded."""
    from lockstep.bundles.lockfile import relock_hint
    from lockstep.core.fetch import fetch_verified

    return lambda: fetch_verified(cache, url, sha256, f"{root}: {name}", relock_hint(root))


def _blob_reader(cache: Any, digest: str) -> Callable[[], bytes]:
    """A blob of the runner's cache, read only when it must be uploaded."""
    return lambda: bytes(cache.blob_path(digest).read_bytes())


def read_artifact(ref: Pinned, plain_http: bool = False) -> tuple[Artifact, RegistryClient]:
    client = client_for(ref.host, plain_http)
    try:
        return parse_manifest(fetch_manifest(client, ref)), client
    except ArtifactRefused as exc:
        raise CheckFailed(f"{ref}: {exc}") from exc


def missing_blobs(client: RegistryClient, ref: Pinned, artifact: Artifact) -> list[str]:
    """``"<title> <digest>"`` of every blob of the artifact the registry does not have."""
    return [
        f"{d.title} {d.digest}"
        for d in artifact.blobs
        if not client.has_blob(ref.name, d.digest, actions="pull")
    ]


def fetch_code(client: RegistryClient, ref: Pinned, artifact: Artifact, store: BundleStore) -> Path:
    """The bundle's files in ``store`` (pulled and verified if not there yet)."""
    path = store.has(artifact.digest)
    if path is not None:
        return path
    data = client.get_blob(ref.name, artifact.code.digest, MAX_CODE_BYTES)
    try:
        return store.put(artifact.digest, read_code_tar(data))
    except ValueError as exc:  # BundleRefused, ArtifactRefused
        raise CheckFailed(f"{ref}: {exc}") from exc


def runner_store() -> BundleStore:
    from lockstep.core.store import default_cache_dir

    return BundleStore(default_cache_dir() / "bundles")


def resolve(text: str) -> tuple[Bundle, list[tuple[str, str]]]:
    """The bundle a spec names by reference, checked in its registry (every blob there)
    and its code in the runner's cache; ``BadInput``/``CheckFailed``/``ServiceFailed``."""
    ref = ref_of(text)
    artifact, client = read_artifact(ref)
    try:
        missing = missing_blobs(client, ref, artifact)
        if missing:
            raise CheckFailed(
                f"registry {ref.host} lacks {len(missing)} blob(s) of {ref} "
                f"({', '.join(missing[:3])}); push the bundle again"
            )
        path = fetch_code(client, ref, artifact, runner_store())
    finally:
        client.close()
    bundle, problems = load_bundle(path)
    if bundle is None or bundle.digest != artifact.digest:
        raise CheckFailed(f"{ref}: its code in {path} does not read back as {artifact.digest}")
    return Bundle(bundle.root, bundle.digest, bundle.files, reference=str(ref)), problems


def pull_bundle(text: str, dest: Path, plain_http: bool = False) -> dict[str, Any]:
    """Write the bundle's files into ``dest`` (new or empty), its wheels into the runner's
    cache (so `lockstep run` from ``dest`` sends them without a download)."""
    from lockstep.core.store import Cache, default_cache_dir

    ref = ref_of(text)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise BadInput(f"{dest}: exists and is not an empty directory; name a new one")
    artifact, client = read_artifact(ref, plain_http)
    cache = Cache(default_cache_dir())
    try:
        code = client.get_blob(ref.name, artifact.code.digest, MAX_CODE_BYTES)
        try:
            files = read_code_tar(code)
        except ArtifactRefused as exc:
            raise CheckFailed(f"{ref}: {exc}") from exc
        from lockstep.core.digests import tree_digest

        if tree_digest(files) != artifact.digest:
            raise CheckFailed(
                f"{ref}: its code has the tree digest {tree_digest(files)}, the manifest "
                f"says {artifact.digest}; refused, nothing written"
            )
        got = len(code)
        for wheel in artifact.wheels:
            if cache.get_blob(wheel.digest) is None:
                data = client.get_blob(ref.name, wheel.digest, 1 << 30)
                cache.put_blob(data)
                got += len(data)
    finally:
        client.close()
    dest.mkdir(parents=True, exist_ok=True)
    for f in files:
        path = dest / f.path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(f.data)
        path.chmod(0o755 if f.executable else 0o644)
    return {
        "reference": str(ref),
        "bundle": artifact.digest,
        "dir": str(dest),
        "files": len(files),
        "wheels": len(artifact.wheels),
        "bytes_fetched": got,
    }


def inspect_bundle(text: str, plain_http: bool = False) -> dict[str, Any]:
    """What a reference holds: digests, files with sizes, the lock's wheels, total size."""
    ref = ref_of(text)
    artifact, client = read_artifact(ref, plain_http)
    try:
        files = read_code_tar(client.get_blob(ref.name, artifact.code.digest, MAX_CODE_BYTES))
    except ArtifactRefused as exc:
        raise CheckFailed(f"{ref}: {exc}") from exc
    finally:
        client.close()
    return {
        "reference": str(ref),
        "digest": ref.digest,
        "bundle": artifact.digest,
        "size": artifact.size,
        "code": {"digest": artifact.code.digest, "size": artifact.code.size},
        "files": [{"path": f.path, "size": len(f.data), "executable": f.executable} for f in files],
        "lock": None
        if artifact.lock is None
        else {"digest": artifact.lock.digest, "size": artifact.lock.size},
        "wheels": [
            {"filename": w.title, "digest": w.digest, "size": w.size} for w in artifact.wheels
        ],
        "environments": [
            {"platform": e.platform, "tag": e.tag, "digest": e.digest, "size": e.size}
            for e in artifact.envs
        ],
    }


def _size(n: int) -> str:
    return f"{n} B" if n < 10_000 else f"{n / 1e3:.1f} kB" if n < 10**6 else f"{n / 1e6:.1f} MB"


def describe_inspect(info: dict[str, Any]) -> str:
    blobs = 2 + len(info["wheels"]) + bool(info["lock"]) + len(info.get("environments", []))
    lines = [
        f"reference {info['reference']}",
        f"bundle    {info['bundle']}",
        f"size      {_size(info['size'])} in {blobs} blob(s); code {_size(info['code']['size'])} "
        f"(tar of {len(info['files'])} file(s))",
    ]
    lines += [
        f"  {f['size']:>10}  {'x' if f['executable'] else '-'}  {f['path']}" for f in info["files"]
    ]
    if info["lock"]:
        lines.append(f"lock      {info['lock']['digest']} ({len(info['wheels'])} wheel(s))")
    lines += [f"  {w['size']:>10}  {w['digest'][:19]}…  {w['filename']}" for w in info["wheels"]]
    lines += [
        f"prebuilt  {e['platform']} {e['tag']}: {e['digest'][:19]}… {_size(e['size'])}"
        for e in info.get("environments", [])
    ]
    return "\n".join(lines)
