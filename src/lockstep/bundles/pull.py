"""Bundles pulled by the worker itself from an OCI registry, by digest.

The runner sends only the reference (``HOST/REPO@sha256:…``, the digest of the
artifact's manifest, ``lockstep.bundles.artifact``); the worker fetches
what it lacks, straight from the registry, never through the scheduler:

- the manifest, whose bytes must have the reference's digest (then kept under
  ``LOCKSTEP_BUNDLE_DIR/manifests/<hex>``, so a worker holding everything asks
  the registry nothing);
- the code blob, if the bundle store lacks the manifest's tree digest: its
  bytes must have the blob's digest, and the files the tree digest
  (``BundleStore.put``); anything else is refused and nothing is cached;
- a prebuilt environment layer for this worker's platform and Python, if the
  artifact has one and the environment is not ready: extracted as it streams in,
  used only once its digest matched (``bundles/env_layer.py``); else
- the wheels its environment lacks (``EnvStore.status``), each checked against
  its sha256 before it is kept (``EnvStore.put_wheel``).

Credentials and TLS are those of ``lockstep release`` (``lockstep.oci.client``):
Docker's ``config.json`` (``DOCKER_CONFIG``, mounted from a Secret by the
deployment files), the system CA store (or ``SSL_CERT_FILE``), plain HTTP only
for a loopback registry that does not speak TLS.

Handler: ``lockstep_bundle_pull(reference)`` → ``{"ok", "digest", "pulled",
"wheels", "bytes", "seconds"}`` or ``{"ok": False, "error", "code"}`` (the exit
code it means for the runner: 2 no or wrong credentials, or a lock this worker
cannot use; 1 bytes that are not what they claim; 3 the registry failed).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lockstep.bundles.artifact import (
    MAX_MANIFEST_BYTES,
    Artifact,
    ArtifactRefused,
    Descriptor,
    parse_bundle_reference,
    parse_manifest,
    read_code_tar,
)
from lockstep.bundles.env_layer import host_platform, host_tag
from lockstep.bundles.store import BundleStore
from lockstep.core.atomic import write_bytes
from lockstep.core.digests import hex_of, sha256_digest
from lockstep.core.errors import CheckFailed, ServiceFailed
from lockstep.oci.auth import credentials_for
from lockstep.oci.client import RegistryClient
from lockstep.oci.media import MANIFEST_MEDIA_TYPES
from lockstep.oci.reference import Pinned

log = logging.getLogger("lockstep.bundles.pull")

MAX_WHEEL_BYTES = 1 << 30


@dataclass(frozen=True)
class Pulled:
    digest: str  # the bundle's tree digest
    pulled: bool  # the code came from the registry now
    wheels: int
    bytes: int
    seconds: float


def worker_login_hint(host: str) -> str:
    return (
        f"give this worker credentials for {host}: a Docker config.json in "
        "$DOCKER_CONFIG (the deployment files mount it from the Secret "
        "lockstep-registry-auth)"
    )


def fetch_manifest(client: RegistryClient, ref: Pinned) -> bytes:
    """The manifest bytes of ``ref``, checked against its digest; ``CheckFailed`` if absent."""
    resp = client.request(
        "GET",
        f"/v2/{ref.name}/manifests/{ref.digest}",
        scope=[client.scope(ref.name, "pull")],
        headers={"Accept": ", ".join(MANIFEST_MEDIA_TYPES)},
    )
    if resp.status == 404:
        raise CheckFailed(
            f"registry {ref.host} has no bundle {ref}; push it (`lockstep bundle push DIR "
            f"--registry {ref.host}/{ref.name}`) or fix the reference"
        )
    if resp.status != 200:
        raise ServiceFailed(
            f"registry {ref.host}: GET manifest {ref.digest} of {ref.name} answered "
            f"{resp.status} ({resp.error_text()})"
        )
    if len(resp.body) > MAX_MANIFEST_BYTES:
        raise CheckFailed(f"registry {ref.host}: the manifest of {ref} is too large")
    found = sha256_digest(resp.body)
    if found != ref.digest:
        raise CheckFailed(
            f"registry {ref.host} served {found} for the manifest {ref}: refused, nothing "
            "kept; the registry's storage is corrupt or something between rewrote it"
        )
    return resp.body


class Puller:
    """Pulls bundles into a worker's ``BundleStore`` (and wheels into its ``EnvStore``)."""

    def __init__(self, bundles: BundleStore, envs: Any, where: str = "this worker") -> None:
        self.bundles = bundles
        self.envs = envs
        self.where = where
        self.manifests = bundles.root / "manifests"
        self._clients: dict[tuple[str, Any], RegistryClient] = {}
        self._lock = threading.Lock()

    def client(self, host: str) -> RegistryClient:
        """One client per registry host and credentials, read from config.json each time
        (a Secret updated in place is used at the next pull)."""
        creds = credentials_for(host)
        with self._lock:
            key = (host, creds)
            if key not in self._clients:
                self._clients[key] = RegistryClient(host, creds, login_hint=worker_login_hint(host))
            return self._clients[key]

    def manifest(self, ref: Pinned) -> tuple[Artifact, bool]:
        """The artifact of ``ref``: from this worker's copy (re-checked) or the registry."""
        path = self.manifests / hex_of(ref.digest)
        with contextlib.suppress(OSError):
            data = path.read_bytes()
            if sha256_digest(data) == ref.digest:
                return parse_manifest(data), False
            path.unlink()
        data = fetch_manifest(self.client(ref.host), ref)
        artifact = parse_manifest(data)
        write_bytes(path, data, 0o444)
        return artifact, True

    def pull_env(self, ref: Pinned, env: Descriptor, bundle: Path) -> int:
        """Extract the prebuilt environment layer ``env`` as it streams from the registry
        (``EnvStore.layer_sink``), used only once its digest matched; its size."""
        assert self.envs is not None
        sink = self.envs.layer_sink(bundle, env.digest, env.size)
        try:
            self.client(ref.host).stream_blob(ref.name, env.digest, sink.feed)
        except BaseException:
            sink.abort()
            raise
        self.envs.adopt(sink)
        return env.size

    def pull(self, reference: str) -> Pulled:
        start = time.monotonic()
        ref = parse_bundle_reference(reference)
        artifact, _fetched = self.manifest(ref)
        got = 0
        pulled = False
        path = self.bundles.has(artifact.digest)
        if path is None:
            data = self.client(ref.host).get_blob(ref.name, artifact.code.digest, 80 << 20)
            got += len(data)
            path = self.bundles.put(artifact.digest, read_code_tar(data))
            pulled = True
        wheels = 0
        env = artifact.env_for(host_platform(), host_tag())
        if self.envs is not None and env is not None and not self.envs.status(path)["ready"]:
            got += self.pull_env(ref, env, path)
        if self.envs is not None and artifact.wheels:
            status = self.envs.status(path)
            by_digest = {w.digest: w for w in artifact.wheels}
            for digest in [] if status["ready"] else status["missing"]:
                if digest not in by_digest:
                    raise ArtifactRefused(
                        f"the bundle's lock names wheel {digest}, which {ref} does not hold"
                    )
                data = self.client(ref.host).get_blob(ref.name, digest, MAX_WHEEL_BYTES)
                self.envs.put_wheel(digest, data)
                got += len(data)
                wheels += 1
        seconds = time.monotonic() - start
        if pulled or wheels:
            log.info(
                "lockstep pulled bundle %s (%s): code %s, %d wheel(s), %d bytes in %.2f s",
                ref,
                artifact.digest,
                "pulled" if pulled else "cached",
                wheels,
                got,
                seconds,
            )
        return Pulled(artifact.digest, pulled, wheels, got, seconds)
