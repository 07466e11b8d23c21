"""The shape of the code: the ground floor imports nothing above it, the image's runtime
loads no build code, and the CLI loads only the command module a command line needs."""

from __future__ import annotations

import argparse
import ast
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


# docs/design.md §3, as data: the rooms each room may import (its own always). ``cli`` is the
# top: it loads the command modules its COMMANDS table names, and nothing else above core.
MAY_IMPORT: dict[str, frozenset[str]] = {
    "core": frozenset(),
    "manifest": frozenset({"core"}),
    "deployment": frozenset({"core"}),
    "project": frozenset({"core", "deployment"}),
    "inputs": frozenset({"core", "manifest", "project"}),
    "oci": frozenset({"core"}),
    "assembly": frozenset({"core", "manifest", "project", "inputs", "oci"}),
    "release": frozenset(
        {"core", "manifest", "deployment", "project", "inputs", "assembly", "oci"}
    ),
    # bundles has two sides (BUNDLES_RUNNER_SIDE below): runtime may use only the worker's.
    "runtime": frozenset({"core", "manifest", "bundles"}),
    # the runner's side makes prebuilt environments with the image builder's .pyc and layers
    "bundles": frozenset({"core", "manifest", "project", "inputs", "oci", "runtime", "assembly"}),
    "results": frozenset({"core"}),
    "jobs": frozenset({"core", "manifest", "runtime", "oci", "bundles", "results"}),
    # a local cluster of the built images: the build's outputs, loaded into the engine, each
    # container with its pod's limits (deployment)
    "local": frozenset({"core", "manifest", "deployment", "project", "assembly"}),
    "cli": frozenset({"core"}),
    "__main__": frozenset({"cli"}),
    "lockstep": frozenset(),  # the package itself: its version
}
# Single arrows across rooms, each with why (a module here, never a room).
ACROSS = {
    ("lockstep.bundles.image_pins", "lockstep.release.record"): (
        "`bundle lock --release RECORD` reads the release record with its one reader "
        "(record.py imports only core)"
    ),
}
# Modules that import a module named at run time by something other than a string of their
# own source, and why that is no arrow of the house.
RUNTIME_NAMED = {
    "lockstep.core.entrypoints": "executor entry points: targets checked by test_entry_points_*",
    "lockstep.bundles.probe": "a job's task module: the user's code, not lockstep's",
}


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def room(module: str) -> str:
    """``lockstep.runtime.cluster`` → ``runtime``; ``lockstep.manifest`` → ``manifest``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _target(name: str) -> str | None:
    """The lockstep module ``name`` (a module, or an attribute of one) lives in; None if none."""
    name = name.split(":")[0]  # an entry point's "module:attr"
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str) -> set[str]:
    """Every lockstep module ``module`` imports: at the top, in functions, and through
    ``importlib.import_module``/``__import__`` (a string argument, or when the argument is
    computed, every string of the module that names a lockstep module)."""
    path = MODULES[module]
    tree = ast.parse(path.read_text())
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    dynamic = False
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([node.module] if node.module else []))
            names.update(f"{base}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Call):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called in ("import_module", "__import__") and node.args:
                arg = node.args[0]
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    names.add(arg.value)
                else:
                    dynamic = True
    if dynamic:
        strings = {
            n.value
            for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str)
        }
        named = {s for s in strings if s.startswith("lockstep.") and _target(s)}
        assert named or module in RUNTIME_NAMED, (
            f"{module} imports a module named at run time that no string of it names; "
            "name it, or say why in RUNTIME_NAMED"
        )
        names |= named
    found = {t for t in map(_target, (n for n in names if n.startswith("lockstep"))) if t}
    return found - {module}


GRAPH = {m: imports_of(m) for m in MODULES}


def test_every_room_is_in_the_table() -> None:
    rooms = {room(m) for m in MODULES}
    assert rooms == set(MAY_IMPORT), "add the room to MAY_IMPORT and to docs/design.md §3"


@pytest.mark.parametrize("source", sorted(MAY_IMPORT))
def test_each_room_imports_only_the_rooms_below_it(source: str) -> None:
    allowed = MAY_IMPORT[source] | {source, "lockstep"}  # the package: its version, its path
    wrong = sorted(
        f"{m} imports {t}"
        for m, targets in GRAPH.items()
        if room(m) == source
        for t in targets
        if room(t) not in allowed
        and not (source == "cli" and t in cli.COMMANDS)  # the command table, by name
        and (m, t) not in ACROSS
    )
    assert not wrong, wrong


def test_each_arrow_across_rooms_exists_and_its_target_stays_on_core() -> None:
    for source, target in ACROSS:
        assert target in GRAPH[source], f"{source} no longer imports {target}: drop it"
        assert {room(t) for t in GRAPH[target]} <= {"core"}, f"{target} imports above core"


def test_no_command_module_imports_another_stage_s() -> None:
    commands = [m for m in MODULES if m.rpartition(".")[2].endswith("commands")]
    wrong = [
        f"{m} imports {t}"
        for m in commands
        for t in GRAPH[m]
        if t.rpartition(".")[2].endswith("commands") and room(t) != room(m)
    ]
    assert not wrong, wrong


def test_there_are_no_import_cycles() -> None:
    """Between modules, lazy and dynamic imports included (Tarjan's strongly connected parts)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(GRAPH[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            part = stack[stack.index(v) :]
            del stack[stack.index(v) :]
            if len(part) > 1:
                cycles.append(sorted(part))

    for module in sorted(GRAPH):
        if module not in index:
            visit(module)
    assert not cycles, cycles


def test_the_import_graph_sees_lazy_and_dynamic_imports() -> None:
    """The checks above would pass vacuously if the parser missed these kinds of import."""
    assert "lockstep.bundles.commands" in GRAPH["lockstep.cli"]  # COMMANDS, by name
    assert "lockstep.runtime.cluster" in GRAPH["lockstep.runtime"]  # _EXPORTS, by name
    assert "lockstep.runtime.cluster" in GRAPH["lockstep.runtime.commands"]  # in a function


def test_entry_points_name_the_runtime_s_executors() -> None:
    from lockstep.core.entrypoints import registered

    for name, target in registered().items():
        found = _target(target)
        assert found and found.startswith("lockstep.runtime.executors"), (name, target)


@pytest.mark.parametrize(
    "code",
    [
        "import lockstep.runtime.preload_worker",
        "import lockstep.runtime.preload_scheduler",
        "import lockstep.runtime.tasks, lockstep.runtime.cluster, lockstep.runtime.doctor",
        "import lockstep.runtime.executors.cold, lockstep.runtime.executors._child",
        "import lockstep.runtime.selfcheck, lockstep.jobs.entry",
        "import lockstep.bundles.handlers, lockstep.runtime.worker",
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
        parser = cli.make_parser([module])
        (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        assert tuple(sub.choices) == names, module


def test_a_command_made_by_cli_has_its_owner_s_actions() -> None:
    """cli makes ``bundle`` (GROUPS); its actions, ``lock`` included, are the bundles room's."""
    for argv in (["bundle", "lock", "d"], ["bundle", "inspect", "h/r@sha256:" + "0" * 64]):
        assert cli.make_parser().parse_args(argv).func.__module__ == "lockstep.bundles.commands"
    assert cli.modules_for(["bundle", "push", "d"]) == ["lockstep.bundles.commands"]


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


# --- the two sides of the bundles room ---------------------------------------------------------

# The worker's side sits below runtime (a running worker imports it); the runner's side (these)
# beside jobs: it may use runtime's client side, and the lock inputs/.
BUNDLES_RUNNER_SIDE = frozenset(
    f"lockstep.bundles.{m}"
    for m in (
        "format",
        "lock",
        "image_pins",
        "ship",
        "ship_layer",
        "prebuilt",
        "remote",
        "commands",
    )
)


def test_the_bundles_worker_side_imports_only_core_oci_and_itself() -> None:
    for module, targets in GRAPH.items():
        if room(module) == "bundles" and module not in BUNDLES_RUNNER_SIDE:
            wrong = sorted(
                t
                for t in targets
                if room(t) not in ("core", "oci", "bundles") or t in BUNDLES_RUNNER_SIDE
            )
            assert not wrong, f"{module} (the worker's side) imports {wrong}"


def test_runtime_uses_only_the_bundles_worker_side() -> None:
    for module, targets in GRAPH.items():
        if room(module) == "runtime":
            wrong = sorted(targets & BUNDLES_RUNNER_SIDE)
            assert not wrong, f"{module} imports the runner's side of bundles: {wrong}"
