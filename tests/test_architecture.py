"""The shape of the code: the ground floor imports nothing above it, the image's runtime
loads no build code, and the CLI loads only the command module a command line needs."""

from __future__ import annotations

import argparse
import ast
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from lockstep import cli

SRC = Path(__file__).resolve().parents[1] / "src" / "lockstep"
BUILD_SIDE = ("lockstep.assembly", "lockstep.inputs", "lockstep.release", "lockstep.project")


def imported_lockstep_modules(code: str) -> list[str]:
    """The ``lockstep`` modules a fresh interpreter has loaded after running ``code``."""
    script = (
        code + "\nimport json, sys\nprint(json.dumps(sorted(m for m in sys.modules "
        "if m == 'lockstep' or m.startswith('lockstep.'))))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    return list(json.loads(proc.stdout.splitlines()[-1]))


def test_core_imports_nothing_of_the_project_above_it() -> None:
    for path in sorted((SRC / "core").glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            for name in names:
                if name.startswith("lockstep"):
                    assert name.startswith("lockstep.core"), f"{path.name} imports {name}"


@pytest.mark.parametrize(
    "code",
    [
        "import lockstep.runtime.preload_worker",
        "import lockstep.runtime.preload_scheduler",
        "import lockstep.runtime.tasks, lockstep.runtime.cluster, lockstep.runtime.doctor",
        "import lockstep.runtime.executors.cold, lockstep.runtime.executors._child",
        "import lockstep.runtime.selfcheck, lockstep.jobs.entry",
        "from lockstep import cli; cli.make_parser(cli.modules_for(['worker']))",
    ],
)
def test_what_runs_in_the_image_loads_no_build_code(code: str) -> None:
    loaded = imported_lockstep_modules(code)
    assert "lockstep.runtime" in loaded or "lockstep.cli" in loaded
    build = [m for m in loaded if m.startswith(BUILD_SIDE)]
    assert not build, f"{code!r} loaded {build}"


def test_the_command_table_names_each_module_s_commands() -> None:
    for module, names in cli.COMMANDS.items():
        parser = argparse.ArgumentParser()
        sub = parser.add_subparsers()
        importlib.import_module(module).add_commands(sub)
        assert tuple(sub.choices) == names, module


def test_a_command_line_loads_only_its_module() -> None:
    assert cli.modules_for(["-v", "worker", "tcp://x:1"]) == ["lockstep.runtime.commands"]
    assert cli.modules_for(["build", "--json"]) == ["lockstep.assembly.commands"]
    assert cli.modules_for(["--help"]) == list(cli.COMMANDS)
    assert cli.modules_for(["no-such-command"]) == list(cli.COMMANDS)


def test_a_broken_command_module_is_an_error_not_a_missing_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(cli.COMMANDS, "lockstep.no_such_commands", ("ghost",))
    with pytest.raises(ModuleNotFoundError, match=r"lockstep\.no_such_commands"):
        cli.make_parser(list(cli.COMMANDS))


def test_bazel_watches_every_file_its_describe_step_reads() -> None:
    """``@lockstep_project`` re-runs when a watched file changes: it must watch each module
    ``python -m lockstep.assembly.bazel describe`` loads, or Bazel would keep a stale view."""
    import re

    bzl = (SRC.parents[1] / "images" / "repo.bzl").read_text()
    watched = set(re.findall(r'"//:(src/lockstep/[\w/]+\.py)"', bzl))
    code = (
        "import lockstep.assembly.bazel, lockstep.inputs.python.pex, lockstep.project, "
        "lockstep.inputs.declared"
    )
    loaded = set()
    for module in imported_lockstep_modules(code):
        path = module.replace(".", "/")
        package = (SRC.parent / path).is_dir()
        loaded.add(f"src/{path}/__init__.py" if package else f"src/{path}.py")
    assert loaded <= watched, f"add to _WATCHED in images/repo.bzl: {sorted(loaded - watched)}"
