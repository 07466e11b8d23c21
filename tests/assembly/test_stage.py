"""Materialising entries: modes, order, and never writing through a symlink."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from lockstep.assembly.entries import Entry
from lockstep.assembly.pycompile import pyc_path
from lockstep.assembly.stage import StagedPython, materialize
from lockstep.core.errors import BadInput, CheckFailed


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_materialize_writes_entries_with_their_modes(tmp_path: Path) -> None:
    root = tmp_path / "root"
    materialize(
        [
            Entry.symlink("bin", "usr/bin"),
            Entry.file("usr/bin/tool", b"#!/bin/sh\n", 0o755),
            Entry.dir("tmp", 0o1777),
            Entry.dir("ro", 0o555),
            Entry.file("ro/data", b"x", 0o444),
            Entry.symlink("etc/dangling", "../nowhere"),
            Entry.symlink("etc/abs", "/etc/passwd"),  # written verbatim, never followed
        ],
        root,
    )
    assert (root / "usr/bin/tool").read_bytes() == b"#!/bin/sh\n"
    assert mode(root / "usr/bin/tool") == 0o755
    assert mode(root / "usr") == 0o755  # implied parents
    assert mode(root / "tmp") == 0o1777
    assert mode(root / "ro") == 0o555 and (root / "ro/data").read_bytes() == b"x"
    assert os.readlink(root / "bin") == "usr/bin"
    assert os.readlink(root / "etc/abs") == "/etc/passwd"
    assert (root / "bin/tool").read_bytes() == b"#!/bin/sh\n"


def test_materialize_refuses_paths_through_symlinks(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    with pytest.raises(BadInput, match="'evil/passwd' passes through the symlink 'evil'"):
        materialize(
            [Entry.symlink("evil", str(outside)), Entry.file("evil/passwd", b"x")],
            tmp_path / "root",
        )
    assert list(outside.iterdir()) == []


def test_materialize_onto_adds_to_a_tree_it_wrote(tmp_path: Path) -> None:
    """What lets the base keep its tree: its .pyc are added where its python compiled them,
    giving what one materialisation of the whole layer gives."""
    layer = [Entry.file("lib/a.py", b"A = 1\n"), Entry.dir("ro", 0o555), Entry.file("ro/x", b"x")]
    pycs = [Entry.file("lib/__pycache__/a.cpython-311.pyc", b"pyc")]
    root = tmp_path / "root"
    materialize(layer, root)
    materialize(pycs, root, onto=True)
    whole = tmp_path / "whole"
    materialize([*layer, *pycs], whole)

    def tree(top: Path) -> dict[str, tuple[int, bytes]]:
        return {
            str(p.relative_to(top)): (mode(p), p.read_bytes() if p.is_file() else b"")
            for p in sorted(top.rglob("*"))
        }

    assert tree(root) == tree(whole)
    with pytest.raises(FileExistsError):  # a file is never overwritten
        materialize([Entry.file("lib/a.py", b"other")], root, onto=True)
    (tmp_path / "elsewhere").mkdir()
    (root / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(BadInput, match="without following a symlink"):
        materialize([Entry.file("link/x", b"x")], root, onto=True)
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_materialize_needs_an_empty_destination(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "etc").symlink_to(tmp_path)
    with pytest.raises(BadInput, match="not empty"):
        materialize([Entry.file("etc/passwd", b"x")], tmp_path / "root")
    assert not (tmp_path / "passwd").exists()


def test_staged_python_env_is_minimal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", "/host/leak")
    py = StagedPython(tmp_path)
    env = py.env()
    assert "PYTHONPATH" not in env
    assert env["PYTHONHOME"] == str(tmp_path / "usr") and env["PYTHONHASHSEED"] == "0"
    assert env["LC_ALL"] == "C.UTF-8"
    argv = py.argv("-c", "pass")
    assert argv[0] == str(tmp_path / "usr/lib64/ld-linux-x86-64.so.2")
    assert "-I" not in argv and "-E" not in argv and argv[-4:] == ["-s", "-S", "-c", "pass"]
    with pytest.raises(CheckFailed, match="missing"):
        py.check()


def test_pyc_path() -> None:
    assert (
        pyc_path("usr/lib/python3.11/json/__init__.py", "cpython-311")
        == "usr/lib/python3.11/json/__pycache__/__init__.cpython-311.pyc"
    )
    assert pyc_path("top.py", "cpython-311") == "__pycache__/top.cpython-311.pyc"
