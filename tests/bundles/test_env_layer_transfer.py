"""A prebuilt layer's pieces through a real scheduler to real workers: several in flight,
put back in order, bounded; a sender or a worker that dies ends the transfer with one
line, and what it left on disk is removed (by the worker, or by the next one).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from lockstep.bundles import ship_layer
from lockstep.bundles.env_layer import LayerRefused
from lockstep.bundles.env_receive import AHEAD
from lockstep.bundles.format import Bundle, load_bundle
from lockstep.bundles.prebuilt import env_layer
from lockstep.bundles.protocol import Op, message
from lockstep.bundles.ship import broadcast
from lockstep.bundles.store import to_wire
from lockstep.core.store import Cache
from tests.bundles.test_env_layer_cluster import demo_bundle
from tests.fixtures.cluster import Cluster, ClusterOptions
from tests.fixtures.procs import base_env, start_worker

CLUSTER = ClusterOptions(executors=("cold",))


@pytest.fixture(autouse=True)
def runner_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("LOCKSTEP_CACHE_DIR", str(tmp_path / "runner"))
    return tmp_path / "runner"


def stored(cluster: Cluster, tmp_path: Path, runner: Path, value: int, worker: str) -> Any:
    """A bundle stored on ``worker`` (its code only) and its layer: (bundle, layer, blob)."""
    loaded, _ = load_bundle(demo_bundle(tmp_path / f"b{value}", runner, value))
    assert loaded is not None and loaded.lock() is not None
    put = message(Op.PUT, digest=loaded.digest, files=to_wire(loaded.files))
    assert broadcast(cluster.client, [worker], put, 60)[worker]["ok"]
    layer = env_layer(loaded.lock(), lambda w: Cache(runner).get_blob(w.digest) or b"",  # type: ignore[arg-type]
                      Cache(runner))  # fmt: skip
    return loaded, layer, Cache(runner).blob_path(layer.digest).read_bytes()


def piece(bundle: Bundle, layer: Any, blob: bytes, offset: int, size: int, **extra: Any) -> Any:
    data = blob[offset : offset + size]
    return message(Op.ENV_LAYER, digest=bundle.digest, layer=layer.digest, size=len(blob),
                   offset=offset, data=data, last=offset + len(data) == len(blob),
                   **{"transfer": "t1", "idle": 60.0, **extra})  # fmt: skip


def leftovers(bundle_dir: Path) -> list[Path]:
    envs = bundle_dir / "envs"
    return sorted(envs.glob(".*.tmp")) if envs.exists() else []


def test_pieces_that_arrive_out_of_order_are_put_back_in_order(
    cluster: Cluster, tmp_path: Path, runner_cache: Path
) -> None:
    worker = cluster.addresses["cold"]
    bundle, layer, blob = stored(cluster, tmp_path, runner_cache, 1, worker)
    size = -(-len(blob) // 5)
    offsets = list(range(0, len(blob), size))
    with ThreadPoolExecutor(len(offsets)) as pool:  # all in flight, the last sent first
        answers = list(pool.map(
            lambda o: broadcast(cluster.client, [worker], piece(bundle, layer, blob, o, size),
                                120)[worker],
            reversed(offsets),
        ))  # fmt: skip
    assert all(a["ok"] for a in answers), answers
    assert answers[0]["built"] is True and answers[0]["env"].startswith("sha256:")
    env = cluster.caches["cold"] / "envs" / answers[0]["env"][7:]
    assert json.loads((env / "ENV.json").read_bytes())["layer"] == layer.digest
    assert not leftovers(cluster.caches["cold"])


def test_pieces_too_far_ahead_are_refused_and_a_quiet_sender_is_given_up(
    cluster: Cluster, tmp_path: Path, runner_cache: Path
) -> None:
    worker = cluster.addresses["cold"]
    bundle, layer, blob = stored(cluster, tmp_path, runner_cache, 2, worker)
    size = len(blob) // (AHEAD + 3)
    ahead = [size * (i + 1) for i in range(AHEAD + 1)]  # the first piece never comes
    with ThreadPoolExecutor(len(ahead)) as pool:
        answers = list(pool.map(
            lambda o: broadcast(cluster.client, [worker],
                                piece(bundle, layer, blob, o, size, idle=2.0), 120)[worker],
            ahead,
        ))  # fmt: skip
    errors = [a["error"] for a in answers]
    assert not any(a["ok"] for a in answers) and all("\n" not in e for e in errors)
    assert sum(f"more than {AHEAD} pieces ahead" in e for e in errors) == 1, errors
    assert sum("no piece came for 2 s (its sender went)" in e for e in errors) == AHEAD
    assert not leftovers(cluster.caches["cold"])  # the half-extracted directory is gone


SENDER = """
import sys, json
from pathlib import Path
from lockstep.bundles.ship import broadcast
from lockstep.manifest import BuildManifest
from lockstep.runtime import connect
address, manifest, worker, pieces = sys.argv[1:5]
a = BuildManifest.from_json(Path(manifest).read_bytes())
client = connect(address, n_workers=1, timeout=30, manifest=a)
for msg in json.loads(Path(pieces).read_text()):
    msg["data"] = bytes.fromhex(msg["data"])
    assert broadcast(client, [worker], msg, 60)[worker]["ok"]
print("sent", flush=True)
sys.stdin.read()
"""


def test_a_killed_sender_is_given_up_and_its_directory_removed(
    cluster: Cluster, tmp_path: Path, runner_cache: Path
) -> None:
    worker = cluster.addresses["cold"]
    bundle, layer, blob = stored(cluster, tmp_path, runner_cache, 3, worker)
    size = len(blob) // 4
    msgs = [piece(bundle, layer, blob, o, size, idle=3.0, transfer="dead") for o in (0, size)]
    wire = [{**m, "data": m["data"].hex()} for m in msgs]
    (tmp_path / "pieces.json").write_text(json.dumps(wire))
    sender = subprocess.Popen(
        [sys.executable, "-c", SENDER, cluster.address, str(cluster.a_path), worker,
         str(tmp_path / "pieces.json")],
        env=base_env(cluster.a_path), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert sender.stdout is not None and sender.stdout.readline() == b"sent\n"
        assert leftovers(cluster.caches["cold"])  # extracting into its temporary directory
    finally:
        sender.kill()  # the runner dies mid-way: nothing more comes
        sender.wait()
    log = cluster.workers["cold"]
    log.wait_for(rf"{layer.digest}: no piece came for 3 s \(its sender went\); removed", 60)
    assert not leftovers(cluster.caches["cold"])


def test_a_worker_killed_mid_transfer_ends_it_with_one_line_and_the_next_worker_cleans(
    cluster: Cluster, tmp_path: Path, runner_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "worker-store"
    proc = start_worker(cluster.dir, cluster.address, cluster.a_path, "cold", "doomed",
                        env={"LOCKSTEP_BUNDLE_DIR": str(store)})  # fmt: skip
    try:
        proc.wait_for("lockstep worker ready", timeout=60)
        deadline = time.monotonic() + 60  # its ready line can come before the scheduler has it
        while not (named := [a for a, w in cluster.client.scheduler_info()["workers"].items()
                             if w.get("name") == "doomed"]):  # fmt: skip
            assert time.monotonic() < deadline, "the worker never joined the scheduler"
            time.sleep(0.1)
        [worker] = named
        bundle, layer, blob = stored(cluster, tmp_path, runner_cache, 4, worker)
        monkeypatch.setattr(ship_layer, "CHUNK", len(blob) // 10)

        def ask(to: Any, msg: dict[str, Any], timeout: float) -> dict[str, Any]:
            answer = broadcast(cluster.client, to, msg, timeout)
            if msg["offset"] == ship_layer.CHUNK:  # the second piece is in: kill the worker
                proc.popen.kill()
                proc.popen.wait()
            return answer

        head = message(Op.ENV_LAYER, digest=bundle.digest, layer=layer.digest, size=len(blob),
                       transfer="t", idle=60.0)  # fmt: skip
        with pytest.raises(ship_layer.LayerFailed) as failed:
            ship_layer.send_pieces(ask, [worker], Cache(runner_cache).blob_path(layer.digest),
                                   len(blob), head, 60)  # fmt: skip
        assert [f.error for f in failed.value.failures] == [
            f"worker {worker}: did not answer {Op.ENV_LAYER.value}"
        ]
        [left] = leftovers(store)  # what the killed worker was extracting
    finally:
        proc.stop()
    again = start_worker(cluster.dir, cluster.address, cluster.a_path, "cold", "next",
                         env={"LOCKSTEP_BUNDLE_DIR": str(store)})  # fmt: skip
    try:
        again.wait_for(rf"removed {left}, left by a stopped process", timeout=60)
        assert not leftovers(store)
    finally:
        again.stop()


def test_the_given_up_line_comes_once_the_directory_is_removed() -> None:
    """The line says "removed": a test (or an operator) that reads it and looks finds
    nothing left. The sink's removal is slow here; the line must still come after it."""
    import asyncio
    import logging

    from lockstep.bundles.env_receive import Transfer

    events: list[str] = []

    class SlowSink:
        def feed(self, data: bytes) -> None:
            events.append("fed")

        def abort(self) -> None:
            time.sleep(0.3)  # a large half-extracted tree takes a while to remove
            events.append("removed")

    class Seen(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            events.append(f"logged: {record.getMessage()}")

    seen = Seen()
    logging.getLogger("lockstep.bundles").addHandler(seen)

    async def transfer() -> None:
        t = Transfer("sha256:b sha256:l", "t", 10, SlowSink, idle=60.0)  # type: ignore[arg-type]
        await t.piece(0, b"12345", False)
        await t.give_up("environment layer sha256:l: its sender went; removed")
        with pytest.raises(LayerRefused, match="its sender went"):
            await t.piece(5, b"67890", True)

    try:
        asyncio.run(transfer())
    finally:
        logging.getLogger("lockstep.bundles").removeHandler(seen)
    assert events == [
        "fed",
        "removed",
        "logged: lockstep environment layer sha256:l: its sender went; removed",
    ]
