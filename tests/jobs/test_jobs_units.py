"""Job specs, bundle digests, the worker's bundle store and the isolated probe, without Dask."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lockstep.bundles.format import load_bundle, shadowing_problems, syntax_problems
from lockstep.bundles.probe import run_probe
from lockstep.bundles.store import BundleRefused, BundleStore, from_wire, read_tree, to_wire
from lockstep.core.digests import TreeFile, tree_digest
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


def test_spec_not_toml_and_unreadable(tmp_path: Path) -> None:
    spec = tmp_path / "job.toml"
    spec.write_text("bundle = [")
    _, problems = read_spec(spec, EXECUTORS)
    assert len(problems) == 1 and "not valid TOML" in str(problems[0])
    with pytest.raises(BadInput, match="cannot read the job spec"):
        read_spec(tmp_path / "missing.toml", EXECUTORS)


# --- bundles ----------------------------------------------------------------------------------


def test_bundle_digest_is_the_sources_tree_digest_and_ignores_mtimes_and_pycache(
    tmp_path: Path,
) -> None:
    spec = copy_example(tmp_path)
    root = spec.parent / "bundle"
    bundle, problems = load_bundle(root)
    assert bundle is not None and problems == []
    files = [
        TreeFile(p.relative_to(root).as_posix(), False, p.read_bytes())
        for p in sorted(root.rglob("*.py"))
    ]
    assert bundle.digest == tree_digest(files)
    (root / "sir" / "__pycache__").mkdir()
    (root / "sir" / "__pycache__" / "model.cpython-311.pyc").write_bytes(b"junk")
    os.utime(root / "sir" / "model.py", (1, 1))
    again, _ = load_bundle(root)
    assert again is not None and again.digest == bundle.digest
    (root / "sir" / "model.py").chmod(0o755)
    exec_bit, _ = load_bundle(root)
    assert exec_bit is not None and exec_bit.digest != bundle.digest
    with (root / "sir" / "model.py").open("a") as f:
        f.write("# changed\n")
    changed, _ = load_bundle(root)
    assert changed is not None and changed.digest not in (bundle.digest, exec_bit.digest)


def test_bundle_well_formedness(tmp_path: Path) -> None:
    root = tmp_path / "b"
    root.mkdir()
    missing, problems = load_bundle(tmp_path / "nope")
    assert missing is None and "does not exist" in problems[0][1]
    empty, problems = load_bundle(root)
    assert empty is not None and problems == [(str(root), "the bundle has no files")]
    (root / "ok.py").write_text("x = 1\n")
    (root / "broken.py").write_text("def f(:\n    pass\n")
    (root / "json.py").write_text("")
    (root / "link.py").symlink_to(root / "ok.py")
    bundle, problems = load_bundle(root)
    assert bundle is not None
    assert problems == [
        (
            str(root / "link.py"),
            "is a symlink; a bundle holds only regular files "
            "(its digest covers contents, not links): replace it with the file",
        )
    ]
    assert syntax_problems(bundle) == [
        (str(root / "broken.py"), "syntax error at line 1: invalid syntax")
    ]
    shadow = shadowing_problems(bundle)
    assert [p[0] for p in shadow] == [str(root / "json.py")]
    assert "shadows json of the standard library" in shadow[0][1]


def test_store_verifies_caches_and_refuses(tmp_path: Path) -> None:
    spec = copy_example(tmp_path)
    bundle, _ = load_bundle(spec.parent / "bundle")
    assert bundle is not None
    store = BundleStore(tmp_path / "cache")
    store.prepare()
    files = from_wire(to_wire(bundle.files))
    with pytest.raises(BundleRefused) as partial:
        store.put(bundle.digest, files[:-1])
    assert bundle.digest in str(partial.value) and "partial" in str(partial.value)
    tampered = [*files[:-1], TreeFile(files[-1].path, False, files[-1].data + b"#")]
    with pytest.raises(BundleRefused, match="changed after its digest was taken"):
        store.put(bundle.digest, tampered)
    assert store.has(bundle.digest) is None and not any((tmp_path / "cache").iterdir())
    path = store.put(bundle.digest, files)
    assert path == store.path(bundle.digest) == store.has(bundle.digest)
    assert tree_digest(read_tree(path)[0]) == bundle.digest
    assert store.put(bundle.digest, files) == path  # a second put is a no-op
    # A cached copy changed on disk is noticed when a runner asks, removed, and sent again.
    model = path / "sir" / "model.py"
    model.chmod(0o644)
    model.write_text("def simulate(params, seed):\n    return {}\n")
    assert store.has(bundle.digest) is None and not path.exists()
    for bad in (
        [["../evil.py", False, b""]],
        [["/abs.py", False, b""]],
        "nope",
        [["a.py", False, "text, not bytes"]],
    ):
        with pytest.raises(BundleRefused):
            from_wire(bad)
    with pytest.raises(BundleRefused, match="not sha256"):
        store.has("sha256:xyz")


# --- the isolated probe -----------------------------------------------------------------------


def test_probe_runs_bundle_code_in_another_process(tmp_path: Path) -> None:
    root = tmp_path / "b"
    (root / "noisy").mkdir(parents=True)
    marker = tmp_path / "imported-by"
    (root / "noisy" / "__init__.py").write_text(
        "import os\n"
        f"open({str(marker)!r}, 'w').write(str(os.getpid()))\n"
        "print('side effect on stdout')\n"
        "def model(params, seed):\n    return {}\n"
        "def target(results, *, scale=1):\n    return 0\n"
        "async def later(params, seed):\n    return {}\n"
        "NOT_CALLABLE = 3\n"
    )
    results = run_probe(
        [str(root)],
        [
            {"role": "model", "ref": "noisy:model", "args": ["params", "seed"]},
            {"role": "target", "ref": "noisy:target", "args": ["results"]},
            {"role": "model", "ref": "noisy:later", "args": ["params", "seed"]},
            {"role": "model", "ref": "noisy:NOT_CALLABLE", "args": ["params", "seed"]},
            {"role": "target", "ref": "noisy:model", "args": ["results"]},
        ],
    )
    assert [r["ok"] for r in results] == [True, True, False, False, False]
    assert "is async" in results[2]["problem"]
    assert "is a int, not a function" in results[3]["problem"]
    assert "cannot be called as model(results)" in results[4]["problem"]
    assert results[0]["file"] == str(root / "noisy" / "__init__.py")
    assert int(marker.read_text()) != os.getpid()
    assert "noisy" not in sys.modules


def test_probe_survives_exit_crash_and_hang(tmp_path: Path) -> None:
    root = tmp_path / "b"
    root.mkdir()
    (root / "exits.py").write_text("import sys\nsys.exit(3)\n")
    (root / "crashes.py").write_text("import os\nos._exit(9)\n")
    (root / "hangs.py").write_text("import time\ntime.sleep(60)\n")
    (root / "needs.py").write_text("import numpy_not_here\n")
    check = [
        {"role": "model", "ref": "exits:f", "args": ["params", "seed"]},
        {"role": "model", "ref": "needs:f", "args": ["params", "seed"]},
        {"role": "target", "ref": "nowhere.mod:f", "args": ["results"]},
    ]
    exits, needs, nowhere = run_probe([str(root)], check)
    assert "calls sys.exit(3) when imported" in exits["problem"]
    assert (
        "does not import: ModuleNotFoundError: No module named 'numpy_not_here'" in needs["problem"]
        and "needs.py line 1" in needs["problem"]
    )
    assert "module nowhere.mod not found" in nowhere["problem"]
    [crash] = run_probe([str(root)], [{"role": "model", "ref": "crashes:f", "args": ["p", "s"]}])
    assert "ended with code 9 before answering" in crash["problem"]
    [hang] = run_probe(
        [str(root)], [{"role": "model", "ref": "hangs:f", "args": ["p", "s"]}], timeout=2
    )
    assert "did not finish within 2 s" in hang["problem"]


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
