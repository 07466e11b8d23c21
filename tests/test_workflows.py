"""The CI workflows pin what they run, offline: every workflow passes zizmor (no finding of
medium or higher, no ignore comment or config honoured), the GitHub workflow JSON schema
(check-jsonschema's built-in copy) and `lockstep check-pins` (every `uses:` at a full commit);
and the lint does fail on a workflow that names an action by tag. The builder's locks hold
hashes for every package, agree with each other and with the code, and the workflows install
from them with the Python they were made for."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lockstep.inputs.python.pex import PEX_VERSION, PIP_VERSION
from lockstep.release import pins

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = (ROOT / "pyproject.toml").read_text()
BIN = Path(sys.executable).parent
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.y*ml"))
BUILD_LOCK = ROOT / "requirements" / "build.lock.txt"
DEV_LOCK = ROOT / "requirements" / "dev.lock.txt"
CHECKOV_LOCK = ROOT / "requirements" / "checkov.lock.txt"  # its own: packaging<24
DOCS_LOCK = ROOT / "requirements" / "docs.lock.txt"  # its own: the site's tools
SEVERITIES = ("medium", "high")


def _tool(name: str) -> str:
    exe = BIN / name if (BIN / name).exists() else shutil.which(name)
    assert exe, f"{name} is not installed; run `make test` (it installs requirements/dev.lock.txt)"
    return str(exe)


def lint(path: Path, tmp: Path) -> list[str]:
    """Every problem with one workflow file, one line each; [] if it is clean."""
    problems: list[str] = []
    zizmor = subprocess.run(
        [
            _tool("zizmor"),
            "--offline",  # no network, no GitHub token: the offline audits only
            "--no-config",
            "--no-ignores",  # a `# zizmor: ignore[…]` comment does not hide a finding
            "--no-progress",
            "--min-severity",
            "medium",
            "--format",
            "json",
            "--cache-dir",
            str(tmp / "zizmor-cache"),
            str(path),
        ],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp)},
    )
    try:
        findings = json.loads(zizmor.stdout)
    except ValueError:
        problems.append(f"zizmor failed (exit {zizmor.returncode}): {zizmor.stderr.strip()}")
        findings = []
    for finding in findings:
        severity = finding["determinations"]["severity"].lower()
        if severity not in SEVERITIES:
            continue
        spans = [
            loc["concrete"]["location"]["start_point"]["row"] + 1
            for loc in finding["locations"]
            if loc["symbolic"].get("kind") == "Primary"
        ]
        where = f"{path}:{spans[0] if spans else '?'}"
        problems.append(f"{where}: zizmor {finding['ident']} ({severity}): {finding['desc']}")
    schema = subprocess.run(
        [_tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", str(path)],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    if schema.returncode != 0:
        problems.append(f"{path}: not a valid workflow: {schema.stdout.strip()}")
    problems += [str(ref) for ref in pins.check_pins([path]) if ref.problem]
    return problems


def test_there_are_workflows() -> None:
    assert [p.name for p in WORKFLOWS] == ["ci.yml", "release.yml"]


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_every_workflow_is_clean(workflow: Path, tmp_path: Path) -> None:
    assert lint(workflow, tmp_path) == []


BAD = """\
name: bad
on: push
permissions: {}
jobs:
  test:
    name: test
    runs-on: ubuntu-24.04
    permissions:
      contents: read
    steps:
      - uses: actions/checkout@v4
        with:
          persist-credentials: false
      - run: echo hello
"""


def test_the_lint_fails_on_an_action_named_by_tag(tmp_path: Path) -> None:
    """The same workflow passes with the commit and fails with `@v4`: both zizmor
    (unpinned-uses, high) and check-pins name line 11."""
    wf = tmp_path / ".github" / "workflows" / "bad.yml"
    wf.parent.mkdir(parents=True)
    wf.write_text(BAD.replace("@v4", "@11d5960a326750d5838078e36cf38b85af677262 # v4.4.0"))
    assert lint(wf, tmp_path) == []
    wf.write_text(BAD)
    problems = lint(wf, tmp_path)
    assert len(problems) == 2, problems
    assert problems[0].startswith(f"{wf}:11: zizmor unpinned-uses (high): ")
    assert problems[1].startswith(f"{wf}:11: action 'actions/checkout@v4' refers to 'v4'")


def test_the_lint_fails_on_a_schema_error_and_persisted_credentials(tmp_path: Path) -> None:
    wf = tmp_path / ".github" / "workflows" / "bad.yml"
    wf.parent.mkdir(parents=True)
    pinned = BAD.replace("@v4", "@11d5960a326750d5838078e36cf38b85af677262 # v4.4.0")
    wf.write_text(pinned.replace("    runs-on:", "    runs_on:"))
    assert any("not a valid workflow" in p for p in lint(wf, tmp_path))
    wf.write_text(pinned.replace("          persist-credentials: false\n", "          x: 1\n"))
    assert [p.split(": zizmor ")[1].split(" ")[0] for p in lint(wf, tmp_path)] == ["artipacked"]


# The builder's locks.

_PIN = re.compile(r"^([a-z0-9][a-z0-9._-]*)==(\S+) \\$", re.MULTILINE)


def _pins(lock: Path) -> dict[str, str]:
    return dict(_PIN.findall(lock.read_text()))


@pytest.mark.parametrize(
    "lock", [BUILD_LOCK, DEV_LOCK, CHECKOV_LOCK, DOCS_LOCK], ids=lambda p: p.name
)
def test_every_locked_package_has_hashes(lock: Path) -> None:
    """Each requirement is `name==version` followed by at least one sha256: `pip install
    --require-hashes` would refuse anything else, and nothing names a URL or a path."""
    text = lock.read_text()
    entries = re.split(r"\n(?=[^ #\n])", text.split("\n", 6)[-1])
    for entry in entries:
        if not entry.strip() or entry.lstrip().startswith("#"):
            continue
        first = entry.splitlines()[0]
        assert _PIN.match(first + ("" if first.endswith("\\") else " \\")), first
        assert re.search(r"--hash=sha256:[0-9a-f]{64}", entry), first
    assert " @ " not in text and "file://" not in text


def test_the_locks_agree_with_each_other_and_the_code() -> None:
    build, dev = _pins(BUILD_LOCK), _pins(DEV_LOCK)
    assert {name: dev.get(name) for name in build} == build, "run `make lock-builder`"
    assert build["pex"] == PEX_VERSION
    assert build["pip"] == PIP_VERSION  # the pip pex runs (--pip-version)
    for tool in ("zizmor", "check-jsonschema", "pip-tools", "pytest", "ruff", "mypy"):
        assert tool in dev, tool
    assert "dask-kubernetes" in dev and "kubernetes-validate" in dev  # the deployment checks
    assert "checkov" in _pins(CHECKOV_LOCK)  # installed by make into .venv/checkov
    assert "mkdocs" in _pins(DOCS_LOCK)  # installed by make into .venv/docs


def test_the_workflows_install_from_the_lock_with_the_locks_python() -> None:
    release = (ROOT / ".github" / "workflows" / "release.yml").read_text()
    assert "pip install --require-hashes --no-deps -r requirements/build.lock.txt" in release
    assert "pip install --no-deps --no-build-isolation --no-index -e ." in release
    assert "pip install -e" not in release
    supported = set(re.findall(r'"Programming Language :: Python :: (3\.\d+)"', PYPROJECT))
    for workflow in WORKFLOWS:
        setups = [
            str(step["with"]["python-version"]).split()
            for job in yaml.safe_load(workflow.read_text())["jobs"].values()
            for step in job["steps"]
            if "actions/setup-python@" in str(step.get("uses", ""))
        ]
        assert setups, workflow
        for listed in setups:  # the last is the default python: the release job's 3.11.x
            assert re.fullmatch(r"3\.11\.\d+", listed[-1]), listed
            assert {v.rsplit(".", 1)[0] if v.count(".") == 2 else v for v in listed} <= supported
    ci = (ROOT / ".github" / "workflows" / "ci.yml").read_text()
    assert all(f"            {v}\n" in ci for v in supported - {"3.11"}), "ci.yml sets up each"
    makefile = (ROOT / "Makefile").read_text()
    assert "pip install --quiet --require-hashes --no-deps -r $(LOCK)" in makefile
    assert "LOCK   := requirements/dev.lock.txt" in makefile
