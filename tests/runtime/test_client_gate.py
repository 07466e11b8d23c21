"""The client gate with real processes: what a plain ``distributed.Client`` may not do.

One module-scoped cluster of build "a": a ``lockstep scheduler`` and one
``lockstep worker`` under a nanny running ``isolated_warm``. A plain Client
(no handshake) and adversarial raw messages try to submit, run functions and
register plugins; every attempt must fail with the gate's message, leave no
marker file, and leave the worker as configured. Every process is ours and is
stopped by its pid.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from distributed import Client
from distributed.protocol.pickle import dumps

from lockstep.bundles.protocol import Op
from lockstep.manifest import BuildManifest
from lockstep.runtime import IncompatibleClusterError, connect, submit_task
from lockstep.runtime.dask_handlers import KNOWN_RPC_OPS, check_hooks
from lockstep.runtime.doctor import REFUSED_CLIENT
from lockstep.runtime.identity import IDENTITY_OP, Refusal
from tests.fixtures.procs import (
    Proc,
    base_env,
    lockstep,
    start_scheduler,
    start_worker,
    write_manifest,
)
from tests.runtime.gate_plugins import NannyMarker, SchedulerMarker, SwapExecutor

T = "lockstep_test_tasks"
NOT_HANDSHAKEN = "has not completed the lockstep handshake with this scheduler"


@dataclass
class Cluster:
    dir: Path
    address: str
    a: BuildManifest
    b: BuildManifest
    scheduler: Proc
    worker: Proc
    runner: Any  # a lockstep connect() client: admitted

    def identity(self) -> dict[str, Any]:
        return dict(self.runner.sync(self.runner.scheduler.lockstep_identity))

    def worker_identity(self) -> dict[str, Any]:
        answers = self.runner.sync(self.runner.scheduler.broadcast, msg={"op": IDENTITY_OP})
        (answer,) = answers.values()
        return dict(answer)

    def marker(self, name: str) -> Path:
        path = self.dir / f"marker-{name}"
        assert not path.exists()
        return path


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    workdir = tmp_path_factory.mktemp("gate")
    a_path, a = write_manifest(workdir, "a")
    _, b = write_manifest(workdir, "b", version="0.0.9")
    procs: list[Proc] = []
    runner = None
    try:
        scheduler, address = start_scheduler(workdir, a_path)
        procs.append(scheduler)
        worker = start_worker(workdir, address, a_path, "isolated_warm", "w-warm", nanny=True)
        procs.append(worker)
        worker.wait_for("lockstep worker ready", timeout=90)
        runner = connect(address, n_workers=1, timeout=60, manifest=a)
        yield Cluster(workdir, address, a, b, scheduler, worker, runner)
    finally:
        if runner is not None:
            runner.close()
        for proc in reversed(procs):
            proc.stop()


@pytest.fixture
def plain(cluster: Cluster) -> Iterator[Any]:
    """A plain ``distributed.Client`` that never said hello."""
    client = Client(cluster.address, timeout=30)  # type: ignore[no-untyped-call]
    try:
        yield client
    finally:
        client.close()


def refusals(cluster: Cluster, client_id: str) -> list[dict[str, Any]]:
    return [r for r in cluster.identity()["refused_clients"] if r["client"] == client_id]


def test_plain_client_cannot_submit(cluster: Cluster, plain: Any) -> None:
    marker = cluster.marker("submit")
    future = plain.submit(__import__(T).touch, str(marker), pure=False)
    with pytest.raises(PermissionError) as err:
        future.result(timeout=60)
    text = str(err.value)
    assert text.startswith(
        f"lockstep refused task submission (update-graph) from client "
        f"{plain.id} at tcp://127.0.0.1:"
    )
    assert NOT_HANDSHAKEN in text and cluster.a.build_id in text
    assert "lockstep.runtime.connect()" in text
    # submit_task (run_task by reference) is refused the same way.
    with pytest.raises(PermissionError, match=NOT_HANDSHAKEN):
        submit_task(plain, f"{T}:add", (1, 2)).result(timeout=60)
    assert not marker.exists()
    assert [r["op"] for r in refusals(cluster, plain.id)] == ["update-graph"] * 2


def test_plain_client_cannot_run_functions(cluster: Cluster, plain: Any) -> None:
    touch = __import__(T).touch
    on_workers, on_scheduler = cluster.marker("run"), cluster.marker("run-on-scheduler")
    with pytest.raises(PermissionError, match=r"lockstep refused broadcast of run \(Client.run\)"):
        plain.run(touch, str(on_workers))
    with pytest.raises(PermissionError, match="lockstep refused broadcast of run"):
        plain.run(touch, str(on_workers), nanny=True)
    with pytest.raises(PermissionError, match="lockstep refused run_function from tcp://") as err:
        plain.run_on_scheduler(touch, str(on_scheduler))
    assert "refused for every client of a lockstep cluster, handshake or not" in str(err.value)
    # The op Client.run sends, sent by hand, and through proxy.
    msg = {"op": "run", "function": dumps(touch), "args": dumps((str(on_workers),))}
    with pytest.raises(PermissionError, match="lockstep refused broadcast of run"):
        plain.sync(plain.scheduler.broadcast, msg=msg)
    worker = next(iter(plain.scheduler_info()["workers"]))
    with pytest.raises(PermissionError, match="lockstep refused proxy of run"):
        plain.sync(plain.scheduler.proxy, msg=msg, worker=worker)
    assert not on_workers.exists() and not on_scheduler.exists()


def test_plain_client_cannot_register_or_remove_plugins(cluster: Cluster, plain: Any) -> None:
    before = cluster.worker_identity()
    markers = {kind: cluster.marker(f"plugin-{kind}") for kind in ("worker", "nanny", "sched")}
    for plugin, op in (
        (SwapExecutor(str(markers["worker"])), "register_worker_plugin"),
        (NannyMarker(str(markers["nanny"])), "register_nanny_plugin"),
        (SchedulerMarker(str(markers["sched"])), "register_scheduler_plugin"),
    ):
        with pytest.raises(PermissionError, match=f"lockstep refused {op} from tcp://"):
            plain.register_plugin(plugin)
    for name, op in (
        ("unregister_worker_plugin", "unregister_worker_plugin"),
        ("unregister_scheduler_plugin", "unregister_scheduler_plugin"),
    ):
        with pytest.raises(PermissionError, match=f"lockstep refused {op}"):
            getattr(plain, name)("shuffle")
    with pytest.raises(PermissionError, match="lockstep refused unregister_nanny_plugin"):
        plain.unregister_worker_plugin("shuffle", nanny=True)
    with pytest.raises(PermissionError, match="lockstep refused register_scheduler_plugin"):
        plain.upload_file(str(Path(__file__).with_name("lockstep_test_tasks.py")))
    # plugin-add sent by hand through broadcast, to the workers and to the nannies.
    raw = {
        "op": "plugin-add",
        "plugin": dumps(SwapExecutor(str(markers["worker"]))),
        "name": "swap",
    }
    with pytest.raises(PermissionError, match="lockstep refused broadcast of 'plugin-add'"):
        plain.sync(plain.scheduler.broadcast, msg=raw)
    with pytest.raises(PermissionError, match="to nannies"):
        plain.sync(plain.scheduler.broadcast, msg={**raw, "op": "plugin_add"}, nanny=True)
    assert not any(m.exists() for m in markers.values())
    after = cluster.worker_identity()
    assert after["plugins"] == before["plugins"] and "swap-executor" not in after["plugins"]
    assert after["executor"] == "isolated_warm" and after["pid"] == before["pid"]


def test_the_workers_own_port_refuses_run_and_plugins(cluster: Cluster, plain: Any) -> None:
    """A process that connects to the worker directly, past the scheduler."""
    worker = next(iter(plain.scheduler_info()["workers"]))
    marker = cluster.marker("direct")
    touch = dumps(__import__(T).touch)
    for op, msg in (
        ("run", {"function": touch, "args": dumps((str(marker),))}),
        ("run_coroutine", {"function": touch, "args": dumps((str(marker),))}),
        ("plugin-add", {"plugin": dumps(SwapExecutor(str(marker))), "name": "x"}),
        ("plugin-remove", {"name": "shuffle"}),
        ("upload_file", {"filename": "evil.py", "data": b"x = 1", "load": True}),
    ):
        with pytest.raises(PermissionError, match=f"lockstep worker {worker} refused {op} from"):
            plain.sync(_direct, worker, op, msg)
    assert not marker.exists()
    assert list(cluster.worker_identity()["plugins"]) == ["lockstep-cancel", "shuffle"]


async def _direct(address: str, op: str, msg: dict[str, Any]) -> Any:
    """Send ``op`` straight to ``address`` (no scheduler in between); its answer."""
    from distributed.comm import connect as dask_connect
    from distributed.core import send_recv

    comm = await dask_connect(address)
    try:
        return await send_recv(comm, op=op, **msg)
    finally:
        await comm.close()


def test_hello_with_another_build_or_a_bad_manifest_is_refused(
    cluster: Cluster, plain: Any
) -> None:
    def hello(manifest: object, client: object = plain.id) -> Any:
        return plain.sync(plain.scheduler.lockstep_hello, manifest=manifest, client=client)

    with pytest.raises(
        PermissionError,
        match=f"it is build {cluster.b.build_id} version 0.0.9 "
        f"but the scheduler is build {cluster.a.build_id}",
    ):
        hello(cluster.b.to_json().decode())
    recorded = Refusal.from_wire(refusals(cluster, plain.id)[-1]["refusal"])
    assert recorded is not None and (recorded.who, recorded.subject) == ("client", plain.id)
    assert (recorded.build_id, recorded.version) == (cluster.b.build_id, "0.0.9")
    with pytest.raises(PermissionError, match="not valid JSON"):
        hello("{not json")
    with pytest.raises(PermissionError, match="more than the 65536"):
        hello("x" * 1_000_000)
    with pytest.raises(PermissionError, match="not a JSON string"):
        hello({"build_id": cluster.a.build_id})
    with pytest.raises(PermissionError, match=r"client must be the client\.id"):
        hello(cluster.a.to_json().decode(), client=None)
    with pytest.raises(PermissionError, match="no client of that id is connected"):
        hello(cluster.a.to_json().decode(), client="Client-not-connected")
    with pytest.raises(PermissionError, match=NOT_HANDSHAKEN):
        plain.submit(__import__(T).add, 1, 2, pure=False).result(timeout=60)
    # connect() of another build never says hello: the handshake stops it first.
    with pytest.raises(IncompatibleClusterError):
        connect(cluster.address, n_workers=1, timeout=30, manifest=cluster.b)


def test_a_forged_client_id_in_update_graph_is_refused(cluster: Cluster, plain: Any) -> None:
    """The plain client's own stream carries an update-graph naming the admitted runner."""
    plain.scheduler_comm.send(
        {
            "op": "update-graph",
            "client": cluster.runner.id,
            "keys": ["forged-key"],
            "expr_ser": None,
            "span_metadata": {},
            "internal_priority": None,
            "submitting_task": None,
        }
    )
    deadline = 60.0
    found: list[dict[str, Any]] = []
    while deadline > 0 and not found:
        found = [r for r in refusals(cluster, plain.id) if "names client" in r["message"]]
        plain.sync(asyncio.sleep, 0.1)
        deadline -= 0.1
    assert found, cluster.identity()["refused_clients"]
    assert f"names client {cluster.runner.id!r}" in found[0]["message"]
    assert cluster.runner.submit(__import__(T).add, 1, 2, pure=False).result(timeout=60) == 3


def test_after_the_hello_submit_works_but_functions_and_plugins_stay_refused(
    cluster: Cluster,
) -> None:
    client = connect(cluster.address, n_workers=1, timeout=60, manifest=cluster.a)
    try:
        assert client.id in {c["client"] for c in cluster.identity()["clients"]}
        result = submit_task(client, f"{T}:pid").result(timeout=60)
        assert result["executor"] == "isolated_warm"
        marker = cluster.marker("after-hello")
        with pytest.raises(PermissionError, match="lockstep refused register_worker_plugin"):
            client.register_plugin(SwapExecutor(str(marker)))
        with pytest.raises(PermissionError, match="lockstep refused broadcast of run"):
            client.run(__import__(T).touch, str(marker))
        with pytest.raises(PermissionError, match="lockstep refused run_function"):
            client.run_on_scheduler(__import__(T).touch, str(marker))
        assert not marker.exists()
        again = submit_task(client, f"{T}:pid").result(timeout=60)
        assert again["executor"] == "isolated_warm" and again["pid"] == result["pid"]
    finally:
        client.close()


def test_bundle_put_and_scatter_need_the_handshake(cluster: Cluster, plain: Any) -> None:
    msg = {"op": Op.PUT.value, "digest": "sha256:" + "0" * 64, "files": []}
    with pytest.raises(PermissionError, match=f"refused broadcast of {Op.PUT} .* needs the token"):
        plain.sync(plain.scheduler.broadcast, msg=msg)
    with pytest.raises(PermissionError, match="needs the token"):
        plain.sync(plain.scheduler.broadcast, msg={**msg, "lockstep_token": "0" * 32})
    with pytest.raises(PermissionError, match=f"lockstep refused scatter from client {plain.id}"):
        plain.scatter([1, 2, 3], direct=False)


def test_the_worker_is_unchanged_and_the_doctor_reports_refused_clients(cluster: Cluster) -> None:
    ident = cluster.worker_identity()
    assert ident["executor"] == "isolated_warm" and ident["ready"]
    assert list(ident["plugins"]) == ["lockstep-cancel", "shuffle"]
    result = submit_task(cluster.runner, f"{T}:pid").result(timeout=60)
    assert result["executor"] == "isolated_warm" and result["build_id"] == cluster.a.build_id
    assert result["pid"] != ident["pid"]  # a warm child, not the worker process
    assert not list(cluster.dir.glob("marker-*"))

    proc = subprocess.run(
        lockstep("doctor", "--scheduler", cluster.address),
        env=base_env(None),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    clients = [line for line in proc.stdout.splitlines() if REFUSED_CLIENT in line]
    assert clients and all(line.split()[1] == "client" for line in clients), proc.stdout
    assert any(
        "register_worker_plugin" in line or "run_function" in line or "broadcast" in line
        for line in clients
    )
    assert f"cluster at {cluster.address} is not all build {cluster.a.build_id}" in proc.stderr
    assert "client(s) refused by the client gate" in proc.stderr
    data = json.loads(
        subprocess.run(
            lockstep("doctor", "--scheduler", cluster.address, "--json"),
            env=base_env(None),
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout
    )
    roles = [m["role"] for m in data["members"]]
    assert roles[:2] == ["scheduler", "worker"] and set(roles[2:]) == {"client"}
    assert data["members"][1]["status"] == "ok" and not data["ok"]
    claimed = [m for m in data["members"] if m["build_id"] == cluster.b.build_id]
    assert claimed and claimed[0]["version"] == "0.0.9"  # the hello of build b
    (cluster.dir / "doctor-refused-clients.txt").write_text(proc.stdout + proc.stderr)


# --- Dask's handlers as the gate expects them (fails on a distributed upgrade that moves them)


def test_check_hooks_accepts_this_dask_and_refuses_a_changed_one() -> None:
    from distributed import Scheduler

    async def main() -> None:
        async with Scheduler(host="127.0.0.1", port=0, dashboard_address=":0") as s:
            check_hooks(s)  # the pinned distributed as it is
            assert set(s.handlers) <= KNOWN_RPC_OPS
            original = s.handlers["register_worker_plugin"]
            s.handlers["register_worker_plugin"] = s.handlers["identity"]
            with pytest.raises(RuntimeError, match="is identity, not register_worker_plugin"):
                check_hooks(s)
            s.handlers["register_worker_plugin"] = original
            s.handlers["register_plugin"] = original
            with pytest.raises(RuntimeError, match="does not know: register_plugin"):
                check_hooks(s)
            del s.handlers["register_plugin"]
            update = s.stream_handlers.pop("update-graph")
            with pytest.raises(RuntimeError, match="has no 'update-graph'"):
                check_hooks(s)
            s.stream_handlers["update-graph"] = update
            check_hooks(s)

    asyncio.run(main())


def test_the_hello_the_runner_says_is_the_one_the_gate_answers(
    cluster: Cluster, plain: Any
) -> None:
    """``cluster.hello`` (what ``connect`` calls) on a plain client: admitted, token kept."""
    from lockstep.runtime.cluster import admission_token, hello

    token = hello(plain, cluster.a, timeout=60)
    assert admission_token(plain) == token
    admitted = {c["client"] for c in cluster.identity()["clients"]}
    assert plain.id in admitted
    assert plain.submit(__import__(T).add, 1, 2, pure=False).result(timeout=60) == 3
