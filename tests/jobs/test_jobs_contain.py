"""``lockstep run`` never hangs: task timeouts, hostile models, lost workers, run deadlines.

Real ``lockstep scheduler``/``worker`` processes on 127.0.0.1, a private cluster per
test (so killing a worker touches nothing else), every process stopped by its pid.
Outcomes only: exit codes, the one error line, what was (not) written.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lockstep.core.entrypoints import registered
from lockstep.jobs.spec import read_spec
from tests.fixtures.procs import (
    Proc,
    base_env,
    lockstep,
    start_scheduler,
    start_worker,
    write_manifest,
)
from tests.jobs.test_jobs_units import copy_example, edit_spec
from tests.runtime.test_containment import pids_in, wait_gone

HOOK = "    rng = random.Random(seed)\n"


def sabotage(spec: Path, code: str, **keys: str) -> Path:
    """Insert ``code`` (may use params, seed) at the top of the example model's body."""
    model = spec.parent / "bundle" / "sir" / "model.py"
    body = "".join(f"    {line}\n" for line in code.splitlines())
    model.write_text(model.read_text().replace(HOOK, HOOK + body))
    return edit_spec(spec, **keys) if keys else spec


def add_keys(spec: Path, **keys: str) -> Path:
    text = spec.read_text()
    head, _, rest = text.partition("[[params]]")
    spec.write_text(head + "".join(f"{k} = {v}\n" for k, v in keys.items()) + "\n[[params]]" + rest)
    return spec


def run_cli(
    address: str, manifest: Path, spec: Path, *args: str, out: Path | None = None
) -> subprocess.Popen[str]:
    extra = ["--out", str(out)] if out else []
    return subprocess.Popen(
        lockstep("run", str(spec), "--scheduler", address, *extra, *args),
        env=base_env(manifest),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("lockstep: error:")]
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[Path, str, list[Proc]]]:
    a_path, _ = write_manifest(tmp_path, "a")
    scheduler, address = start_scheduler(tmp_path, a_path)
    procs = [scheduler]
    yield a_path, address, procs
    for proc in reversed(procs):
        proc.stop()


def worker(
    tmp_path: Path,
    address: str,
    a_path: Path,
    executor: str,
    name: str,
    procs: list[Proc],
    **kwargs: object,
) -> Proc:
    proc = start_worker(
        tmp_path,
        address,
        a_path,
        executor,
        name,
        env={"LOCKSTEP_BUNDLE_DIR": str(tmp_path / f"cache-{name}")},
        **kwargs,
    )  # type: ignore[arg-type]
    procs.append(proc)
    return proc


# --- the spec keys ------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["true", "-1", "0", "nan", "inf", '"30"', "1e9", "[3]"])
def test_bad_timeouts_are_refused_by_preflight(tmp_path: Path, value: str) -> None:
    spec = add_keys(copy_example(tmp_path), task_timeout=value, run_deadline=value)
    fields, problems = read_spec(spec, registered())
    assert [p.name for p in problems] == ["task_timeout", "run_deadline"], problems
    assert (
        "must be the number of seconds one task may run: a number > 0 and at most 1e+07"
        in problems[0].message
    )
    assert "task_timeout" not in fields


def test_good_timeouts_are_read(tmp_path: Path) -> None:
    spec = add_keys(copy_example(tmp_path), task_timeout="2.5", run_deadline="600")
    fields, problems = read_spec(spec, registered())
    assert problems == [] and (fields["task_timeout"], fields["run_deadline"]) == (2.5, 600.0)


# --- a failing task fails the run in one line ------------------------------------------------


@pytest.mark.parametrize(
    "executor, code, cause",
    [
        (
            "cold",
            "if seed == 3 and params['name'] == 'distancing':\n    while True: pass",
            "TaskTimedOut: did not finish within its timeout of 2 s; its process group was killed",
        ),
        (
            "isolated_warm",
            "if seed == 3 and params['name'] == 'distancing':\n    import os; os._exit(9)",
            "TaskCrashed: warm process",
        ),
        (
            "direct",
            "if seed == 3 and params['name'] == 'distancing':\n    raise SystemExit(3)",
            "SystemExit: 3",
        ),
    ],
)
def test_failing_simulation_fails_the_run_in_one_line(
    tmp_path: Path, cluster: tuple[Path, str, list[Proc]], executor: str, code: str, cause: str
) -> None:
    """Not the containment itself (tests/runtime/test_containment*.py): what ``lockstep run``
    makes of each executor's kind of failure, its one line, and that nothing is written."""
    a_path, address, procs = cluster
    proc = worker(tmp_path, address, a_path, executor, f"w-{executor}", procs)
    proc.wait_for("lockstep worker ready", 60)
    spec = add_keys(
        sabotage(copy_example(tmp_path), code, executor=f'"{executor}"'), task_timeout="2"
    )
    out = tmp_path / "result.json"
    cli = run_cli(address, a_path, spec, out=out)
    _, stderr = cli.communicate(timeout=180)
    assert cli.returncode == 1, stderr
    line = error_line(stderr)
    assert line.startswith(
        f"lockstep: error: simulation params[1] seed 3 (sir.model:simulate) failed: {cause}"
    ), line
    assert " on worker tcp://127.0.0.1:" in line and line.endswith("; run it again to resume")
    assert f" of 8 simulation(s) are stored in {spec.parent / 'job.results'};" in line
    assert f"{executor} process " in line
    assert not out.exists()
    assert proc.popen.poll() is None  # the worker survived, and serves the next run
    good = edit_spec(copy_example(tmp_path / "good"), executor=f'"{executor}"')
    again = run_cli(address, a_path, good, out=out)
    _, stderr = again.communicate(timeout=180)
    assert again.returncode == 0, stderr
    assert out.exists()


# --- lost workers and deadlines ----------------------------------------------------------


def _kill_mid_run(
    tmp_path: Path, target: Proc, victim: int, cli: subprocess.Popen[str], marker: Path
) -> None:
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert time.monotonic() < deadline and cli.poll() is None, "no simulation started"
        time.sleep(0.05)
    os.kill(victim, signal.SIGKILL)


def test_run_moves_to_the_worker_a_nanny_restarted(
    tmp_path: Path, cluster: tuple[Path, str, list[Proc]]
) -> None:
    a_path, address, procs = cluster
    proc = worker(tmp_path, address, a_path, "cold", "w-nanny", procs, nanny=True)
    first = int(proc.wait_for(r"lockstep worker ready: .* pid (\d+)", 90).group(1))
    marker = tmp_path / "started"
    spec = sabotage(
        copy_example(tmp_path),
        f"import pathlib, time\npathlib.Path({str(marker)!r}).touch()\ntime.sleep(1)",
    )
    out = tmp_path / "result.json"
    cli = run_cli(address, a_path, spec, out=out)
    _kill_mid_run(tmp_path, proc, first, cli, marker)
    _, stderr = cli.communicate(timeout=240)
    assert cli.returncode == 0, stderr
    assert "gone; sending" in stderr and "unfinished task(s) to tcp://127.0.0.1:" in stderr
    assert out.exists()


def test_run_fails_in_bounded_time_when_no_worker_is_left(
    tmp_path: Path, cluster: tuple[Path, str, list[Proc]]
) -> None:
    a_path, address, procs = cluster
    proc = worker(tmp_path, address, a_path, "cold", "w-alone", procs)
    proc.wait_for("lockstep worker ready", 60)
    marker, child = tmp_path / "started", tmp_path / "child.pid"
    spec = sabotage(
        copy_example(tmp_path),
        f"import os, pathlib, time\npathlib.Path({str(child)!r}).write_text("
        f"str(os.getpid()))\npathlib.Path({str(marker)!r}).touch()\ntime.sleep(60)",
    )
    out = tmp_path / "result.json"
    cli = run_cli(address, a_path, spec, "--timeout", "3", out=out)
    _kill_mid_run(tmp_path, proc, proc.pid, cli, marker)
    _, stderr = cli.communicate(timeout=120)
    assert cli.returncode == 3, stderr
    line = error_line(stderr)
    assert line.startswith("lockstep: error: no worker running executor cold of build sha256:")
    assert "waited 3 s (--timeout) for one" in line and line.endswith("run it again to resume")
    assert not out.exists()
    assert wait_gone(pids_in(child)) == set()  # the SIGKILLed worker's task went with it


def test_run_deadline(tmp_path: Path, cluster: tuple[Path, str, list[Proc]]) -> None:
    a_path, address, procs = cluster
    proc = worker(tmp_path, address, a_path, "isolated_warm", "w-slow", procs)
    proc.wait_for("lockstep worker ready", 60)
    spec = sabotage(
        copy_example(tmp_path),
        "if seed == 2:\n    import time; time.sleep(600)",
        executor='"isolated_warm"',
    )
    add_keys(spec, task_timeout="900", run_deadline="3")
    out = tmp_path / "result.json"
    cli = run_cli(address, a_path, spec, out=out)
    _, stderr = cli.communicate(timeout=120)
    assert cli.returncode == 1, stderr
    line = error_line(stderr)
    assert line.startswith("lockstep: error: run deadline of 3 s passed with ")
    assert "not done: simulation params[0] seed 2 (sir.model:simulate)" in line
    assert not out.exists()
    # --deadline wins over the spec's
    cli = run_cli(address, a_path, spec, "--deadline", "1.5", out=out)
    _, stderr = cli.communicate(timeout=120)
    assert cli.returncode == 1 and "run deadline of 1.5 s passed" in error_line(stderr)
    bad = run_cli(address, a_path, spec, "--deadline", "nan")
    _, stderr = bad.communicate(timeout=60)
    assert bad.returncode == 2 and "--deadline 'nan': not a number of seconds > 0" in stderr
