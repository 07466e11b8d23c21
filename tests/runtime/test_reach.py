"""Issue #27 item 5: every command given an address that is no Dask scheduler ends within
its timeout, naming the address and what is there (``lockstep.runtime.reach``).

Real processes: the CLI in a subprocess, an HTTP server this test starts on 127.0.0.1,
a port nothing listens on, Dask's own scheduler (plain TCP) and ``lockstep scheduler``
over mutual TLS. Before, an HTTP port held ``doctor``/``runner``/``run`` for ever (Dask
reads the peer's greeting without a bound) and a worker said only "Nanny failed to
start" after 30 s.
"""

from __future__ import annotations

import http.server
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.procs import (
    base_env,
    lockstep,
    start_plain_scheduler,
    start_scheduler,
    write_manifest,
)
from tests.fixtures.registry import free_port
from tests.jobs.test_jobs_units import copy_example
from tests.runtime.test_tls import Certs, certs

__all__ = ["certs"]  # test_tls's fixture: a cluster CA, a stranger CA, a certificate of each

TIMEOUT = "5"
LOOPBACK = ("--host", "127.0.0.1")  # a worker without TLS listens on loopback (protected mode)


@pytest.fixture(scope="module")
def http_address() -> Iterator[str]:
    """An HTTP server on 127.0.0.1 (like Dask's dashboard port): ``tcp://127.0.0.1:PORT``."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"tcp://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def commands(address: str, spec: Path, answered: bool) -> dict[str, list[str]]:
    """Every command that is given a scheduler's address, with a 5 s bound; if something
    ``answered`` there, also a worker without nanny or death timeout (which otherwise waits
    for its scheduler as Dask does, alive and not ready)."""
    found = {
        "doctor": ["doctor", "--scheduler", address, "--timeout", TIMEOUT],
        "runner": ["runner", address, "--timeout", TIMEOUT],
        "preflight": ["preflight", str(spec), "--scheduler", address, "--timeout", TIMEOUT],
        "run": ["run", str(spec), "--scheduler", address, "--timeout", TIMEOUT],
        "worker": ["worker", address, *LOOPBACK, "--no-nanny", "--death-timeout", TIMEOUT],
        "worker, nanny": ["worker", address, *LOOPBACK, "--nanny", "--death-timeout", TIMEOUT],
    }
    if answered:
        found["worker without a bound"] = ["worker", address, *LOOPBACK, "--no-nanny"]
    return found


def error_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [x for x in proc.stderr.splitlines() if x.startswith("lockstep: error:")]
    assert len(lines) == 1, proc.stderr[-3000:]
    return lines[0]


def run_all(
    address: str, tmp_path: Path, env: dict[str, str] | None = None, answered: bool = True
) -> dict[str, tuple[int, str]]:
    manifest, _ = write_manifest(tmp_path, "a")
    spec = copy_example(tmp_path)
    found = {}
    for name, args in commands(address, spec, answered).items():
        proc = subprocess.run(
            lockstep(*args),
            env=base_env(manifest, "direct", env),
            capture_output=True,
            text=True,
            timeout=120,  # a guard against the hang this test is about, not a speed check
        )
        error_line(proc)  # one error line (preflight lists its problems after it)
        found[name] = (proc.returncode, proc.stderr)
    return found


def test_an_http_port_is_named_by_every_command(http_address: str, tmp_path: Path) -> None:
    for name, (code, line) in run_all(http_address, tmp_path).items():
        assert code == 3, (name, line)
        assert f"scheduler {http_address}: an HTTP server answers there" in line, (name, line)
        assert "'HTTP/1.0 200 OK'" in line, (name, line)


def test_a_port_nothing_listens_on_is_named_by_every_command(tmp_path: Path) -> None:
    address = f"tcp://127.0.0.1:{free_port()}"
    for name, (code, line) in run_all(address, tmp_path, answered=False).items():
        assert code == 3, (name, line)
        assert f"scheduler {address} unreachable after {TIMEOUT} s: nothing listens there " in (
            line
        ), (name, line)


def test_a_tls_scheduler_given_as_tcp_is_named(certs: Certs, tmp_path: Path) -> None:
    manifest, _ = write_manifest(tmp_path, "a")
    scheduler, address = start_scheduler(tmp_path, manifest, env=certs.env())
    try:
        plain = address.replace("tls://", "tcp://")
        for name, (code, line) in run_all(plain, tmp_path).items():
            assert code == 3, (name, line)
            assert f"scheduler {plain}: a TLS server answers there: write tls://" in line, (
                name,
                line,
            )
    finally:
        scheduler.stop()


def test_a_plain_scheduler_given_as_tls_is_named(certs: Certs, tmp_path: Path) -> None:
    scheduler, address = start_plain_scheduler(tmp_path)
    try:
        tls = address.replace("tcp://", "tls://")
        for name, (code, line) in run_all(tls, tmp_path, certs.env()).items():
            assert code == 3, (name, line)
            assert f"scheduler {tls}: a Dask scheduler without TLS answers there" in line, (
                name,
                line,
            )
    finally:
        scheduler.stop()


def test_a_worker_with_its_defaults_says_why_it_found_no_scheduler(tmp_path: Path) -> None:
    """The issue's case: ``lockstep worker tcp://127.0.0.1:1`` (a nanny, no death timeout)
    was silent for 30 s, then said "Nanny failed to start" and nothing else."""
    manifest, _ = write_manifest(tmp_path, "a")
    address = f"tcp://127.0.0.1:{free_port()}"
    proc = subprocess.run(
        lockstep("worker", address, *LOOPBACK),
        env=base_env(manifest, "direct"),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert f"scheduler {address} unreachable after 30 s: nothing listens there " in error_line(proc)
