"""The rendered deployment files pass the checks platform teams run, offline, every run:
kubernetes-validate --strict (and the Dask operator's CRD schemas), checkov with 0 failed,
Pod Security "restricted" — and each checker fails on a deliberately weakened file."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from lockstep.core import health_probe as health
from lockstep.core.errors import BadInput
from lockstep.release import pins, podsecurity, render
from tests.fixtures.build import ROOT
from tests.fixtures.deploy import (
    CHECKOV,
    EXECUTORS,
    TWO_GROUPS,
    VALUES,
    checkov,
    documents,
    operator_objects,
    render_release,
    restricted,
    validate,
)
from tests.fixtures.support import require


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("deploy") / "0.1.0"
    render_release(dest)
    return dest


@pytest.fixture(scope="module")
def scanned(rendered: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The rendered files plus what the operator would create from its set."""
    scan = tmp_path_factory.mktemp("scan")
    shutil.copytree(rendered, scan / "release")
    made = operator_objects(rendered / render.OPERATOR_DIR)
    (scan / "operator-created.yaml").write_text(yaml.safe_dump_all(made, sort_keys=False))
    return scan


def objects(directory: Path) -> list[dict[str, Any]]:
    return [doc for _, doc in documents(directory)]


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def test_the_files_are_kubernetes_objects_in_the_release_namespace(rendered: Path) -> None:
    names = sorted(str(p.relative_to(rendered)) for p in rendered.rglob("*") if p.is_file())
    assert names == [
        "10-network.yaml",
        "20-scheduler.yaml",
        "30-workers-cold.yaml",
        "30-workers-warm.yaml",
        "40-workspace.yaml",
        "50-runner-job.yaml",
        "operator/dask-cluster.yaml",
        "operator/lockstep.yaml",
    ]
    for _, doc in documents(rendered):
        assert doc["apiVersion"] and doc["kind"] and doc["metadata"]["name"]
        assert doc["metadata"]["namespace"] == "simulations"
    found = pins.check_pins([rendered])
    assert found and not [r for r in found if r.problem]


def test_upgrades_never_mix_builds(rendered: Path) -> None:
    docs = objects(rendered)
    plain = [d for p, d in documents(rendered) if p.parent == rendered]
    deployments = by_kind(plain, "Deployment")
    assert set(deployments) == {
        "lockstep-scheduler",
        "lockstep-worker-cold",
        "lockstep-worker-warm",
    }
    for deployment in deployments.values():  # never two builds' pods side by side
        assert deployment["spec"]["strategy"] == {"type": "Recreate"}
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert labels["lockstep.dev/build"] == VALUES["short_id"]
    (service,) = by_kind(plain, "Service").values()
    assert service["spec"]["selector"]["lockstep.dev/build"] == VALUES["short_id"]
    # The operator's cluster is named after the build: an upgrade is a second cluster.
    (cluster,) = by_kind(docs, "DaskCluster").values()
    assert cluster["metadata"]["name"] == f"lockstep-{VALUES['short_id']}"
    assert (
        cluster["spec"]["scheduler"]["service"]["selector"]["lockstep.dev/build"]
        == (VALUES["short_id"])
    )
    # Node drains: one PodDisruptionBudget per worker group, in both sets.
    budgets = [d for d in docs if d["kind"] == "PodDisruptionBudget"]
    assert sorted(b["metadata"]["name"] for b in budgets) == sorted(
        ["lockstep-worker-cold", "lockstep-worker-warm"] * 2
    )
    # The order of the files is the upgrade order: fence, scheduler, workers, runner.
    names = [p.name for p in sorted(rendered.glob("*.yaml"))]
    assert names.index("20-scheduler.yaml") < names.index("30-workers-cold.yaml")
    assert names[-1] == "50-runner-job.yaml"


def test_workers_are_sized_per_group_and_the_operator_has_a_group_per_executor(
    rendered: Path,
) -> None:
    docs = objects(rendered)
    groups = {g.name: g for g in TWO_GROUPS.workers}
    for name, group in groups.items():
        deployment = by_kind(docs, "Deployment")[f"lockstep-worker-{name}"]
        assert deployment["spec"]["replicas"] == group.replicas
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert container["resources"] == {
            "requests": {
                "cpu": group.resources.cpu_request,
                "memory": group.resources.memory_request,
            },
            "limits": {"cpu": group.resources.cpu_limit, "memory": group.resources.memory_limit},
        }
        assert {"name": "LOCKSTEP_EXECUTOR", "value": group.executor} in container["env"]
        assert "--nthreads" not in container["args"]  # from the limits, in the worker
        worker_group = by_kind(docs, "DaskWorkerGroup")[f"lockstep-abababababab-{name}"]
        assert worker_group["spec"]["worker"]["replicas"] == group.replicas
        assert worker_group["spec"]["worker"]["spec"]["containers"] == [
            {
                **container,
                "args": [
                    a.replace("://lockstep-scheduler:", "://lockstep-abababababab-scheduler:")
                    for a in container["args"]
                ],
            }
        ]
    (cluster,) = by_kind(docs, "DaskCluster").values()
    assert cluster["spec"]["worker"]["replicas"] == 0  # every group is a DaskWorkerGroup
    (job,) = [d for p, d in documents(rendered) if d["kind"] == "Job" and p.parent == rendered]
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:3] == ["tls://lockstep-scheduler:8786", "--workers", "5"]
    (op_job,) = [d for p, d in documents(rendered / "operator") if d["kind"] == "Job"]
    assert op_job["spec"]["template"]["spec"]["containers"][0]["args"][0] == (
        "tls://lockstep-abababababab-scheduler:8786"
    )


def test_probes_ask_the_event_loop_and_no_dashboard_port_is_declared(rendered: Path) -> None:
    for _, doc in documents(rendered):
        for _where, pod in podsecurity.pod_specs(doc):
            for container in pod["containers"]:
                ports = {p["containerPort"] for p in container.get("ports", [])}
                assert 8787 not in ports
                if container["name"] == "runner":
                    continue
                assert container["readinessProbe"]["exec"]["command"] == health.probe_command(
                    "ready"
                )
                assert container["livenessProbe"]["exec"]["command"] == health.probe_command("live")


def test_network_policies_fence_each_component(rendered: Path) -> None:
    policies = by_kind(objects(rendered), "NetworkPolicy")
    assert set(policies) == {"lockstep-scheduler", "lockstep-worker", "lockstep-runner"}
    build = {"lockstep.dev/build": VALUES["short_id"]}
    for policy in policies.values():
        assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
        assert build.items() <= policy["spec"]["podSelector"]["matchLabels"].items()
    (scheduler_in,) = policies["lockstep-scheduler"]["spec"]["ingress"]
    assert sorted(
        p["podSelector"]["matchLabels"]["app.kubernetes.io/component"] for p in scheduler_in["from"]
    ) == ["runner", "worker"]
    assert all(
        build.items() <= p["podSelector"]["matchLabels"].items() for p in scheduler_in["from"]
    )
    assert scheduler_in["ports"] == [{"protocol": "TCP", "port": 8786}]
    worker_in = policies["lockstep-worker"]["spec"]["ingress"]
    sources = {
        rule["ports"][0]["port"]: sorted(
            p["podSelector"]["matchLabels"]["app.kubernetes.io/component"] for p in rule["from"]
        )
        for rule in worker_in
    }
    assert sources == {8788: ["scheduler", "worker"], 8789: ["scheduler"]}
    egress_ports = [
        p["port"]
        for rule in policies["lockstep-worker"]["spec"]["egress"]
        for p in rule.get("ports", [])
    ]
    assert 5443 in egress_ports  # the registry's port, for bundle pulls
    assert policies["lockstep-runner"]["spec"]["ingress"] == []


def test_kubernetes_validate_strict_and_the_operator_crds(rendered: Path) -> None:
    assert validate(rendered) == []
    kinds = {d["kind"] for d in objects(rendered)}
    assert {"DaskCluster", "DaskWorkerGroup", "NetworkPolicy", "PodDisruptionBudget"} <= kinds


def test_every_pod_template_is_restricted(scanned: Path) -> None:
    pods = [pod for _, d in documents(scanned) for _, pod in podsecurity.pod_specs(d)]
    # plain: scheduler, 2 groups, runner; operator: cluster (2), 2 groups, runner;
    # what the operator creates: the scheduler's and the groups' Deployments.
    assert len(pods) == 4 + 5 + 3
    assert restricted(scanned) == []


def test_checkov_finds_nothing(scanned: Path) -> None:
    require(CHECKOV.exists(), f"{CHECKOV} is missing; run make (requirements/checkov.lock.txt)")
    summary, failed = checkov(scanned)
    assert failed == []
    assert summary["failed"] == 0 and summary["skipped"] == 0 and summary["passed"] > 300


# Deliberate weakenings of the worker Deployment, and which checker must catch each.
def _add_capability(pod: dict[str, Any]) -> None:
    pod["containers"][0]["securityContext"]["capabilities"]["add"] = ["NET_ADMIN"]


def _drop_resources(pod: dict[str, Any]) -> None:
    del pod["containers"][0]["resources"]


def _tag_not_digest(pod: dict[str, Any]) -> None:
    pod["containers"][0]["image"] = "r.io:5443/team/lockstep-worker:0.1.0"


def _misspell_read_only(pod: dict[str, Any]) -> None:  # a typo that silently writes to /
    ctx = pod["containers"][0]["securityContext"]
    ctx["readOnlyRootFileSystem"] = ctx.pop("readOnlyRootFilesystem")


WEAKENED = {
    "capability": (_add_capability, {"CKV_K8S_25"}),
    "resources": (_drop_resources, {"CKV_K8S_10", "CKV_K8S_11", "CKV_K8S_12", "CKV_K8S_13"}),
    "tag": (_tag_not_digest, {"CKV_K8S_43"}),
    "typo": (_misspell_read_only, {"CKV_K8S_22"}),
}


@pytest.fixture(scope="module")
def weakened(rendered: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One directory per weakening: the plain worker Deployment and the operator's group."""
    root = tmp_path_factory.mktemp("weakened")
    for name, (weaken, _) in WEAKENED.items():
        (root / name).mkdir()
        for source in ("30-workers-warm.yaml", "operator/dask-cluster.yaml"):
            docs = list(yaml.safe_load_all((rendered / source).read_text()))
            for doc in docs:
                for _, pod in podsecurity.pod_specs(doc):
                    weaken(pod)
            target = root / name / Path(source).name
            target.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return root


def test_each_checker_fails_on_a_weakened_file(weakened: Path) -> None:
    require(CHECKOV.exists(), f"{CHECKOV} is missing; run make (requirements/checkov.lock.txt)")
    _, failed = checkov(weakened)
    for name, (_, expected) in WEAKENED.items():
        directory = weakened / name
        plain = {f.split()[0] for f in failed if f.split()[1] == f"/{name}/30-workers-warm.yaml"}
        assert expected <= plain, (name, sorted(plain))
        problems = restricted(directory)
        unpinned = [str(r) for r in pins.check_pins([directory]) if r.problem]
        errors = validate(directory)
        # Five pods: the plain Deployment's, the DaskCluster's two, the two groups'.
        if name == "capability":
            assert sum("capabilities.add ['NET_ADMIN']" in p for p in problems) == 5
        elif name == "tag":
            assert len(unpinned) == 5 and all("uses the tag :0.1.0" in u for u in unpinned)
        elif name == "typo":
            assert sum("readOnlyRootFileSystem" in e for e in errors) >= 5, errors
            assert sum("readOnlyRootFilesystem is not true" in p for p in problems) == 5
        else:  # only checkov asks for resources
            assert (errors, problems, unpinned) == ([], [], [])


def test_render_refuses_a_template_that_is_not_restricted_or_not_an_object(tmp_path: Path) -> None:
    deploy = tmp_path / "images" / "deploy"
    shutil.copytree(ROOT / render.TEMPLATES_DIR, deploy)
    worker = deploy / "30-workers-GROUP.yaml"
    text = worker.read_text()
    worker.write_text(
        text.replace("capabilities: {drop: [ALL]}", "capabilities: {drop: [ALL], add: [SYS_ADMIN]}")
    )
    (tmp_path / "out").mkdir()
    with pytest.raises(
        BadInput,
        match=r"30-workers-GROUP.yaml: Deployment lockstep-worker-cold: container 'worker': "
        r"capabilities.add \['SYS_ADMIN'\].*restricted",
    ):
        render.render(tmp_path, VALUES, tmp_path / "out", EXECUTORS, TWO_GROUPS)
    worker.write_text(text)
    (deploy / "60-notes.yaml").write_text("workspace: simulations\nimages: []\n")
    (tmp_path / "out2").mkdir()
    with pytest.raises(
        BadInput,
        match=r"60-notes.yaml: a document without apiVersion, kind and metadata.name is not "
        "a Kubernetes object",
    ):
        render.render(tmp_path, VALUES, tmp_path / "out2", EXECUTORS, TWO_GROUPS)
