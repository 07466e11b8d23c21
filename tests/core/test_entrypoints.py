"""The executor registry: one group name, one way to resolve ``module:attr``, and the script
the build runs with the image's python."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from lockstep.core import entrypoints
from lockstep.runtime.executors import Executor

ROOT = Path(__file__).resolve().parents[2]


def test_registered_is_the_pyproject_entry_point_group() -> None:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    declared = data["project"]["entry-points"][entrypoints.GROUP]
    assert entrypoints.registered() == dict(sorted(declared.items()))
    for name, target in entrypoints.registered().items():
        cls = entrypoints.resolve(target)
        assert issubclass(cls, Executor) and cls.name == name


@pytest.mark.parametrize("ref", ["nocolon", ":attr", "module:", "", "a:b:c:"])
def test_split_refuses_malformed_references(ref: str) -> None:
    if ref == "a:b:c:":  # everything after the first colon is the attribute path
        assert entrypoints.split(ref) == ("a", "b:c:")
        return
    with pytest.raises(ValueError, match="does not read 'module:attribute'"):
        entrypoints.split(ref)


def test_resolve_walks_dotted_attributes() -> None:
    assert entrypoints.resolve("os.path:join.__name__") == "join"
    with pytest.raises(AttributeError):
        entrypoints.resolve("os.path:no_such_name")


def test_import_errors_catch_anything_an_executor_module_raises(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "exits_on_import.py").write_text("raise SystemExit(3)\n")
    (tmp_path / "fine.py").write_text("class E: pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    errors = entrypoints.import_errors(
        {"bad": "exits_on_import:E", "ok": "fine:E", "missing": "fine:F"}
    )
    assert sorted(errors) == ["bad", "missing"]
    assert errors["bad"] == "exits_on_import:E: SystemExit: 3"
    assert errors["missing"].startswith("fine:F: AttributeError:")


def test_the_script_reads_the_registry_of_the_site_dirs_it_is_given(tmp_path: Path) -> None:
    """What the build runs with the image's python: only the given directories count."""
    site = tmp_path / "site"
    info = site / "demo-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        f"[{entrypoints.GROUP}]\nquick = demo_ex:Quick\nbroken = demo_ex:Missing\n"
    )
    (site / "demo_ex.py").write_text("class Quick: pass\n")
    proc = subprocess.run(
        [sys.executable, "-s", "-S", "-P", entrypoints.__file__, str(site)],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    result = json.loads(proc.stdout)
    assert result["found"] == {"broken": "demo_ex:Missing", "quick": "demo_ex:Quick"}
    assert list(result["errors"]) == ["broken"]


def test_the_script_names_the_absent_modules_an_import_asked_for(tmp_path: Path) -> None:
    """The build puts a heavy layer on disk for the check only if an import asks for it."""
    site, heavy = tmp_path / "site", tmp_path / "heavy"
    info = site / "demo-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[{entrypoints.GROUP}]\nquick = demo_ex:Quick\n")
    (site / "demo_ex.py").write_text(
        "try:\n    import heavypkg.sub\nexcept ImportError:\n    heavypkg = None\n"
        "import json\nclass Quick: pass\n"
    )  # an import that falls back quietly is still seen
    (heavy / "heavypkg").mkdir(parents=True)
    (heavy / "heavypkg" / "__init__.py").write_text("")
    (heavy / "heavypkg" / "sub.py").write_text("")

    def check(*args: str) -> dict[str, object]:
        proc = subprocess.run(
            [sys.executable, "-s", "-S", "-P", entrypoints.__file__, *args],
            capture_output=True, text=True, check=True, cwd=tmp_path,
        )  # fmt: skip
        result: dict[str, object] = json.loads(proc.stdout)
        return result

    first = check(str(site), "--absent=heavypkg,otherpkg")
    assert first["absent"] == ["heavypkg"] and first["errors"] == {}
    second = check(str(site), str(heavy), "--absent=otherpkg")
    assert second["absent"] == [] and second["errors"] == {}
