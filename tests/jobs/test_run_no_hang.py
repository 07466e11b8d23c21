"""Issue #26: a run ends whatever happens to its only worker, and leaves no task running.

Real ``lockstep scheduler``/``worker``/``run`` processes on 127.0.0.1, a private cluster
per test. The worker is killed before any result, while the first tasks run, and after
some results came in, with and without a replacement worker; the run must end with
exit 3 (or finish on the replacement) and a line saying so, and no task process may
outlive the run (the tests walk /proc).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fixtures.procs import Proc, base_env, lockstep
from tests.jobs.test_jobs_contain import add_keys, cluster, error_line, sabotage, worker
from tests.jobs.test_jobs_units import copy_example, edit_spec
from tests.runtime.test_containment import wait_gone

__all__ = ["cluster"]  # the fixture, shared with test_jobs_contain


def run_logged(
    address: str, manifest: Path, spec: Path, log: Path, *args: str
) -> subprocess.Popen[str]:
    """``lockstep run`` with its stderr in ``log`` (read while it runs)."""
    return subprocess.Popen(
        lockstep(
            "run", str(spec), "--scheduler", address, "--out", str(spec.parent / "out.json"), *args
        ),
        env=base_env(manifest),
        stdout=subprocess.DEVNULL,
        stderr=log.open("w"),
        text=True,
    )


def wait_until(
    check: Callable[[], bool], cli: subprocess.Popen[str], log: Path, poll: float = 0.05
) -> None:
    deadline = time.monotonic() + 90
    while not check():
        assert cli.poll() is None, f"the run ended:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"not after 90 s ({check}):\n{log.read_text()}"
        time.sleep(poll)


def wait_for_text(log: Path, text: str, cli: subprocess.Popen[str], poll: float = 0.05) -> None:
    wait_until(lambda: text in log.read_text(), cli, log, poll)


SEEDS = 200  # x 2 parameter sets


def fast_marked(tmp_path: Path) -> tuple[Path, Path]:
    """The example with SEEDS seeds whose tasks each leave a file in ``done`` as they end."""
    done = tmp_path / "done"
    done.mkdir()
    seeds = ", ".join(str(s) for s in range(1, SEEDS + 1))
    spec = sabotage(
        copy_example(tmp_path),
        f"import pathlib; pathlib.Path({str(done)!r}, f\"{{params['name']}}-{{seed}}\").touch()",
        seeds=f"[{seeds}]",
    )
    return spec, done


def kill_worker(moment: str, proc: Proc, cli: subprocess.Popen[str], log: Path, done: Path) -> None:
    """SIGKILL the worker at ``moment``: ``before`` (the bundle is being shipped),
    ``during`` (the first tasks ran), ``after`` (a tenth of the results was read: the
    worker runs these short tasks faster than the runner reads their results, so the
    runner is reading results the worker holds when it dies)."""
    if moment == "before":
        wait_for_text(log, "preflight ok", cli)
    elif moment == "during":
        wait_until(lambda: any(done.iterdir()), cli, log)
    else:
        wait_for_text(log, f"simulations {2 * SEEDS // 10}/{2 * SEEDS} done", cli, poll=0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.popen.wait()


@pytest.mark.parametrize("moment", ["before", "during", "after"])
def test_killing_the_only_worker_ends_the_run_with_exit_3(
    tmp_path: Path, cluster: tuple[Path, str, list[Proc]], moment: str
) -> None:
    a_path, address, procs = cluster
    proc = worker(tmp_path, address, a_path, "cold", "w-only", procs)
    proc.wait_for("lockstep worker ready", 60)
    log = tmp_path / "run.log"
    spec, done = fast_marked(tmp_path)
    cli = run_logged(address, a_path, spec, log, "--timeout", "5", "--deadline", "900")
    try:
        kill_worker(moment, proc, cli, log, done)
        cli.wait(timeout=90)  # --timeout 5 + the time to notice; never the 900 s deadline
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
    stderr = log.read_text()
    assert cli.returncode == 3, stderr
    line = error_line(stderr)
    assert line.startswith("lockstep: error: no worker running executor cold of build sha256:")
    assert "waited 5 s (--timeout) for one" in line, line
    assert not (spec.parent / "out.json").exists()


def test_a_replacement_worker_finishes_the_run(
    tmp_path: Path, cluster: tuple[Path, str, list[Proc]]
) -> None:
    a_path, address, procs = cluster
    proc = worker(tmp_path, address, a_path, "cold", "w-first", procs)
    proc.wait_for("lockstep worker ready", 60)
    log = tmp_path / "run.log"
    spec, done = fast_marked(tmp_path)
    cli = run_logged(address, a_path, spec, log, "--timeout", "60", "--deadline", "900")
    try:
        kill_worker("after", proc, cli, log, done)
        worker(tmp_path, address, a_path, "cold", "w-second", procs)
        cli.wait(timeout=180)
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
    stderr = log.read_text()
    assert cli.returncode == 0, stderr
    assert "gone; sending" in stderr and "unfinished task(s) to tcp://127.0.0.1:" in stderr
    assert (spec.parent / "out.json").exists()


# --- an abandoned task ends with its run ----------------------------------------------------


def hanging(tmp_path: Path, executor: str, pids: Path) -> Path:
    """The example under ``executor`` whose seed-2 tasks write their pid to ``pids`` and
    then hang (task timeout 900 s: only the run's end may stop them)."""
    pids.mkdir()
    spec = sabotage(
        copy_example(tmp_path),
        "if seed == 2:\n"
        f"    import os, pathlib, time; pathlib.Path({str(pids)!r}, str(os.getpid())).touch()\n"
        "    time.sleep(900)",
        executor=f'"{executor}"',
    )
    return add_keys(spec, task_timeout="900")


@pytest.mark.parametrize("executor", ["cold", "isolated_warm"])
@pytest.mark.parametrize("end", ["deadline", "runner killed"])
def test_a_run_that_ends_ends_its_tasks(
    tmp_path: Path, cluster: tuple[Path, str, list[Proc]], executor: str, end: str
) -> None:
    a_path, address, procs = cluster
    proc = worker(tmp_path, address, a_path, executor, f"w-{executor}", procs)
    proc.wait_for("lockstep worker ready", 60)
    pids = tmp_path / "pids"
    spec = hanging(tmp_path, executor, pids)
    log = tmp_path / "run.log"
    deadline = ["--deadline", "4"] if end == "deadline" else []
    cli = run_logged(address, a_path, spec, log, *deadline)
    try:
        wait_until(lambda: any(pids.iterdir()), cli, log)
        if end == "runner killed":
            os.kill(cli.pid, signal.SIGKILL)
        cli.wait(timeout=90)
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
    if end == "deadline":
        assert cli.returncode == 1 and "run deadline of 4 s passed" in error_line(log.read_text())
    hung = {int(p.name) for p in pids.iterdir()}
    assert wait_gone(hung) == set(), f"task process(es) {hung} outlived the run"
    # the worker is free for the next run at once (not after the 900 s task timeout)
    good = edit_spec(copy_example(tmp_path / "next"), executor=f'"{executor}"')
    again = run_logged(address, a_path, good, tmp_path / "next.log", "--deadline", "60")
    assert again.wait(timeout=120) == 0, (tmp_path / "next.log").read_text()
    assert proc.popen.poll() is None


def test_a_direct_worker_retires_when_its_task_is_abandoned(
    tmp_path: Path, cluster: tuple[Path, str, list[Proc]]
) -> None:
    a_path, address, procs = cluster
    proc = worker(tmp_path, address, a_path, "direct", "w-direct", procs)
    proc.wait_for("lockstep worker ready", 60)
    pids = tmp_path / "pids"
    spec = hanging(tmp_path, "direct", pids)
    log = tmp_path / "run.log"
    cli = run_logged(address, a_path, spec, log, "--deadline", "4")
    assert cli.wait(timeout=90) == 1, log.read_text()
    # its thread cannot be stopped: the worker retires (no nanny here: it exits 4)
    assert proc.wait(timeout=60) == 4, proc.text()
    assert "lockstep worker retiring: a task" in proc.text()


def test_a_model_whose_import_loops_is_the_only_one_blamed(
    tmp_path: Path, cluster: tuple[Path, str, list[Proc]]
) -> None:
    """Issue #26 item 5: the healthy target was blamed too (one probe for both)."""
    a_path, address, procs = cluster
    worker(tmp_path, address, a_path, "cold", "w-one", procs).wait_for("lockstep worker ready", 60)
    spec = copy_example(tmp_path)
    model = spec.parent / "bundle" / "sir" / "model.py"
    model.write_text(model.read_text() + "\nwhile True:\n    pass\n")
    done = subprocess.run(
        lockstep("run", str(spec), "--scheduler", address, "--import-timeout", "3"),
        env=base_env(a_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr[-3000:]
    assert "found 1 problem(s)" in done.stderr, done.stderr[-3000:]
    assert "model sir.model:simulate" in done.stderr and "did not finish within 3 s" in done.stderr
    assert "targets.incidence:incidence" not in done.stderr, done.stderr[-3000:]
