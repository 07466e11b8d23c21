"""The isolated import probe: bundle code runs in another process, whatever it does."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from lockstep.bundles.probe import run_probe


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


def test_a_hanging_import_blames_only_its_own_module(tmp_path: Path) -> None:
    """Issue #26: a model whose import loops made the healthy target fail the check too."""
    root = tmp_path / "b"
    root.mkdir()
    (root / "loops.py").write_text(
        "while True:\n    pass\ndef model(params, seed):\n    return {}\n"
    )
    (root / "crashes.py").write_text("import os\nos._exit(9)\n")
    (root / "fine.py").write_text("def target(results):\n    return 0\n")
    results = run_probe(
        [str(root)],
        [
            {"role": "model", "ref": "loops:model", "args": ["params", "seed"]},
            {"role": "model", "ref": "loops:other", "args": ["params", "seed"]},
            {"role": "target", "ref": "fine:target", "args": ["results"]},
            {"role": "model", "ref": "crashes:f", "args": ["params", "seed"]},
            {"role": "target", "ref": "fine:target", "args": ["results"]},
        ],
        timeout=2,
    )
    assert [r["ok"] for r in results] == [False, False, True, False, True]
    assert all("did not finish within 2 s" in r["problem"] for r in results[:2])
    assert "ended with code 9 before answering" in results[3]["problem"]
    assert results[2]["file"] == str(root / "fine.py")
