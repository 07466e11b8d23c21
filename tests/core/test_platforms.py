"""The platform table and the emulation check (core/platforms.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lockstep.core import platforms
from lockstep.core.errors import BadInput
from lockstep.core.platforms import ARM64, emulation_problem


def _binfmt(tmp_path: Path, entry: str | None) -> Path:
    (tmp_path / "register").write_text("")
    if entry is not None:
        (tmp_path / "qemu-aarch64").write_text(entry)
    return tmp_path


GOOD = "enabled\ninterpreter {interp}\nflags: {flags}\noffset 0\nmagic 7f454c46\n"


@pytest.fixture(autouse=True)
def _on_amd64(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(platforms, "host", lambda: platforms.AMD64)


def test_a_registered_qemu_with_fix_binary_runs_arm64(tmp_path: Path) -> None:
    interp = tmp_path / "qemu-aarch64-static"
    interp.write_text("")
    d = _binfmt(tmp_path, GOOD.format(interp=interp, flags="PF"))
    assert emulation_problem(ARM64, d) is None
    assert emulation_problem(platforms.AMD64, tmp_path / "nothing") is None  # native


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        (None, "no "),
        ("disabled\ninterpreter /x\nflags: PF\n", "is disabled"),
        ("enabled\ninterpreter /no/such/qemu\nflags: PF\n", "which is missing"),
        ("enabled\ninterpreter {interp}\nflags: P\n", "lacks the F (fix-binary) flag"),
    ],
)
def test_each_missing_piece_is_named_with_the_fix(
    tmp_path: Path, entry: str | None, says: str
) -> None:
    interp = tmp_path / "qemu"
    interp.write_text("")
    d = _binfmt(tmp_path, entry.format(interp=interp) if entry else None)
    problem = emulation_problem(ARM64, d)
    assert problem is not None and says in problem
    assert "update-binfmts --enable qemu-aarch64" in problem and "\n" not in problem


def test_an_unmounted_binfmt_misc_is_named(tmp_path: Path) -> None:
    problem = emulation_problem(ARM64, tmp_path)
    assert problem is not None and "binfmt_misc is not mounted" in problem


def test_per_platform_facts_are_keyed_by_platform() -> None:
    assert platforms.platform("linux/arm64").libdir == "usr/lib/aarch64-linux-gnu"
    assert platforms.platform("linux/amd64").loader == "usr/lib64/ld-linux-x86-64.so.2"
    assert platforms.DEFAULT == ("linux/amd64", "linux/arm64")
    with pytest.raises(BadInput, match="unknown platform 'linux/s390x'"):
        platforms.platform("linux/s390x", "pyproject.toml")
