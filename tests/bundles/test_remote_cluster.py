"""Jobs that name their bundle by digest in a real docker-registry, on real workers.

Two workers: ``cold`` has registry credentials (a Docker config.json in its
``DOCKER_CONFIG``), ``isolated_warm`` has an empty one. Both trust the test CA
(``SSL_CERT_FILE``) for the TLS variant. The config files and the CA live at
paths fixed before the workers start, and are written once the registries'
ports are known: a worker reads them at each pull. The runner pulls only the
code (for preflight's checks); the workers pull code and wheels themselves.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lockstep.bundles.remote import push_bundle, resolve
from lockstep.bundles.ship import EnvFailed, ship_bundle
from lockstep.core.digests import hex_of
from lockstep.jobs.run import run_job
from lockstep.jobs.spec import PreflightFailed
from lockstep.oci.media import BUNDLE_CODE_MEDIA_TYPE as CODE_MEDIA_TYPE
from tests.bundles.test_remote import blob_file
from tests.fixtures.cluster import Cluster, ClusterOptions
from tests.fixtures.registry import OciRegistry, TlsFiles, find_registry
from tests.fixtures.support import require
from tests.fixtures.wheels import make_wheel, wheel_entry, write_lock
from tests.jobs.test_jobs_units import EXAMPLES, edit_spec
from tests.oci.test_client_tls import make_pki
from tests.release.test_release import AuthRegistry, auth_entry

SIR = EXAMPLES / "sir"


@pytest.fixture(scope="module", autouse=True)
def _remove_fixed() -> Iterator[None]:
    yield
    shutil.rmtree(_FIXED, ignore_errors=True)


# Fixed before the module's cluster starts (its workers' env names them); made by the
# fixtures below and removed after the module (see _remove_fixed).
_FIXED = Path(tempfile.gettempdir()) / f"lockstep-oci-cluster-{os.getpid()}"
CREDS = _FIXED / "creds"  # the cold worker's DOCKER_CONFIG
NO_CREDS = _FIXED / "no-creds"  # the isolated_warm worker's
PKI = _FIXED / "pki"
CLUSTER = ClusterOptions(
    executors=("cold", "isolated_warm"),
    worker_env={
        "cold": {"DOCKER_CONFIG": str(CREDS), "SSL_CERT_FILE": str(PKI / "ca.pem")},
        "isolated_warm": {"DOCKER_CONFIG": str(NO_CREDS), "SSL_CERT_FILE": str(PKI / "ca.pem")},
    },
)


def write_config(dest: Path, auths: dict[str, Any]) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "config.json").write_text(json.dumps({"auths": auths}))


@pytest.fixture(scope="module")
def pki() -> TlsFiles:
    return make_pki(PKI)


@pytest.fixture(scope="module")
def registries(
    pki: TlsFiles, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, OciRegistry]]:
    require(find_registry() is not None, "docker-registry is not installed")
    made: dict[str, OciRegistry] = {}
    try:
        made["plain"] = OciRegistry.start_new(tmp_path_factory.mktemp("plain"))
        made["auth"] = AuthRegistry.start_new(tmp_path_factory.mktemp("auth"))
        made["tls"] = OciRegistry.start_new(tmp_path_factory.mktemp("tls"), tls=pki)
        write_config(CREDS, {made["auth"].address: auth_entry("ci", AuthRegistry.PASSWORD)})
        write_config(NO_CREDS, {})
        yield made
    finally:
        for registry in made.values():
            registry.close()


@pytest.fixture(autouse=True)
def runner_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The runner (this process): its own cache, the credentials, the test CA too."""
    monkeypatch.setenv("LOCKSTEP_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("DOCKER_CONFIG", str(CREDS))
    return tmp_path / "cache"


def job_bundle(
    dest: Path, cache: Path, wheel: bytes | None = None, arm64: bytes | None = None
) -> Path:
    """A bundle whose model reports where ``alpha`` comes from (if it locks the wheel; for
    linux/arm64 too if ``arm64``, that platform's wheel, is given)."""
    from lockstep.core.store import Cache

    shutil.copytree(SIR / "bundle", dest, ignore=shutil.ignore_patterns("__pycache__"))
    if wheel is not None:
        Cache(cache).put_blob(wheel)
        parts = {"linux/amd64": [wheel_entry(wheel, "alpha")]}
        if arm64 is not None:
            Cache(cache).put_blob(arm64)
            parts["linux/arm64"] = [wheel_entry(arm64, "alpha")]
        write_lock(dest, [], requirements=["alpha==1.0"], platforms=parts)
        (dest / "withalpha.py").write_text(
            "import alpha\n\nfrom sir.model import simulate as sir\n\n\n"
            "def simulate(params, seed):\n"
            "    return {**sir(params, seed), 'value': alpha.VALUE, 'file': alpha.__file__}\n"
        )
    return dest


def spec_for(
    tmp_path: Path, reference: str, executor: str, model: str = "sir.model:simulate"
) -> Path:
    spec = tmp_path / "job.toml"
    spec.write_text((SIR / "job.toml").read_text())
    return edit_spec(
        spec,
        bundle=f'"{reference}"',
        executor=f'"{executor}"',
        model=f'"{model}"',
        seeds="[1, 2]",
    )


@pytest.mark.registry
def test_a_job_runs_from_its_digest_and_workers_pull_only_what_they_lack(
    registries: dict[str, OciRegistry], cluster: Cluster, tmp_path: Path, runner_env: Path
) -> None:
    wheel = make_wheel("alpha", files={"alpha/__init__.py": b"VALUE = 7\n"})
    bundle = job_bundle(tmp_path / "b", runner_env, wheel)
    pushed = push_bundle(bundle, registries["plain"].address, "team/sir")
    spec = spec_for(tmp_path, pushed.reference, "cold", "withalpha:simulate")
    said: list[str] = []
    result = run_job(spec, cluster.address, manifest=cluster.a, progress=said.append)
    assert result["bundle"] == pushed.bundle and result["bundle_reference"] == pushed.reference
    assert result["job"]["bundle"] == pushed.reference
    env = cluster.caches["cold"] / "envs" / hex_of(result["environment"])
    for sim in result["simulations"]:
        assert sim["output"]["value"] == 7
        assert sim["output"]["file"].startswith(str(env / "site" / "alpha"))
    cache = cluster.caches["cold"]
    assert (cache / "manifests" / hex_of(pushed.digest)).is_file()
    assert (cache / hex_of(pushed.bundle)).is_dir()
    assert (cache / "wheels" / hex_of(wheel_entry(wheel, "alpha").digest)).is_file()
    # preflight's import check pulled it onto the worker; the run found it there
    assert any("had it already" in line for line in said), said
    # The registry may go away now: the worker holds everything, by digest.
    registries["plain"].stop()
    try:
        again: list[str] = []
        with pytest.raises(PreflightFailed) as failed:  # the runner checks the registry first
            run_job(spec, cluster.address, manifest=cluster.a, progress=again.append)
        assert failed.value.exit_code == 3
        assert "did not answer" in str(failed.value)
    finally:
        registries["plain"].start()


@pytest.mark.registry
def test_preflight_finds_a_blob_missing_from_the_registry_before_anything_runs(
    registries: dict[str, OciRegistry], cluster: Cluster, tmp_path: Path, runner_env: Path
) -> None:
    import os

    wheel = make_wheel(
        "alpha", files={"alpha/__init__.py": b"VALUE = 1\n", "alpha/r": os.urandom(64)}
    )
    bundle = job_bundle(tmp_path / "b", runner_env, wheel)
    registry = registries["plain"]
    pushed = push_bundle(bundle, registry.address, "team/gone")
    link = (registry.storage / "docker/registry/v2/repositories/team/gone/_layers/sha256"
            / hex_of(wheel_entry(wheel, "alpha").digest))  # fmt: skip
    shutil.rmtree(link)
    spec = spec_for(tmp_path, pushed.reference, "cold", "withalpha:simulate")
    with pytest.raises(PreflightFailed) as failed:
        run_job(spec, cluster.address, manifest=cluster.a)
    assert failed.value.exit_code == 1
    text = str(failed.value)
    assert "nothing was submitted" in text
    assert "lacks 1 blob(s)" in text and "alpha-1.0-py3-none-any.whl" in text


@pytest.mark.registry
def test_a_corrupt_blob_is_refused_by_the_worker_and_not_cached(
    registries: dict[str, OciRegistry], cluster: Cluster, tmp_path: Path, runner_env: Path
) -> None:
    registry = registries["plain"]
    bundle_dir = job_bundle(tmp_path / "b", runner_env)
    (bundle_dir / "corrupt_me.txt").write_text("x" * 4000)  # a bundle of its own digest
    pushed = push_bundle(bundle_dir, registry.address, "team/corrupt")
    bundle, _problems = resolve(pushed.reference)  # the runner has it, checked
    manifest = json.loads(registry.get(f"/v2/team/corrupt/manifests/{pushed.digest}",
        {"Accept": "application/vnd.oci.image.manifest.v1+json"})[2])  # fmt: skip
    code = next(x for x in manifest["layers"] if x["mediaType"] == CODE_MEDIA_TYPE)
    path = blob_file(registry, code["digest"])
    data = bytearray(path.read_bytes())
    data[data.index(b"xxxx")] ^= 1
    path.write_bytes(bytes(data))
    worker = cluster.addresses["cold"]
    with pytest.raises(EnvFailed) as failed:
        ship_bundle(cluster.client, bundle, [worker])
    [line] = failed.value.lines
    assert line.startswith(f"worker {worker}: registry {registry.address} served blob ")
    assert "refused, nothing kept" in line
    assert failed.value.exit_code == 1
    assert not (cluster.caches["cold"] / hex_of(pushed.bundle)).exists()


@pytest.mark.registry
def test_auth_registry_a_worker_without_credentials_says_so_and_one_with_them_runs(
    registries: dict[str, OciRegistry], cluster: Cluster, tmp_path: Path, runner_env: Path
) -> None:
    registry = registries["auth"]
    bundle = job_bundle(tmp_path / "b", runner_env)
    pushed = push_bundle(bundle, registry.address, "team/auth")
    spec = spec_for(tmp_path, pushed.reference, "isolated_warm")
    with pytest.raises(PreflightFailed) as failed:
        run_job(spec, cluster.address, manifest=cluster.a)
    worker = cluster.addresses["isolated_warm"]
    [problem] = failed.value.problems
    assert problem.message == (
        f"worker {worker}: registry {registry.address} needs credentials and "
        f"{NO_CREDS}/config.json has none for it; give this worker credentials for "
        f"{registry.address}: a Docker config.json in $DOCKER_CONFIG (the deployment files "
        "mount it from the Secret lockstep-registry-auth)"
    )
    assert failed.value.exit_code == 2
    assert AuthRegistry.PASSWORD not in str(failed.value)
    result = run_job(
        spec_for(tmp_path, pushed.reference, "cold"), cluster.address, manifest=cluster.a
    )
    assert result["bundle"] == pushed.bundle


@pytest.mark.registry
def test_tls_registry_trusted_through_the_ca_serves_runner_and_worker(
    registries: dict[str, OciRegistry],
    pki: TlsFiles,
    cluster: Cluster,
    tmp_path: Path,
    runner_env: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    registry = registries["tls"]
    monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca))
    bundle = job_bundle(tmp_path / "b", runner_env)
    pushed = push_bundle(bundle, registry.address, "team/tls")
    said: list[str] = []
    result = run_job(spec_for(tmp_path, pushed.reference, "cold"), cluster.address,
                     manifest=cluster.a, progress=said.append)  # fmt: skip
    assert result["bundle"] == pushed.bundle
    assert (cluster.caches["cold"] / "manifests" / hex_of(pushed.digest)).is_file()


def _layers_of(registry: OciRegistry, repository: str, digest: str) -> dict[str, Any]:
    """The artifact's environment layers, by platform."""
    from lockstep.oci.media import BUNDLE_ENV_MEDIA_TYPE

    manifest = json.loads(registry.get(f"/v2/{repository}/manifests/{digest}",
        {"Accept": "application/vnd.oci.image.manifest.v1+json"})[2])  # fmt: skip
    layers = [x for x in manifest["layers"] if x["mediaType"] == BUNDLE_ENV_MEDIA_TYPE]
    return {x["annotations"]["io.lockstep.env.platform"]: dict(x) for x in layers}


def _layer_of(registry: OciRegistry, repository: str, digest: str) -> dict[str, Any]:
    [layer] = _layers_of(registry, repository, digest).values()
    return dict(layer)


@pytest.mark.registry
def test_a_prebuilt_push_is_pulled_as_one_layer_and_imports_compiled(
    registries: dict[str, OciRegistry], cluster: Cluster, tmp_path: Path, runner_env: Path
) -> None:
    from lockstep.bundles.remote import inspect_bundle

    wheel = make_wheel("alpha", files={"alpha/__init__.py": b"VALUE = 11\n"})
    arm64 = make_wheel("alpha", files={"alpha/__init__.py": b"VALUE = 64\n"})
    bundle = job_bundle(tmp_path / "b", runner_env, wheel, arm64)
    registry = registries["plain"]
    pushed = push_bundle(bundle, registry.address, "team/prebuilt", prebuilt=True)
    # One layer per platform the lock has, each of that platform's wheels.
    layers = _layers_of(registry, "team/prebuilt", pushed.digest)
    assert sorted(layers) == ["linux/amd64", "linux/arm64"]
    layer = layers["linux/amd64"]
    assert layers["linux/arm64"]["digest"] != layer["digest"]
    environments = inspect_bundle(pushed.reference)["environments"]
    assert sorted(e["digest"] for e in environments) == sorted(x["digest"] for x in layers.values())
    again = push_bundle(bundle, registry.address, "team/prebuilt", prebuilt=True)
    assert again.digest == pushed.digest and again.stats.uploaded == 0  # reproducible
    spec = spec_for(tmp_path, pushed.reference, "cold", "withalpha:simulate")
    result = run_job(spec, cluster.address, manifest=cluster.a)
    env = cluster.caches["cold"] / "envs" / hex_of(result["environment"])
    marker = json.loads((env / "ENV.json").read_bytes())
    assert marker["layer"] == layer["digest"] and marker["compiled"] is True
    assert any("__pycache__/__init__." in row[0] for row in marker["files"])
    for sim in result["simulations"]:
        assert sim["output"]["value"] == 11
        assert sim["output"]["file"] == str(env / "site" / "alpha" / "__init__.py")
    # no wheel was pulled: the layer held the environment
    assert not (
        cluster.caches["cold"] / "wheels" / hex_of(wheel_entry(wheel, "alpha").digest)
    ).exists()


@pytest.mark.registry
def test_a_corrupt_prebuilt_layer_is_refused_and_nothing_of_it_is_left(
    registries: dict[str, OciRegistry], cluster: Cluster, tmp_path: Path, runner_env: Path
) -> None:
    wheel = make_wheel("alpha", files={"alpha/__init__.py": b"VALUE = 12\n"})
    bundle = job_bundle(tmp_path / "b", runner_env, wheel)
    registry = registries["plain"]
    pushed = push_bundle(bundle, registry.address, "team/badlayer", prebuilt=True)
    path = blob_file(registry, _layer_of(registry, "team/badlayer", pushed.digest)["digest"])
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.chmod(0o644)
    path.write_bytes(bytes(data))
    envs = cluster.caches["cold"] / "envs"
    before = sorted(envs.iterdir()) if envs.exists() else []
    spec = spec_for(tmp_path, pushed.reference, "cold", "withalpha:simulate")
    with pytest.raises(PreflightFailed) as failed:
        run_job(spec, cluster.address, manifest=cluster.a)
    text = str(failed.value)
    assert failed.value.exit_code == 1, text
    assert "refused, nothing of it is used" in text, text
    after = sorted(envs.iterdir()) if envs.exists() else []
    assert after == before
