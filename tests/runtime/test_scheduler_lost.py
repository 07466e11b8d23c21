"""Issue #26 item 5: losing the scheduler is a documented non-zero exit, for a worker and for
a run (exit 3, saying so), never a clean stop or a failed simulation.

Real ``lockstep scheduler``/``worker``/``run`` processes on 127.0.0.1, a private cluster per
test; the scheduler is SIGKILLed by the pid we started.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from lockstep.runtime.worker import EXIT_SCHEDULER_LOST
from tests.fixtures.procs import start_scheduler, start_worker, write_manifest
from tests.jobs.test_jobs_contain import error_line, sabotage
from tests.jobs.test_jobs_units import copy_example
from tests.jobs.test_run_no_hang import run_logged, wait_until


@pytest.mark.parametrize("nanny", [False, True])
def test_a_worker_that_loses_its_scheduler_exits_non_zero(tmp_path: Path, nanny: bool) -> None:
    a_path, _ = write_manifest(tmp_path, "a")
    scheduler, address = start_scheduler(tmp_path, a_path)
    worker = start_worker(tmp_path, address, a_path, "cold", "w-lost", nanny=nanny,
                          env={"LOCKSTEP_BUNDLE_DIR": str(tmp_path / "cache")})  # fmt: skip
    try:
        worker.wait_for("lockstep worker ready", 60)
        os.kill(scheduler.pid, signal.SIGKILL)
        scheduler.popen.wait()
        assert worker.wait(120) == EXIT_SCHEDULER_LOST == 3, worker.text()[-3000:]
        assert "lockstep worker lost its scheduler" in worker.text()
    finally:
        worker.stop()
        scheduler.stop()


def test_a_run_whose_scheduler_dies_exits_3_blaming_the_cluster(tmp_path: Path) -> None:
    a_path, _ = write_manifest(tmp_path, "a")
    scheduler, address = start_scheduler(tmp_path, a_path)
    worker = start_worker(tmp_path, address, a_path, "cold", "w-run",
                          env={"LOCKSTEP_BUNDLE_DIR": str(tmp_path / "cache")})  # fmt: skip
    started = tmp_path / "started"
    spec = sabotage(
        copy_example(tmp_path),
        f"import pathlib, time\npathlib.Path({str(started)!r}).touch()\ntime.sleep(60)",
    )
    log = tmp_path / "run.log"
    cli = None
    try:
        worker.wait_for("lockstep worker ready", 60)
        cli = run_logged(address, a_path, spec, log, "--timeout", "5", "--deadline", "600")
        wait_until(started.exists, cli, log)
        os.kill(scheduler.pid, signal.SIGKILL)
        assert cli.wait(timeout=120) == 3, log.read_text()
        line = error_line(log.read_text())
        assert "scheduler" in line and "failed:" not in line.split("scheduler")[0], line
    finally:
        if cli is not None and cli.poll() is None:
            cli.kill()
            cli.wait()
        worker.stop()
        scheduler.stop()


def test_a_second_scheduler_on_a_taken_port_names_the_port(tmp_path: Path) -> None:
    import subprocess

    from tests.fixtures.procs import base_env, lockstep

    a_path, _ = write_manifest(tmp_path, "a")
    scheduler, address = start_scheduler(tmp_path, a_path)
    port = address.rsplit(":", 1)[1]
    try:
        done = subprocess.run(
            lockstep("scheduler", "--host", "127.0.0.1", "--port", port, "--no-dashboard"),
            env=base_env(a_path),
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        scheduler.stop()
    assert done.returncode == 3, done.stderr[-3000:]
    line = error_line(done.stderr)
    assert f"127.0.0.1:{port}" in line and "in use" in line, line
