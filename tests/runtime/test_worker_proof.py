"""Issue #26 item 2: a worker's own port does nothing for a caller without the handshake's
proof, and no process listens beyond loopback without TLS unless told ``--insecure``.

Real ``lockstep scheduler``/``worker`` processes (the module's cluster: one worker per
executor on 127.0.0.1). A caller that talks to a worker directly, not through the
scheduler, tries to store a bundle, have it imported, make an environment and stop the
worker; every attempt must be refused with one line, leave nothing behind, and leave the
worker serving. The runner's own path (through the scheduler, with a hello) still works.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from lockstep.bundles.protocol import Op
from lockstep.bundles.store import to_wire
from lockstep.core.digests import TreeFile, tree_digest
from lockstep.runtime.cluster import with_token
from lockstep.runtime.identity import IDENTITY_OP
from tests.fixtures.cluster import Cluster, ClusterOptions
from tests.fixtures.procs import base_env, lockstep, scheduler_args, start_worker

CLUSTER = ClusterOptions(executors=("isolated_warm",))
PUT_OP, CHECK_OP, HAS_OP = Op.PUT.value, Op.CHECK.value, Op.HAS.value
WHEEL_PUT_OP, ENV_MAKE_OP, PULL_OP = Op.WHEEL_PUT.value, Op.ENV_MAKE.value, Op.PULL.value


def send(address: str, op: str, **msg: Any) -> Any:
    """``op`` straight to ``address`` over a fresh connection (no scheduler between)."""
    from distributed.comm import connect
    from distributed.core import send_recv

    async def go() -> Any:
        comm = await connect(address)
        try:
            return await send_recv(comm, op=op, **msg)
        finally:
            await comm.close()

    return asyncio.run(go())


def evil_bundle(marker: Path) -> tuple[str, list[TreeFile]]:
    files = [TreeFile("evil.py", False, f"open({str(marker)!r}, 'w').close()\n".encode())]
    return tree_digest(files), files


def test_lockstep_ops_on_a_workers_own_port_need_the_proof(
    cluster: Cluster, tmp_path: Path
) -> None:
    worker = cluster.addresses["isolated_warm"]
    marker = tmp_path / "ran"
    digest, files = evil_bundle(marker)
    attempts: list[tuple[str, dict[str, Any]]] = [
        (PUT_OP, {"digest": digest, "files": to_wire(files)}),
        (CHECK_OP, {"digest": digest, "checks": [{"role": "model", "ref": "evil:x", "args": []}]}),
        (WHEEL_PUT_OP, {"digest": "sha256:" + "1" * 64, "data": b"PK"}),
        (ENV_MAKE_OP, {"digest": digest}),
        (PULL_OP, {"reference": "127.0.0.1:1/evil@sha256:" + "2" * 64}),
        # the caller's own guess at the proof, and the runner's hello token, are no proof
        (PUT_OP, {"digest": digest, "files": to_wire(files), "lockstep_proof": "0" * 32}),
    ]
    for op, msg in attempts:
        with pytest.raises(PermissionError, match=f"lockstep worker {worker} refused {op} from"):
            send(worker, op, **msg)
    assert not marker.exists()
    assert send(worker, HAS_OP, digest=digest)["cached"] is False
    assert not any(cluster.caches["isolated_warm"].rglob("evil.py"))
    # read-only identity stays open (the doctor and connect() read it)
    assert send(worker, IDENTITY_OP)["executor"] == "isolated_warm"


def test_terminate_on_a_workers_own_port_is_refused(cluster: Cluster) -> None:
    worker = cluster.addresses["isolated_warm"]
    with pytest.raises(PermissionError, match=f"lockstep worker {worker} refused terminate from"):
        send(worker, "terminate")
    assert cluster.workers["isolated_warm"].popen.poll() is None
    assert cluster.on("isolated_warm", "add", 2, 3)["value"] == 5


def test_the_runner_still_ships_through_the_scheduler(cluster: Cluster, tmp_path: Path) -> None:
    files = [TreeFile("fine.py", False, b"X = 1\n")]
    digest = tree_digest(files)
    msg = with_token(cluster.client, {"op": PUT_OP, "digest": digest, "files": to_wire(files)})
    (answer,) = cluster.client.sync(cluster.client.scheduler.broadcast, msg=msg).values()
    assert answer["ok"], answer
    stored = cluster.client.sync(
        cluster.client.scheduler.broadcast, msg={"op": HAS_OP, "digest": digest}
    )
    assert [a["cached"] for a in stored.values()] == [True]


# --- protected mode: beyond loopback only with TLS or --insecure ---------------------------


def run(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(lockstep(*args), env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_a_scheduler_beyond_loopback_without_tls_refuses_to_start(
    cluster: Cluster, tmp_path: Path, host: str
) -> None:
    args = scheduler_args(tmp_path / "s.json")
    args[args.index("127.0.0.1")] = host
    done = run("scheduler", *args, env=base_env(cluster.a_path))
    assert done.returncode == 2, done.stderr
    (line,) = [x for x in done.stderr.splitlines() if x.startswith("lockstep: error:")]
    assert "without TLS" in line and "--insecure" in line and "LOCKSTEP_TLS_CA_FILE" in line
    assert not (tmp_path / "s.json").exists()


def test_a_worker_beyond_loopback_without_tls_refuses_to_start(
    cluster: Cluster, tmp_path: Path
) -> None:
    # no --host: Dask listens on an outside interface
    done = run(
        "worker", cluster.address, "--no-nanny", "--nthreads", "1",
        env=base_env(cluster.a_path, "isolated_warm"),
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    (line,) = [x for x in done.stderr.splitlines() if x.startswith("lockstep: error:")]
    assert "lockstep worker" in line and "without TLS" in line and "--insecure" in line


def test_insecure_is_a_choice_named_in_the_warning(cluster: Cluster, tmp_path: Path) -> None:
    proc = start_worker(
        tmp_path, cluster.address, cluster.a_path, "isolated_warm", "w-open",
        extra_args=["--host", "0.0.0.0", "--insecure"],
        env={"LOCKSTEP_BUNDLE_DIR": str(tmp_path / "cache")},
    )  # fmt: skip
    try:
        proc.wait_for("lockstep worker ready", 60)
        assert "--insecure" in proc.text() and "WARNING" in proc.text()
    finally:
        proc.stop()
    assert sys.executable  # the worker ran under this interpreter
