"""Build hygiene: what a killed build leaves is cleaned by the next one, and the tools a
build runs (pex, and the pip it starts) die with it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from lockstep.core import reap
from tests.fixtures.build import Built, build, clone


def _dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _gone(pids: set[int], within: float = 30.0) -> set[int]:
    """The pids of ``pids`` still running after waiting up to ``within`` seconds."""
    deadline = time.monotonic() + within
    alive = set(pids)
    while alive and time.monotonic() < deadline:
        alive = {p for p in alive if _running(p)}
        time.sleep(0.1)
    return alive


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2 :].split()[0] != b"Z"  # a zombie has ended


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def test_leftover_temporaries_in_out_are_removed_by_the_next_build(built: Built) -> None:
    dead = built.out / f".{built.path('runner').name}.{_dead_pid()}.abc123.tmp"
    dead.write_bytes(b"half an archive")
    holder = subprocess.Popen(["sleep", "300"])  # a live "build" still writing its temporary
    try:
        live = built.out / f".{built.path('worker').name}.{holder.pid}.def456.tmp"
        live.write_bytes(b"being written")
        again = build(built.root, built.out, built.cache)  # a no-op rebuild
        assert again.result == built.result
        assert not dead.exists(), "a killed build's temporary was left in --out"
        assert live.exists(), "a running build's temporary must not be taken away"
    finally:
        holder.kill()
        holder.wait()
        live.unlink(missing_ok=True)


def test_a_supervised_command_dies_with_its_parent(tmp_path: Path) -> None:
    """``python -m lockstep.core.reap -- CMD``: SIGKILL its parent, and CMD and everything
    CMD started (here a background child, as pip's are) end too."""
    marker = tmp_path / "started"
    parent = subprocess.Popen(
        [sys.executable, "-c",
         "import subprocess, sys; subprocess.run(sys.argv[1:])",
         *reap.supervised(["sh", "-c", f"sleep 300 & echo $! > {marker}; sleep 300"])],
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not marker.exists() or not marker.read_text().strip():
            assert time.monotonic() < deadline and parent.poll() is None
            time.sleep(0.05)
        below = reap.descendants(parent.pid)
        assert int(marker.read_text()) in below and len(below) >= 3  # reap, sh, 2 x sleep
    finally:
        parent.kill()
        parent.wait()
    assert _gone(below) == set()


def test_a_killed_lock_leaves_no_pex_running(built: Built, tmp_path: Path) -> None:
    """The issue's case: ``lockstep lock python`` killed while pex resolves."""
    src = clone(tmp_path / "src")
    env = {**os.environ, "LOCKSTEP_CACHE_DIR": str(built.cache)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "lockstep", "lock", "python"],
        cwd=src,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 300
        while True:
            below = reap.descendants(proc.pid)
            if any("pex3" in _cmdline(p) and "lock" in _cmdline(p) for p in below):
                break
            assert proc.poll() is None, "lock python ended before pex started"
            assert time.monotonic() < deadline, "pex never started"
            time.sleep(0.05)
        time.sleep(0.5)  # let pex start pip
        below = reap.descendants(proc.pid)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if proc.stderr:
            proc.stderr.close()
    assert _gone(below) == set(), [_cmdline(p) for p in below]
