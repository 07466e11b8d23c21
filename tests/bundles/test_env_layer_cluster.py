"""A prebuilt environment shipped through a real scheduler to real workers.

The runner makes the layer once (its cache), sends it in pieces through the
scheduler; the worker extracts as they arrive and the task imports compiled
modules at once. A layer whose bytes are not what it was sent as is refused
through the same path, and nothing of it is left on the worker.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from lockstep.bundles import ship_layer
from lockstep.bundles.format import load_bundle
from lockstep.bundles.protocol import Op
from lockstep.bundles.ship import ship_bundle
from lockstep.core.digests import sha256_digest
from lockstep.core.store import Cache
from lockstep.runtime import submit_task
from lockstep.runtime.cluster import with_token
from tests.bundles.test_env import bundle_with
from tests.fixtures.cluster import Cluster, ClusterOptions
from tests.fixtures.wheels import make_wheel

CLUSTER = ClusterOptions(executors=("cold", "isolated_warm"))
MODEL = b"""
import demo

def simulate(params, seed):
    return {"value": demo.VALUE + seed, "compiled": demo.__spec__.cached is not None
            and __import__("os").path.exists(demo.__spec__.cached), "file": demo.__file__}
"""


@pytest.fixture(autouse=True)
def runner_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("LOCKSTEP_CACHE_DIR", str(tmp_path / "runner"))
    return tmp_path / "runner"


def demo_bundle(tmp_path: Path, runner: Path, value: int) -> Path:
    data = make_wheel(files={"demo/__init__.py": f"VALUE = {value}\n".encode()})
    Cache(runner).put_blob(data)  # the runner's verified cache holds the locked wheel
    bundle = bundle_with(tmp_path, (data, "demo"))
    (bundle / "model.py").write_bytes(MODEL)
    return bundle


def envs_of(cluster: Cluster, executor: str) -> list[Path]:
    root = cluster.caches[executor] / "envs"
    return (
        sorted(p for p in root.iterdir() if not p.name.endswith(".lock")) if root.exists() else []
    )


@pytest.mark.parametrize("executor", ["cold", "isolated_warm"])
def test_a_prebuilt_environment_arrives_as_one_layer_and_imports_compiled(
    cluster: Cluster, tmp_path: Path, runner_cache: Path, executor: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setattr(ship_layer, "CHUNK", 1000)  # several pieces, even for a small layer
    path = demo_bundle(tmp_path, runner_cache, 40 + len(executor))
    loaded, problems = load_bundle(path)
    assert loaded is not None and not problems
    bundle = dataclasses.replace(loaded, prebuilt=True)
    address = cluster.addresses[executor]
    shipped = ship_bundle(cluster.client, bundle, [address])
    assert shipped.env_built == (address,) and shipped.wheels_sent == 0
    assert shipped.wheel_bytes > 1000
    [env] = [p for p in envs_of(cluster, executor) if not p.name.startswith(".")]
    marker = json.loads((env / "ENV.json").read_bytes())
    assert marker["compiled"] is True and marker["layer"].startswith("sha256:")
    assert not (cluster.caches[executor] / "wheels").exists()  # no wheel was sent
    answer = submit_task(
        cluster.client, "model:simulate", ({}, 2), bundle=bundle.digest, workers=[address]
    ).result(timeout=120)
    assert answer["value"] == {
        "value": 42 + len(executor), "compiled": True, "file": f"{env}/site/demo/__init__.py"
    }  # fmt: skip
    again = ship_bundle(cluster.client, bundle, [address])  # ready: nothing sent
    assert again.env_built == () and again.wheel_bytes == 0


def test_a_layer_with_other_bytes_is_refused_through_the_scheduler(
    cluster: Cluster, tmp_path: Path, runner_cache: Path
) -> None:
    path = demo_bundle(tmp_path, runner_cache, 7)
    loaded, _ = load_bundle(path)
    assert loaded is not None
    address = cluster.addresses["cold"]
    ship_bundle(cluster.client, loaded, [address])  # the code only, per-wheel environment
    ship_bundle(cluster.client, loaded, [address])
    before = envs_of(cluster, "cold")
    other = demo_bundle(tmp_path / "other", runner_cache, 8)
    loaded_other, _ = load_bundle(other)
    assert loaded_other is not None
    data = b"\x1f\x8b not a layer"
    msg = {"op": Op.ENV_LAYER.value, "digest": loaded_other.digest,
           "layer": sha256_digest(b"something else"), "size": len(data), "offset": 0,
           "data": data, "last": True}  # fmt: skip
    ship_bundle(cluster.client, loaded_other, [address])  # stored, its environment made
    answers = cluster.client.sync(
        cluster.client.scheduler.broadcast,
        msg=with_token(cluster.client, msg),
        workers=[address],
    )
    answer = answers[address]
    assert answer["ok"] is False and answer["code"] == 1
    assert "refused, nothing of it is used" in answer["error"]
    assert "\n" not in answer["error"]
    after = envs_of(cluster, "cold")
    assert not [p for p in after if p.name.startswith(".") and "layer" in p.name]
    assert len(after) == len(before) + 1  # the other bundle's own environment, nothing more


def test_lockstep_run_prebuilt_ships_one_layer_and_the_result_names_its_environment(
    cluster: Cluster, tmp_path: Path, runner_cache: Path
) -> None:
    import shutil

    from lockstep.jobs.run import run_job
    from tests.jobs.test_jobs_units import EXAMPLES, edit_spec

    bundle = tmp_path / "bundle"
    shutil.copytree(
        EXAMPLES / "sir" / "bundle", bundle, ignore=shutil.ignore_patterns("__pycache__")
    )
    data = make_wheel(files={"demo/__init__.py": b"VALUE = 5\n"})
    Cache(runner_cache).put_blob(data)
    from tests.fixtures.wheels import wheel_entry, write_lock

    write_lock(bundle, [wheel_entry(data, "demo")])
    (bundle / "withdemo.py").write_text(
        "import demo\n\nfrom sir.model import simulate as sir\n\n\n"
        "def simulate(params, seed):\n"
        "    return {**sir(params, seed), 'value': demo.VALUE, 'file': demo.__file__}\n"
    )
    spec = tmp_path / "job.toml"
    spec.write_text((EXAMPLES / "sir" / "job.toml").read_text())
    edit_spec(spec, bundle='"bundle"', executor='"cold"', model='"withdemo:simulate"', seeds="[1]")
    result = run_job(spec, cluster.address, manifest=cluster.a, prebuilt=True)
    env = cluster.caches["cold"] / "envs" / result["environment"].removeprefix("sha256:")
    assert json.loads((env / "ENV.json").read_bytes())["layer"].startswith("sha256:")
    assert [s["output"]["value"] for s in result["simulations"]] == [5] * len(result["simulations"])
