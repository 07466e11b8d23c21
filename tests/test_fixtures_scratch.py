"""The services' scratch directories: a killed run's are removed by the next, a live
run's are not (tests/fixtures/scratch.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures import scratch
from tests.fixtures.build import ROOT

CLAIM_AND_WAIT = (
    "import sys, time\n"
    "from tests.fixtures import scratch\n"
    "print(scratch.claim(sys.argv[1]), flush=True)\n"
    "time.sleep(600)\n"
)


@pytest.fixture
def prefix() -> Iterator[str]:
    name = f"ls-scratch-test-{uuid.uuid4().hex[:8]}-"
    yield name
    for left in Path(tempfile.gettempdir()).glob(name + "*"):
        subprocess.run(["rm", "-rf", str(left)], check=False)


def _claim_in_child(prefix: str) -> tuple[subprocess.Popen[str], Path]:
    child = subprocess.Popen(
        [sys.executable, "-c", CLAIM_AND_WAIT, prefix],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    return child, Path(child.stdout.readline().strip())


def test_a_killed_runs_directory_is_swept_and_a_live_ones_is_kept(prefix: str) -> None:
    alive, kept = _claim_in_child(prefix)
    killed, left = _claim_in_child(prefix)
    try:
        (left / "data").mkdir()
        (left / "data" / "layer").write_bytes(b"x" * 4096)
        os.kill(killed.pid, signal.SIGKILL)  # no teardown: the directory stays behind
        killed.wait(timeout=10)
        assert left.is_dir()

        mine = scratch.claim(prefix)  # the next run sweeps first
        try:
            assert not left.exists()
            assert kept.is_dir() and mine.is_dir()
            assert scratch.sweep(prefix) == []  # both owners alive
        finally:
            scratch.release(mine)
        assert scratch.sweep(prefix) == [mine]  # released: its owner is done with it
    finally:
        alive.kill()
        alive.wait(timeout=10)
    assert scratch.sweep(prefix) == [kept]


def test_an_unowned_directory_is_swept_only_when_old(prefix: str) -> None:
    fresh = Path(tempfile.mkdtemp(prefix=prefix))  # a concurrent run, before its lock
    old = Path(tempfile.mkdtemp(prefix=prefix))  # made by a run before locks existed
    past = time.time() - scratch.UNOWNED_GRACE - 5
    os.utime(old, (past, past))
    assert scratch.sweep(prefix) == [old]
    assert fresh.is_dir()


def test_a_directory_a_live_process_names_is_left_alone(prefix: str) -> None:
    """A registry that outlived a killed run still serves from its directory: not ours."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    past = time.time() - scratch.UNOWNED_GRACE - 5
    os.utime(root, (past, past))
    user = subprocess.Popen(
        [sys.executable, "-c", "import time; print(flush=True); time.sleep(600)", str(root)],
        stdout=subprocess.PIPE,
    )
    assert user.stdout is not None and user.stdout.readline() == b"\n"  # it runs
    try:
        assert scratch.sweep(prefix) == []
        assert root.is_dir()
    finally:
        user.kill()
        user.wait(timeout=10)
    assert scratch.sweep(prefix) == [root]
