"""Mutual TLS (``LOCKSTEP_TLS_*``) with real processes and real certificates.

The test makes two CAs with the ``openssl`` CLI: the cluster's, which signs
one certificate that every process of the cluster uses, and a stranger's.
A lockstep scheduler, worker and runner on ``tls://`` work together; a
worker or client without the cluster's certificate, or with the stranger's,
cannot connect at all. Every process is ours and is stopped by its pid.
"""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lockstep.core.errors import BadInput, ServiceFailed
from lockstep.manifest import BuildManifest
from lockstep.runtime import connect, submit_task
from lockstep.runtime.config import tls_from_env
from tests.fixtures.procs import (
    Proc,
    base_env,
    lockstep,
    start_scheduler,
    start_worker,
    write_manifest,
)

OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"
T = "lockstep_test_tasks"


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run([OPENSSL, *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca(directory: Path, name: str) -> tuple[Path, Path]:
    key, crt = directory / f"{name}-ca.key", directory / f"{name}-ca.crt"
    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        str(key),
        "-out",
        str(crt),
        "-days",
        "2",
        "-subj",
        f"/CN={name} test CA",
        cwd=directory,
    )
    return key, crt


def make_cert(directory: Path, name: str, ca: tuple[Path, Path]) -> tuple[Path, Path]:
    key, csr, crt = (
        directory / f"{name}.key",
        directory / f"{name}.csr",
        directory / f"{name}.crt",
    )
    openssl(
        "req",
        "-new",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        str(key),
        "-out",
        str(csr),
        "-subj",
        f"/CN={name}",
        cwd=directory,
    )
    openssl(
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(ca[1]),
        "-CAkey",
        str(ca[0]),
        "-CAcreateserial",
        "-out",
        str(crt),
        "-days",
        "2",
        cwd=directory,
    )
    return crt, key


@dataclass
class Certs:
    ca: Path
    cert: Path
    key: Path
    other_ca: Path
    other_cert: Path
    other_key: Path

    def env(self, other: bool = False) -> dict[str, str]:
        if other:
            return {
                "LOCKSTEP_TLS_CA_FILE": str(self.other_ca),
                "LOCKSTEP_TLS_CERT": str(self.other_cert),
                "LOCKSTEP_TLS_KEY": str(self.other_key),
            }
        return {
            "LOCKSTEP_TLS_CA_FILE": str(self.ca),
            "LOCKSTEP_TLS_CERT": str(self.cert),
            "LOCKSTEP_TLS_KEY": str(self.key),
        }


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    directory = tmp_path_factory.mktemp("certs")
    cluster_ca = make_ca(directory, "cluster")
    cert, key = make_cert(directory, "lockstep", cluster_ca)
    stranger_ca = make_ca(directory, "stranger")
    other_cert, other_key = make_cert(directory, "stranger", stranger_ca)
    return Certs(cluster_ca[1], cert, key, stranger_ca[1], other_cert, other_key)


@dataclass
class Cluster:
    dir: Path
    address: str
    a_path: Path
    a: BuildManifest
    scheduler: Proc
    worker: Proc


@pytest.fixture(scope="module")
def cluster(certs: Certs, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    workdir = tmp_path_factory.mktemp("tls")
    a_path, a = write_manifest(workdir, "a")
    procs: list[Proc] = []
    try:
        scheduler, address = start_scheduler(workdir, a_path, env=certs.env())
        procs.append(scheduler)
        worker = start_worker(workdir, address, a_path, "direct", "w-tls", env=certs.env())
        procs.append(worker)
        worker.wait_for("lockstep worker ready", timeout=90)
        yield Cluster(workdir, address, a_path, a, scheduler, worker)
    finally:
        for proc in reversed(procs):
            proc.stop()


def test_scheduler_listens_on_tls_only(cluster: Cluster) -> None:
    assert cluster.address.startswith("tls://127.0.0.1:")
    assert (
        "admitting only workers and clients of this build over mutual TLS"
        in cluster.scheduler.text()
    )
    assert "LOCKSTEP_TLS_CA_FILE=" in cluster.worker.text()


def test_lockstep_runner_works_over_tls(
    cluster: Cluster, certs: Certs, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in certs.env().items():
        monkeypatch.setenv(name, value)
    client = connect(cluster.address, n_workers=1, timeout=60, manifest=cluster.a)
    try:
        result = submit_task(client, f"{T}:add", (2, 3)).result(timeout=60)
    finally:
        client.close()
    assert result["value"] == 5 and result["executor"] == "direct"
    assert result["worker"].startswith("tls://")
    cli = subprocess.run(
        lockstep("runner", cluster.address, "--timeout", "60"),
        env=base_env(cluster.a_path, extra=certs.env()),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cli.returncode == 0, cli.stderr
    assert cli.stdout.splitlines()[2].startswith("tls://127.0.0.1:")
    doctor = subprocess.run(
        lockstep("doctor", "--scheduler", cluster.address, "--json"),
        env=base_env(None, extra=certs.env()),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert doctor.returncode == 0, doctor.stderr
    assert [m["status"] for m in json.loads(doctor.stdout)["members"]] == ["ok", "ok"]


PLAIN_CLIENT = """
import sys
from distributed import Client
from distributed.security import Security
address, ca, cert, key = sys.argv[1:5]
security = Security(tls_ca_file=ca, tls_client_cert=cert, tls_client_key=key,
                    require_encryption=True) if ca else None
try:
    options = {"security": security} if security else {}
    client = Client(address, timeout=5, **options)
except BaseException as exc:
    print(f"refused: {type(exc).__name__}: {exc}")
    sys.exit(3)
print("connected")
client.close()
"""


def plain_client(address: str, ca: str = "", cert: str = "", key: str = "") -> str:
    """A plain ``distributed.Client`` in a process of its own (a failed Client leaves Dask's
    event loop state behind in the process that made it): its one line of outcome."""
    proc = subprocess.run(
        [sys.executable, "-c", PLAIN_CLIENT, address, ca, cert, key],
        env=base_env(None),
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = proc.stdout.strip().splitlines()
    assert out, proc.stderr[-2000:]
    assert (proc.returncode == 0) == (out[-1] == "connected"), proc.stderr[-2000:]
    return out[-1]


def test_a_plain_client_without_the_certificate_cannot_connect(
    cluster: Cluster, certs: Certs
) -> None:
    assert plain_client(cluster.address).startswith("refused: ")
    # Trusting the cluster's CA but presenting no certificate: the scheduler ends the
    # handshake (Dask itself will not even build such a client, so this is raw TLS).
    host, port = cluster.address.removeprefix("tls://").rsplit(":", 1)
    context = ssl.create_default_context(cafile=str(certs.ca))
    context.check_hostname = False
    with socket.create_connection((host, int(port)), timeout=30) as raw:
        with pytest.raises((ssl.SSLError, ConnectionError)) as err, context.wrap_socket(raw) as tls:
            if tls.recv(1) == b"":
                raise ConnectionError("closed by the scheduler")
        assert "certificate required" in str(err.value) or "closed" in str(err.value)
    # A certificate of another CA, and plain TCP to the TLS port: both refused.
    stranger = plain_client(
        cluster.address, str(certs.ca), str(certs.other_cert), str(certs.other_key)
    )
    assert stranger.startswith("refused: ")
    assert plain_client(cluster.address.replace("tls://", "tcp://")).startswith("refused: ")
    # The same client with the cluster's own certificate does connect: the refusals are TLS's.
    assert plain_client(cluster.address, str(certs.ca), str(certs.cert), str(certs.key)) == (
        "connected"
    )


def test_lockstep_client_with_another_ca_or_a_tcp_address_fails_clearly(
    cluster: Cluster, certs: Certs, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in certs.env(other=True).items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ServiceFailed, match=r"this client refused the scheduler's certificate"):
        connect(cluster.address, n_workers=1, timeout=5, manifest=cluster.a)
    for name, value in certs.env().items():
        monkeypatch.setenv(name, value)
    tcp = cluster.address.replace("tls://", "tcp://")
    with pytest.raises(BadInput, match="write it like tls://host:8786"):
        connect(tcp, n_workers=1, timeout=5, manifest=cluster.a)


@pytest.mark.parametrize("credentials", ["none", "stranger"])
def test_a_worker_without_the_clusters_certificate_cannot_join(
    cluster: Cluster, certs: Certs, credentials: str
) -> None:
    env = {} if credentials == "none" else certs.env(other=True)
    worker = start_worker(
        cluster.dir,
        cluster.address,
        cluster.a_path,
        "direct",
        f"w-{credentials}",
        env=env,
        extra_args=["--death-timeout", "15"],
    )
    try:
        code = worker.wait(120)
    finally:
        worker.stop()
    assert code != 0
    assert "lockstep worker ready" not in worker.text()
    client_env = certs.env()
    doctor = subprocess.run(
        lockstep("doctor", "--scheduler", cluster.address, "--json"),
        env=base_env(None, extra=client_env),
        capture_output=True,
        text=True,
        timeout=120,
    )
    members = json.loads(doctor.stdout)["members"]
    assert [m["role"] for m in members] == ["scheduler", "worker"]  # only the one with the cert


# --- the settings ------------------------------------------------------------------------------


def test_tls_settings_all_or_none_readable_and_pem(certs: Certs, tmp_path: Path) -> None:
    assert tls_from_env({}) is None
    found = tls_from_env(certs.env())
    assert found is not None and found.ca_file == certs.ca
    partial = {"LOCKSTEP_TLS_CERT": str(certs.cert)}
    with pytest.raises(
        BadInput,
        match="needs all of LOCKSTEP_TLS_CA_FILE, LOCKSTEP_TLS_CERT, "
        "LOCKSTEP_TLS_KEY or none; LOCKSTEP_TLS_CA_FILE, "
        "LOCKSTEP_TLS_KEY are unset or empty",
    ):
        tls_from_env(partial)
    with pytest.raises(BadInput, match="LOCKSTEP_TLS_KEY is unset or empty"):
        tls_from_env({**certs.env(), "LOCKSTEP_TLS_KEY": ""})
    missing = tmp_path / "absent.key"
    with pytest.raises(BadInput, match=f"LOCKSTEP_TLS_KEY={missing}: cannot read it"):
        tls_from_env({**certs.env(), "LOCKSTEP_TLS_KEY": str(missing)})
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(BadInput, match=r"LOCKSTEP_TLS_CA_FILE=.*not a PEM CA certificate"):
        tls_from_env({**certs.env(), "LOCKSTEP_TLS_CA_FILE": str(junk)})
    with pytest.raises(BadInput, match="not a PEM certificate and its private key"):
        tls_from_env({**certs.env(), "LOCKSTEP_TLS_KEY": str(certs.other_key)})


def test_bad_tls_settings_stop_each_process_with_one_line(cluster: Cluster, certs: Certs) -> None:
    partial = {"LOCKSTEP_TLS_CA_FILE": str(certs.ca)}
    commands: list[tuple[Any, ...]] = [
        ("scheduler", "--port", "0"),
        ("worker", cluster.address),
        ("runner", cluster.address),
        ("doctor", "--scheduler", cluster.address),
    ]
    for command in commands:
        cli = subprocess.run(
            lockstep(*command),
            env=base_env(cluster.a_path, "direct", extra=partial),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert cli.returncode == 2, (command, cli.stderr)
        last = cli.stderr.strip().splitlines()[-1]
        assert last.startswith("lockstep: error: mutual TLS needs all of"), (command, last)
    worker = subprocess.run(
        lockstep("worker", cluster.address.replace("tls://", "tcp://")),
        env=base_env(cluster.a_path, "direct", extra=certs.env()),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert worker.returncode == 2
    assert "write the scheduler address like tls://host:8786" in worker.stderr
