"""Job specs and local preflight, without Dask."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lockstep.core.entrypoints import registered
from lockstep.core.errors import BadInput
from lockstep.jobs.preflight import preflight
from lockstep.jobs.spec import PreflightFailed, read_spec

ROOT = Path(__file__).resolve().parents[2]


def lockstep_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """``lockstep ARGS`` in a subprocess, from an empty directory under ``cwd`` (so no
    bundle module there is importable from the runner's own path)."""
    (cwd / "cwd").mkdir(exist_ok=True)
    return subprocess.run(
        [sys.executable, "-m", "lockstep", *args], cwd=cwd / "cwd", capture_output=True, text=True
    )


EXAMPLES = ROOT / "examples"
SIR = EXAMPLES / "sir"
EXECUTORS = registered()


def copy_example(tmp_path: Path) -> Path:
    """A private copy of examples/sir (spec + bundle); returns the spec's path."""
    dest = tmp_path / "sir"
    shutil.copytree(SIR, dest, ignore=shutil.ignore_patterns("__pycache__"))
    return dest / "job.toml"


def edit_spec(spec: Path, **values: str) -> Path:
    lines = spec.read_text().splitlines()
    for key, value in values.items():
        lines = [
            f"{key} = {value}" if line.split("=")[0].strip() == key else line for line in lines
        ]
    spec.write_text("\n".join(lines) + "\n")
    return spec


# --- job specs --------------------------------------------------------------------------------


def test_example_spec_is_valid() -> None:
    fields, problems = read_spec(SIR / "job.toml", EXECUTORS)
    assert problems == []
    assert fields["bundle"] == (SIR / "bundle").resolve()
    assert fields["model"] == "sir.model:simulate"
    assert fields["seeds"] == (1, 2, 3, 4) and len(fields["params"]) == 2


def test_spec_reports_every_schema_problem(tmp_path: Path) -> None:
    spec = tmp_path / "job.toml"
    spec.write_text(
        'bundel = "x"\nmodel = "not a ref"\nexecutor = "turbo"\nseeds = [1, 1]\n'
        'schema = "lockstep.job/v9"\n'
        "[[params]]\nwhen = 2024-01-01\nrate = nan\n"
    )
    _, problems = read_spec(spec, EXECUTORS)
    lines = [str(p) for p in problems]
    assert all(line.startswith(f"{spec}: ") for line in lines), lines
    text = "\n".join(lines)
    for expected in (
        "bundel: unknown key",
        "bundle: missing",
        "target: missing",
        "model: 'not a ref' must read 'module:callable'",
        "executor: 'turbo' is not a lockstep executor; valid values: cold, direct, isolated_warm",
        "seeds: lists a seed twice",
        "schema: 'lockstep.job/v9'",
        "params[0].when: a TOML date",
        "params[0].rate: nan",
    ):
        assert expected in text, text
    assert len(problems) == 9


@pytest.mark.parametrize("value", ["-1", "1.5", "true", '"3"'])
def test_max_failures_is_a_whole_number_of_at_least_zero(tmp_path: Path, value: str) -> None:
    spec = edit_spec(copy_example(tmp_path), name='"sir"')
    text = spec.read_text().replace("[[params]]", f"max_failures = {value}\n[[params]]", 1)
    spec.write_text(text)
    _, problems = read_spec(spec, EXECUTORS)
    assert [(p.name, p.exit_code) for p in problems] == [("max_failures", 2)]
    assert "a whole number >= 0 (default 0)" in problems[0].message
    spec.write_text(text.replace(f"max_failures = {value}", "max_failures = 3"))
    fields, problems = read_spec(spec, EXECUTORS)
    assert problems == [] and fields["max_failures"] == 3


def test_spec_not_toml_and_unreadable(tmp_path: Path) -> None:
    spec = tmp_path / "job.toml"
    spec.write_text("bundle = [")
    _, problems = read_spec(spec, EXECUTORS)
    assert len(problems) == 1 and "not valid TOML" in str(problems[0])
    with pytest.raises(BadInput, match="cannot read the job spec"):
        read_spec(tmp_path / "missing.toml", EXECUTORS)


# --- bundles ----------------------------------------------------------------------------------


# --- the isolated probe -----------------------------------------------------------------------


def test_local_preflight_of_the_incident_names_module_and_function() -> None:
    with pytest.raises(PreflightFailed) as failed:
        preflight(EXAMPLES / "incident" / "job.toml")
    err = failed.value
    assert err.exit_code == 1 and len(err.problems) == 1
    [line] = str(err).splitlines()[1:]
    assert line.startswith(
        f"{EXAMPLES / 'incident' / 'job.toml'}: target targets.incidence:incidence_target: "
    )
    assert "module targets.incidence" in line and "has no incidence_target" in line
    assert "did you mean incidence?" in line
    assert "targets" not in sys.modules and "sir" not in sys.modules


@pytest.mark.parametrize("case", ["signature", "import", "syntax"])
def test_local_preflight_catches_a_broken_bundle(tmp_path: Path, case: str) -> None:
    spec = copy_example(tmp_path)
    bundle = spec.parent / "bundle"
    model = bundle / "sir" / "model.py"
    target = bundle / "targets" / "incidence.py"
    if case == "signature":
        model.write_text(
            model.read_text().replace(
                "def simulate(params: Mapping[str, Any], seed: int)",
                "def simulate(params: Mapping[str, Any], seed: int, steps: int)",
            )
        )
        expected = [
            (
                f"{spec}: model sir.model:simulate: ",
                "cannot be called as simulate(params, seed) (missing a required argument: 'steps')",
            )
        ]
    elif case == "import":
        target.write_text(
            target.read_text().replace(
                "from typing import Any\n",
                "from typing import Any\n\nimport scipy_is_not_installed\n",
            )
        )
        expected = [
            (
                f"{spec}: target targets.incidence:incidence: ",
                "No module named 'scipy_is_not_installed'",
            )
        ]
    else:
        model.write_text(model.read_text().replace("def _binomial(", "def _binomial(("))
        expected = [
            (f"{model}: bundle: ", "syntax error at line 16"),
            (f"{spec}: model sir.model:simulate: ", f"syntax error in {model} line 16"),
        ]
    with pytest.raises(PreflightFailed) as failed:
        preflight(spec)
    lines = str(failed.value).splitlines()[1:]
    assert len(lines) == len(expected), lines
    for line, (start, part) in zip(lines, expected, strict=True):
        assert line.startswith(start) and part in line, line


def test_local_preflight_reports_everything_at_once(tmp_path: Path) -> None:
    spec = edit_spec(copy_example(tmp_path), seeds="[]", target='"targets.incidence:nope"')
    bundle = spec.parent / "bundle"
    (bundle / "sir" / "model.py").write_text("def simulate(params):\n    return {}\n")
    (bundle / "extra.py").write_text("x = (\n")
    with pytest.raises(PreflightFailed) as failed:
        preflight(spec)
    text = str(failed.value)
    assert text.splitlines()[0] == (
        f"preflight of {spec} found 4 problem(s); nothing was submitted"
    )
    for part in (
        "seeds: must be a non-empty list",
        f"{bundle / 'extra.py'}: bundle: syntax",
        "model sir.model:simulate: simulate(params) cannot be called as simulate(params, seed)",
        "target targets.incidence:nope: module targets.incidence",
    ):
        assert part in text, text


# --- exit codes: a malformed spec is bad input (2); a failing check on a good one is 1 ---------


@pytest.mark.parametrize("kind", ["not-toml", "not-utf8", "wrong-types", "unknown-key"])
def test_a_malformed_spec_exits_2(tmp_path: Path, kind: str) -> None:
    spec = copy_example(tmp_path)
    if kind == "not-toml":
        spec.write_bytes(b"bundle = [")
    elif kind == "not-utf8":
        spec.write_bytes(b'name = "caf\xe9"\n')
    elif kind == "wrong-types":
        edit_spec(spec, seeds='"1, 2"', executor="3")
    else:
        spec.write_text('colour = "blue"\n' + spec.read_text())  # top level, before any table
    proc = lockstep_cli(["preflight", str(spec)], cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines()[0].startswith(f"lockstep: error: preflight of {spec}")


def test_a_failing_check_on_a_well_formed_spec_exits_1_and_wins_over_nothing(
    tmp_path: Path,
) -> None:
    spec = edit_spec(copy_example(tmp_path), target='"targets.incidence:nope"')
    proc = lockstep_cli(["preflight", str(spec)], cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    # Malformed and failing at once: bad input first (exit 2), every problem still listed.
    edit_spec(spec, seeds='"x"')
    proc = lockstep_cli(["preflight", str(spec)], cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "seeds: must be" in proc.stderr and "target targets.incidence:nope" in proc.stderr


@pytest.mark.parametrize("role", ["model", "target"])
def test_a_class_as_model_or_target_is_refused_by_preflight(tmp_path: Path, role: str) -> None:
    spec = copy_example(tmp_path)
    bundle = spec.parent / "bundle"
    (bundle / "shapes.py").write_text(
        "class Simulation:\n    def __init__(self, params, seed):\n        self.params = params\n"
    )
    spec = edit_spec(spec, **{role: '"shapes:Simulation"'})
    with pytest.raises(PreflightFailed) as failed:
        preflight(spec)
    assert failed.value.exit_code == 1
    assert f"{role} shapes:Simulation: shapes:Simulation is a class, not a function" in str(
        failed.value
    )
