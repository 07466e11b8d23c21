"""Kubernetes probes and the ports a scheduler or worker opens, with real processes over
mutual TLS (openssl-made certificates, as in test_tls.py).

The probe is the exact command the deployment files run (``health.probe_command``):
readiness means admitted by the scheduler of its own build (a worker) or serving its gate
(the scheduler); liveness means the event loop answers. Nothing on the scheduler or a
worker answers a client without the cluster's certificate: Dask's HTTP server (dashboard,
``/health``, ``/info``) is closed, and the comm ports speak TLS only.
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from lockstep.core import health_probe as health
from tests.fixtures.procs import (
    Proc,
    base_env,
    lockstep,
    scheduler_address,
    start_scheduler,
    start_worker,
    write_manifest,
)
from tests.runtime.test_tls import Certs, certs  # noqa: F401  (the module's CA fixture)


def probe(socket_path: Path, question: str) -> subprocess.CompletedProcess[str]:
    env = {"LOCKSTEP_HEALTH_SOCKET": str(socket_path), "PATH": os.environ.get("PATH", "")}
    return subprocess.run(
        health.probe_command(question),
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@dataclass
class Running:
    dir: Path
    address: str
    scheduler: Proc
    worker: Proc
    stray: Proc  # a worker whose scheduler never answers: never admitted


@pytest.fixture(scope="module")
def running(certs: Certs, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:  # noqa: F811
    workdir = tmp_path_factory.mktemp("probes")
    manifest, _ = write_manifest(workdir, "a")
    procs: list[Proc] = []

    def env(name: str) -> dict[str, str]:
        return {**certs.env(), "LOCKSTEP_HEALTH_SOCKET": str(workdir / f"{name}.sock")}

    try:
        scheduler, address = start_scheduler(workdir, manifest, env=env("scheduler"))
        procs.append(scheduler)
        worker = start_worker(
            workdir, address, manifest, "isolated_warm", "w", nanny=True, env=env("w")
        )
        procs.append(worker)
        with socket.socket() as unused:  # a port nobody listens on
            unused.bind(("127.0.0.1", 0))
            nowhere = f"tls://127.0.0.1:{unused.getsockname()[1]}"
        stray = start_worker(workdir, nowhere, manifest, "direct", "stray", env=env("stray"))
        procs.append(stray)
        worker.wait_for("lockstep worker ready", timeout=120)
        stray.wait_for("lockstep probes: answering", timeout=120)
        yield Running(workdir, address, scheduler, worker, stray)
    finally:
        for proc in reversed(procs):
            proc.stop()


def test_the_probes_answer_from_the_event_loop(running: Running) -> None:
    for name in ("scheduler", "w"):
        path = running.dir / f"{name}.sock"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600  # only the process's user
        for question in ("live", "ready"):
            answer = probe(path, question)
            assert (answer.returncode, answer.stdout) == (0, "ok\n"), (name, answer)
    # Running but never admitted: alive, not ready.
    stray = running.dir / "stray.sock"
    assert probe(stray, "live").returncode == 0
    answer = probe(stray, "ready")
    assert answer.returncode == 1
    assert answer.stdout.startswith("no not admitted by the scheduler")


def test_a_stopped_event_loop_fails_its_liveness_probe(running: Running) -> None:
    pid = running.stray.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        answer = probe(running.dir / "stray.sock", "live")
    finally:
        os.kill(pid, signal.SIGCONT)
    assert answer.returncode != 0 and "timed out" in answer.stderr
    assert probe(running.dir / "stray.sock", "live").returncode == 0


def listeners(pid: int) -> list[tuple[int, str, int]]:
    """``(pid, host, port)`` of every listening TCP socket of ``pid`` and its children."""
    root = psutil.Process(pid)
    found = []
    for proc in [root, *root.children(recursive=True)]:
        for conn in proc.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN:
                found.append((proc.pid, conn.laddr.ip, conn.laddr.port))
    return found


def answers_without_a_certificate(host: str, port: int) -> list[str]:
    """What a client without a certificate gets from ``host:port``: a TLS handshake (no
    client certificate) and a plain HTTP request; the answers it got, if any."""
    got = []
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection((host, port), timeout=10) as raw:
        try:
            with context.wrap_socket(raw) as tls:
                tls.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                data = tls.recv(1024)
                if data:
                    got.append(f"tls: {data[:60]!r}")
        except (ssl.SSLError, OSError):
            pass  # refused: the server wants a certificate
    with socket.create_connection((host, port), timeout=10) as raw:
        raw.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            data = raw.recv(1024)
        except OSError:
            data = b""
        if data.startswith(b"HTTP/") or b"ok" in data:
            got.append(f"http: {data[:60]!r}")
    return got


def test_nothing_answers_a_client_without_a_certificate(running: Running) -> None:
    scheduler = listeners(running.scheduler.pid)
    port = int(running.address.rsplit(":", 1)[1])
    assert [(host, p) for _, host, p in scheduler] == [("127.0.0.1", port)]  # no :8787
    workers = listeners(running.worker.pid)
    assert len(workers) == 2  # the nanny's port and the worker's: no HTTP server
    for _, host, p in scheduler + workers:
        assert answers_without_a_certificate(host, p) == [], (host, p)
    assert "Dask's HTTP server is closed" in running.scheduler.text()


def test_the_dashboard_is_opt_in(certs: Certs, tmp_path: Path) -> None:  # noqa: F811
    manifest, _ = write_manifest(tmp_path, "a")
    sched_file = tmp_path / "s.json"
    proc = Proc(
        lockstep(
            *("scheduler", "--host", "127.0.0.1", "--port", "0"),
            *("--scheduler-file", str(sched_file), "--dashboard-address", "127.0.0.1:0"),
        ),
        base_env(manifest, extra=certs.env()),
        tmp_path / "s.log",
    )
    try:
        proc.wait_for("lockstep scheduler ready", timeout=60)
        address = scheduler_address(sched_file, proc)
        port = int(address.rsplit(":", 1)[1])
        http = [p for _, _, p in listeners(proc.pid) if p != port]
        assert len(http) == 1  # asked for: Dask's HTTP server stays, and the log says so
        assert "Dask's dashboard is on as asked (--dashboard-address" in proc.text()
        assert answers_without_a_certificate("127.0.0.1", http[0]) != []
    finally:
        proc.stop()
