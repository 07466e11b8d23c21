"""A bundle read from disk: its digest, its well-formedness, and its dependencies (the rule
that an in-process executor takes no environment is stated once,
``runtime.executors.IN_PROCESS``, and preflight and the executor both use it)."""

from __future__ import annotations

import ast
import os
from pathlib import Path

from lockstep.bundles.format import (
    dependency_problems,
    load_bundle,
    shadowing_problems,
    syntax_problems,
)
from lockstep.core.digests import TreeFile, tree_digest
from lockstep.runtime.executors import IN_PROCESS, no_environment
from tests.fixtures.procs import PYTHON_LOCK
from tests.fixtures.wheels import make_wheel, wheel_entry, write_lock
from tests.jobs.test_jobs_units import copy_example

SRC = Path(__file__).resolve().parents[2] / "src" / "lockstep"


def test_preflight_refuses_an_environment_exactly_for_the_in_process_executors(
    tmp_path: Path,
) -> None:
    root = tmp_path / "b"
    write_lock(root, [wheel_entry(make_wheel())])
    (root / "job.py").write_text("def run(params, seed):\n    return 1\n")
    bundle, problems = load_bundle(root)
    assert bundle is not None and not problems
    for executor in ("direct", "isolated_warm", "cold"):
        found = [m for _f, m, _c in dependency_problems(bundle, executor, PYTHON_LOCK)]
        why = no_environment(executor)
        assert (why is not None) == (executor in IN_PROCESS)
        said = f"the bundle has dependencies (1 locked wheel(s) for linux/amd64) and {why}; "
        assert found == ([said + "use executor isolated_warm or cold"] if why else [])


def test_no_module_but_the_executors_names_the_direct_executor() -> None:
    """A second ``== "direct"`` (a copy of the rule) would name it again somewhere else."""
    allowed = {
        SRC / "runtime" / "executors" / "__init__.py",
        SRC / "runtime" / "executors" / "direct.py",
    }
    naming = sorted(
        str(path.relative_to(SRC))
        for path in SRC.rglob("*.py")
        if path not in allowed
        and any(
            isinstance(node, ast.Constant) and node.value == "direct"
            for node in ast.walk(ast.parse(path.read_text()))
        )
    )
    assert not naming, f"name the in-process executors through runtime.executors: {naming}"


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
