"""A bundle read from disk: the rule that an in-process executor takes no environment is
stated once (``runtime.executors.IN_PROCESS``) and preflight and the executor both use it."""

from __future__ import annotations

import ast
from pathlib import Path

from lockstep.bundles.format import dependency_problems, load_bundle
from lockstep.runtime.executors import IN_PROCESS, no_environment
from tests.fixtures.procs import PYTHON_LOCK
from tests.fixtures.wheels import make_wheel, wheel_entry, write_lock

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
        assert found == ([f"the bundle has dependencies (1 locked wheel(s)) and {why}; "
                          "use executor isolated_warm or cold"] if why else [])  # fmt: skip


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
