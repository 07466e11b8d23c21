"""Release parts that need no registry and no build: pins, rendering, the release
manifest."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from lockstep.core.errors import BadInput
from lockstep.release import pins, render
from lockstep.release.record import ReleaseManifest
from tests.fixtures.build import ROOT, lockstep
from tests.fixtures.support import require

DATA = Path(__file__).parent / "data" / "release"
D = "sha256:" + "ab" * 32


def test_check_pins_fails_the_old_files_with_file_and_line(tmp_path: Path) -> None:
    proc = lockstep(["check-pins", str(DATA)], cwd=ROOT, cache=tmp_path)
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    where = [line.split(": image ")[0].removeprefix(str(DATA) + "/") for line in lines]
    assert where == [
        "cluster-old.toml:9",
        "deploy-old.json:11",
        "values-old.yaml:4",
        "workspace-old.yaml:6",
        "workspace-old.yaml:7",
    ]
    assert ":latest" in lines[-2] and "it means :latest" in lines[-1]
    assert proc.stderr.strip().splitlines() == [
        "lockstep: error: 5 of 8 image references are not pinned by digest; pin each as "
        "HOST/REPO/NAME@sha256:… (lockstep release renders such files)"
    ]


def test_check_pins_passes_pinned_files(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(f"spec:\n  containers:\n    - image: r.io/x/y@{D}\n")
    (tmp_path / "b.json").write_text(json.dumps({"images": {"runner": f"r.io/x/r@{D}"}}))
    (tmp_path / "c.toml").write_text(f'[w]\nworker_image = "r.io/x/w:1@{D}"\n')
    proc = lockstep(["check-pins", str(tmp_path)], cwd=ROOT, cache=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "3 image references in 3 files, all pinned" in proc.stdout


def test_check_pins_reads_image_env_values(tmp_path: Path) -> None:
    """`LOCKSTEP_IMAGE` (any `…_IMAGE` env entry) is an image reference: pinned passes, a tag
    is flagged on its line; other env values and `valueFrom` are not references."""
    pod = (
        f"containers:\n  - image: r.io/x/w@{D}\n    env:\n"
        f"      - {{name: LOCKSTEP_EXECUTOR, value: cold}}\n"
        f'      - name: LOCKSTEP_IMAGE\n        value: "r.io/x/w@{D}"\n'
        "      - name: SIDECAR_IMAGE\n        valueFrom: {configMapKeyRef: {name: c, key: k}}\n"
    )
    (tmp_path / "ok.yaml").write_text(pod)
    found = pins.check_pins([tmp_path / "ok.yaml"])
    assert [(r.line, r.value, r.problem) for r in found] == [
        (2, f"r.io/x/w@{D}", None),
        (6, f"r.io/x/w@{D}", None),
    ]
    (tmp_path / "bad.yaml").write_text(pod.replace(f'"r.io/x/w@{D}"', "r.io/x/w:latest"))
    bad = [r for r in pins.check_pins([tmp_path / "bad.yaml"]) if r.problem]
    assert [(r.line, r.value) for r in bad] == [(6, "r.io/x/w:latest")]
    assert "uses the tag :latest and no digest" in str(bad[0])
    (tmp_path / "d.json").write_text(
        json.dumps(
            {
                "env": [
                    {"name": "LOCKSTEP_IMAGE", "value": "r.io/x/w:1"},
                    {"name": "LOCKSTEP_EXECUTOR", "value": "cold"},
                ]
            },
            indent=1,
        )
    )
    found = pins.check_pins([tmp_path / "d.json"])
    assert [(r.line, r.value, r.problem) for r in found] == [
        (5, "r.io/x/w:1", "uses the tag :1 and no digest")
    ]


SHA = "11d5960a326750d5838078e36cf38b85af677262"
WORKFLOW = f"""\
on: push
jobs:
  test:
    runs-on: ubuntu-24.04
    container:
      image: debian:bookworm
    steps:
      - uses: actions/checkout@{SHA} # v4.4.0
      - uses: actions/setup-python@v5
      - uses: ./.github/actions/local
      - uses: docker://alpine@{D}
      - uses: docker://alpine:3.20
      - uses: github/codeql-action/init@main
      - run: "echo uses: not-a-key@v1"
  call:
    uses: octo/reusable/.github/workflows/w.yml@{SHA[:7]}
"""


def test_check_pins_reports_unpinned_actions_in_workflows(tmp_path: Path) -> None:
    """A `uses:` not pinned to a full commit is a problem, one line each with file:line;
    local actions and `docker://…@sha256:` are pinned; an image in the workflow is an image."""
    wf = tmp_path / ".github" / "workflows" / "ci.yml"
    wf.parent.mkdir(parents=True)
    wf.write_text(WORKFLOW)
    found = pins.check_pins([tmp_path / ".github"])
    assert [(r.line, r.kind, r.value, r.problem is None) for r in found] == [
        (6, "image", "debian:bookworm", False),
        (8, "action", f"actions/checkout@{SHA}", True),
        (9, "action", "actions/setup-python@v5", False),
        (10, "action", "./.github/actions/local", True),
        (11, "action", f"docker://alpine@{D}", True),
        (12, "action", "docker://alpine:3.20", False),
        (13, "action", "github/codeql-action/init@main", False),
        (16, "action", f"octo/reusable/.github/workflows/w.yml@{SHA[:7]}", False),
    ]
    proc = lockstep(["check-pins", str(tmp_path / ".github")], cwd=ROOT, cache=tmp_path)
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    assert [line.split(": ", 1)[0].removeprefix(str(wf)) for line in lines] == [
        ":6",
        ":9",
        ":12",
        ":13",
        ":16",
    ]
    assert lines[1] == (
        f"{wf}:9: action 'actions/setup-python@v5' refers to 'v5', which is not a full "
        "commit SHA (a tag or branch can be moved); pin it to the commit, the tag in a "
        "comment: uses: actions/setup-python@<40 hex> # vX.Y.Z"
    )
    assert "is a Docker image that uses the tag :3.20 and no digest" in lines[2]
    assert proc.stderr.strip() == (
        "lockstep: error: 5 of 8 references are not pinned (1 of 1 images by digest, "
        "4 of 7 actions by commit); pin images as HOST/REPO/NAME@sha256:… and actions as "
        "owner/repo@<40 hex commit> # vX.Y.Z"
    )


def test_check_pins_passes_the_projects_workflows(tmp_path: Path) -> None:
    proc = lockstep(["check-pins", str(ROOT / ".github" / "workflows")], cwd=ROOT, cache=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("ok: 0 image references and "), proc.stdout
    assert proc.stdout.rstrip().endswith("all pinned (images by digest, actions by commit)")


@pytest.mark.parametrize(
    ("uses", "problem"),
    [
        (f"actions/checkout@{SHA}", None),
        (f"org/repo/sub/dir@{SHA}", None),
        ("./local", None),
        (f"docker://r.io/a/b@{D}", None),
        ("actions/checkout@v4", "refers to 'v4'"),
        (f"actions/checkout@{SHA.upper()}", "refers to"),
        (f"actions/checkout@{SHA}0", "refers to"),
        ("actions/checkout", "names no ref"),
        ("actions/checkout@", "names no ref"),
        ("docker://alpine", "is a Docker image that has no tag and no digest"),
        ("o/r@${{ inputs.ref }}", "is an expression"),
        ("", "is empty"),
        (None, "is empty"),
    ],
)
def test_action_problem(uses: object, problem: str | None) -> None:
    found = pins.action_problem(uses)
    assert found == problem if problem is None else found and found.startswith(problem)


def test_bad_files_are_bad_input(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("a: [\n")
    with pytest.raises(BadInput, match=r"bad.yaml: not valid YAML"):
        pins.check_pins([tmp_path / "bad.yaml"])
    with pytest.raises(BadInput, match="no such file"):
        pins.check_pins([tmp_path / "missing.yaml"])
    (tmp_path / "x.txt").write_text("image: a:latest\n")
    with pytest.raises(BadInput, match="not a deployment file"):
        pins.check_pins([tmp_path / "x.txt"])


VALUES = {
    "version": "0.1.0",
    "tag": "v0.1.0",
    "commit": "c" * 40,
    "build_id": D,
    "short_id": "ab" * 6,
    "registry": "r.io/team",
    "runner_image": f"r.io/team/lockstep-runner@{D}",
    "worker_image": f"r.io/team/lockstep-worker@{D}",
}
EXECUTORS = ("cold", "direct", "isolated_warm")


def test_render_the_project_templates(tmp_path: Path) -> None:
    import yaml

    files = render.render(ROOT, VALUES, tmp_path, EXECUTORS)
    assert sorted(str(f.relative_to(tmp_path)) for f in files) == [
        "10-network.yaml",
        "20-scheduler.yaml",
        "30-workers-warm.yaml",
        "40-workspace.yaml",
        "50-runner-job.yaml",
        "operator/dask-cluster.yaml",
        "operator/lockstep.yaml",
    ]
    docs = [d for f in files if f.parent == tmp_path for d in yaml.safe_load_all(f.read_text())]
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in docs)
    assert kinds == [
        ("ConfigMap", "lockstep-workspace"),
        ("Deployment", "lockstep-scheduler"),
        ("Deployment", "lockstep-worker-warm"),
        ("Job", "lockstep-runner-abababababab"),
        ("NetworkPolicy", "lockstep-runner"),
        ("NetworkPolicy", "lockstep-scheduler"),
        ("NetworkPolicy", "lockstep-worker"),
        ("PodDisruptionBudget", "lockstep-worker-warm"),
        ("Service", "lockstep-scheduler"),
    ]
    workspace = next(d for d in docs if d["kind"] == "ConfigMap")
    docs = [d for d in docs if d["kind"] in ("Deployment", "Job")]
    images = {
        d["metadata"]["name"]: [c["image"] for c in d["spec"]["template"]["spec"]["containers"]]
        for d in docs
    }
    assert images["lockstep-worker-warm"] == [VALUES["worker_image"]]
    assert images["lockstep-runner-abababababab"] == [VALUES["runner_image"]]
    worker = next(d for d in docs if d["metadata"]["name"] == "lockstep-worker-warm")
    env = worker["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "LOCKSTEP_EXECUTOR", "value": "isolated_warm"} in env
    # Every pod says which pinned reference it pulled: the same as its image.
    for doc in docs:
        if doc["kind"] != "Service":
            (container,) = doc["spec"]["template"]["spec"]["containers"]
            assert {"name": "LOCKSTEP_IMAGE", "value": container["image"]} in container["env"]
    # Every pod speaks mutual TLS with the certificates of the Secret lockstep-tls.
    for doc in docs:
        if doc["kind"] != "Service":
            pod = doc["spec"]["template"]["spec"]
            (container,) = pod["containers"]
            env = {e["name"]: e["value"] for e in container["env"]}
            assert {
                env[k] for k in ("LOCKSTEP_TLS_CA_FILE", "LOCKSTEP_TLS_CERT", "LOCKSTEP_TLS_KEY")
            } == {
                "/etc/lockstep/tls/ca.crt",
                "/etc/lockstep/tls/tls.crt",
                "/etc/lockstep/tls/tls.key",
            }
            mount = next(
                m for m in container["volumeMounts"] if m["mountPath"] == "/etc/lockstep/tls"
            )
            volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
            assert volume["secret"]["secretName"] == "lockstep-tls" and mount["readOnly"]
            assert not [a for a in container.get("args", []) if a.startswith("tcp://")]
    # Workers and the runner pull bundles named by digest with the credentials of the
    # (optional) Secret lockstep-registry-auth, a docker-registry Secret, as config.json.
    for doc in docs:
        if doc["kind"] != "Service" and doc["metadata"]["name"] != "lockstep-scheduler":
            pod = doc["spec"]["template"]["spec"]
            (container,) = pod["containers"]
            env = {e["name"]: e["value"] for e in container["env"]}
            mount = next(m for m in container["volumeMounts"] if m["name"] == "registry-auth")
            assert env["DOCKER_CONFIG"] == mount["mountPath"] and mount["readOnly"]
            volume = next(v for v in pod["volumes"] if v["name"] == "registry-auth")
            assert volume["secret"]["secretName"] == "lockstep-registry-auth"
            assert volume["secret"]["items"] == [
                {"key": ".dockerconfigjson", "path": "config.json"}
            ]
    data = workspace["data"]
    assert data["scheduler_address"] == "tls://lockstep-scheduler:8786"
    assert (data["runner_image"], data["worker_image"]) == (
        VALUES["runner_image"],
        VALUES["worker_image"],
    )
    found = pins.check_pins([tmp_path])
    assert not [r for r in found if r.problem]
    # Plain: 3 pods x (image + LOCKSTEP_IMAGE), 2 in the workspace; the operator's set:
    # 4 pods (the cluster's 2, one group, the runner) x 2, 2 in its workspace.
    assert len(found) == 8 + 10


def test_render_refuses_unknown_placeholders_and_executors(tmp_path: Path) -> None:
    (tmp_path / "images" / "deploy").mkdir(parents=True)
    template = tmp_path / "images" / "deploy" / "w.yaml"
    template.write_text("a: 1\nimage: {{ worker_img }}\n")
    with pytest.raises(BadInput, match=r"w.yaml:2: unknown placeholder \{\{ worker_img \}\}"):
        render.render(tmp_path, VALUES, tmp_path / "out1", EXECUTORS)
    (tmp_path / "out2").mkdir()
    obj = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: w}\n"
    template.write_text(obj + "image: '{{ worker_image }}'\nexecutor: turbo\n")
    with pytest.raises(BadInput, match="executor 'turbo' is not in this build"):
        render.render(tmp_path, VALUES, tmp_path / "out2", EXECUTORS)
    (tmp_path / "out3").mkdir()
    template.write_text(obj + "image: '{{ worker_image }}'\nsidecar_image: busybox:latest\n")
    with pytest.raises(BadInput, match="busybox:latest"):
        render.render(tmp_path, VALUES, tmp_path / "out3", EXECUTORS)


def test_release_manifest_round_trip_and_refusals(tmp_path: Path) -> None:
    from lockstep.release.record import ImageRecord, PlatformImage

    platforms = {"linux/amd64": PlatformImage(D, D), "linux/arm64": PlatformImage(D, D)}
    record = ReleaseManifest(
        version="0.1.0",
        tag="v0.1.0",
        commit="c" * 40,
        build_id=D,
        registry="r.io/team",
        images={
            "runner": ImageRecord(VALUES["runner_image"], D, platforms),
            "worker": ImageRecord(VALUES["worker_image"], D, platforms),
        },
        executors=EXECUTORS,
        inputs={"sources": D},
        layers={p: {"base": D, "python": D, "app": D, "manifest": D} for p in platforms},
        attachments={"worker": {"index": {"signature": D}, "linux/amd64": {"sbom": D}}},
    )
    (tmp_path / "r.json").write_bytes(record.to_json())
    assert ReleaseManifest.read(tmp_path / "r.json") == record
    (tmp_path / "bad.json").write_text('{"schema": "other"}')
    with pytest.raises(BadInput, match="schema is 'other'"):
        ReleaseManifest.read(tmp_path / "bad.json")
    # A record of one image per role (v1, before images were indexes) is refused, saying why.
    old = json.loads(record.to_json())
    old["schema"] = "lockstep.release/v1"
    (tmp_path / "v1.json").write_text(json.dumps(old))
    with pytest.raises(BadInput, match="recorded by an older lockstep"):
        ReleaseManifest.read(tmp_path / "v1.json")
    broken = json.loads(record.to_json())
    del broken["images"]["worker"]["platforms"]["linux/arm64"]["config"]
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    with pytest.raises(BadInput, match=r"images\.worker needs reference, digest and platforms"):
        ReleaseManifest.read(tmp_path / "broken.json")


def test_rendered_kubernetes_manifests_match_the_schemas(tmp_path: Path) -> None:
    """Offline schema check; kubernetes-validate is in the dev extra, so CI
    (LOCKSTEP_REQUIRE_ALL=1) fails without it."""
    require(
        importlib.util.find_spec("kubernetes_validate") is not None,
        "kubernetes-validate is not installed (pip install -e '.[dev]')",
    )
    import kubernetes_validate
    import yaml

    files = render.render(ROOT, VALUES, tmp_path, EXECUTORS)
    docs = [d for f in files if f.parent == tmp_path for d in yaml.safe_load_all(f.read_text())]
    assert len(docs) == 9
    for doc in docs:
        kubernetes_validate.validate(doc, "1.37.0", strict=True)


def test_the_admission_policy_names_the_key_and_every_repository(tmp_path: Path) -> None:
    import yaml
    from cryptography.hazmat.primitives.asymmetric import ec

    from lockstep.release import signing

    key = ec.generate_private_key(ec.SECP256R1())
    pem = signing.public_pem(key).decode()
    repos = ["127.0.0.1:5000/team/lockstep-worker", "127.0.0.1:5000/team/lockstep-runner"]
    text = render.admission_policy("My_Project", repos, pem)
    assert text == render.admission_policy("My_Project", list(reversed(repos)), pem)  # pure
    doc = yaml.safe_load(text)
    assert (doc["apiVersion"], doc["kind"]) == ("policy.sigstore.dev/v1beta1", "ClusterImagePolicy")
    assert doc["metadata"]["name"] == "my-project-signed"  # a Kubernetes (DNS-1123) name
    assert [i["glob"] for i in doc["spec"]["images"]] == sorted(r + "**" for r in repos)
    [authority] = doc["spec"]["authorities"]
    assert authority["key"]["data"] == pem
    path = tmp_path / render.POLICY_FILE
    path.write_text(text)
    (tmp_path / "k.pub").write_text(authority["key"]["data"])
    public = signing.load_public_key(tmp_path / "k.pub")
    assert signing.verify(public, b"payload", signing.sign(key, b"payload"))
    assert pins.check_pins([path]) == []  # `lockstep check-pins release/` stays clean
    with pytest.raises(ValueError, match="without tag or digest"):
        render.admission_policy("p", [repos[0] + "@sha256:" + "0" * 64], pem)
