"""Temporaries named by their process: a killed process's are removed by the next one,
a live process's never."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from lockstep.core.atomic import remove_leftovers, scratch_dir, temp_dir, temp_pid

HOLD = """
import sys
from lockstep.core.atomic import scratch_dir, temp_dir
from pathlib import Path
with scratch_dir(sys.argv[1]) as scratch:
    (scratch / "half").write_bytes(b"x" * 1000)
    kept = temp_dir(Path(sys.argv[2]), "env", "layer-")
    (kept / "site").mkdir()
    (kept / "site" / "f.py").write_bytes(b"X = 1\\n")
    (kept / "site" / "f.py").chmod(0o444)
    (kept / "site").chmod(0o555)
    print(scratch, kept, flush=True)
    sys.stdin.read()
"""


def killed_midway(stem: str, parent: Path) -> tuple[Path, Path]:
    """A real process that made a scratch directory and a read-only temporary tree under
    ``parent``, killed while it held them: (scratch, tree)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, stem, str(parent)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        scratch, tree = proc.stdout.readline().split()
    finally:
        proc.kill()
        proc.wait()
    return Path(scratch), Path(tree)


def test_a_killed_process_leaves_temporaries_that_the_next_one_removes(tmp_path: Path) -> None:
    stem = f"lockstep-test-{os.getpid()}"
    scratch, tree = killed_midway(stem, tmp_path)
    assert scratch.is_dir() and tree.is_dir()  # killed: nothing cleaned up after it
    assert temp_pid(tree.name) not in (None, os.getpid())
    mine = temp_dir(tmp_path, "env")  # a live process's (this one's): never removed
    (tmp_path / ".not-a-temporary.tmp").mkdir()
    assert remove_leftovers(tmp_path) == [tree]
    assert not tree.exists() and mine.is_dir() and (tmp_path / ".not-a-temporary.tmp").is_dir()
    with scratch_dir(stem) as next_one:  # the next run of the same work
        assert not scratch.exists() and next_one.is_dir()
        assert next_one.parent == Path(tempfile.gettempdir())
    assert not next_one.exists()


@pytest.mark.parametrize(
    ("name", "pid"),
    [(".abc.12.x1y2.tmp", 12), (".a.b.c.7.layer-q.tmp", 7), (".abc.tmp", None),
     (".abc.12-3.tmp", None), ("abc.12.x.tmp", None), (".abc.12.x", None)],
)  # fmt: skip
def test_the_owner_of_a_temporary_is_read_from_its_name(name: str, pid: int | None) -> None:
    assert temp_pid(name) == pid
