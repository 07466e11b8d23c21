"""A local cluster on the Docker engine from a build's outputs: ``lockstep up`` / ``down``.

``up`` loads ``<out>/worker.tar`` (its image ID checked against the archive), then
starts on one bridge network a scheduler and N workers per executor from it, each
as deployed (docs/design.md §4.10): user 65532, read-only root with a tmpfs
``/tmp``, every capability dropped, no new privileges. The scheduler's port is
published on 127.0.0.1 only; without TLS both listen beyond their container's
loopback, so they run with ``--insecure`` (the network is the engine's, the port is
loopback's). Everything it makes carries the label ``io.lockstep.local=<name>``,
and ``down`` removes exactly what has that label (containers, network, volumes),
then the state file; so does every ``up`` first, which cleans what a killed ``up``
left. The state (``<out>/local-<name>.json``) is written atomically, once before
anything is made (``starting``) and once when every process said it is ready.
Every wait is bounded: a container that exits, or a process that is not ready in
time, ends ``up`` with its log's last lines, and what was made is removed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lockstep.assembly.engine import docker_client, load_archive
from lockstep.assembly.sinks import MANIFEST_NAME
from lockstep.core.atomic import write_bytes
from lockstep.core.errors import BadInput, ServiceFailed
from lockstep.core.settings import EXECUTOR
from lockstep.manifest import BuildManifest, load_manifest

log = logging.getLogger(__name__)

LABEL = "io.lockstep.local"
PORT = 8786  # the scheduler's port inside its container, and by default on the host
SCHEDULER_READY = "lockstep scheduler ready"
WORKER_READY = "lockstep worker ready"
LOCKED_DOWN: dict[str, Any] = {
    "user": "65532:65532",
    "read_only": True,
    "tmpfs": {"/tmp": "rw,nosuid,nodev"},
    "cap_drop": ["ALL"],
    "security_opt": ["no-new-privileges"],
}
POLL_SECONDS = 0.2


@dataclass(frozen=True)
class Plan:
    """What ``up`` starts: from which outputs, under which name, how many of what."""

    out: Path
    name: str
    workers: int = 1  # per executor
    executors: tuple[str, ...] = ()  # default: every executor of the build
    port: int = PORT  # on 127.0.0.1; 0: any free port
    timeout: float = 120.0

    @property
    def state(self) -> Path:
        return state_path(self.out, self.name)


def state_path(out: Path, name: str) -> Path:
    return out / f"local-{name}.json"


def _write_state(path: Path, state: dict[str, Any]) -> None:
    write_bytes(path, (json.dumps(state, indent=2, sort_keys=True) + "\n").encode())


def _manifest(out: Path) -> BuildManifest:
    path = out / MANIFEST_NAME
    if not path.is_file() or not (out / "worker.tar").is_file():
        raise BadInput(
            f"{out}: no {MANIFEST_NAME} and worker.tar of a build; run `lockstep build "
            f"--out {out}` first"
        )
    return load_manifest(path)


def down(name: str, out: Path, client: Any | None = None) -> dict[str, int]:
    """Remove every container, network and volume labelled ``name``, then the state file;
    how many of each were removed. Nothing without that label is touched."""
    import docker.errors

    client = client or docker_client()
    selector = {"label": f"{LABEL}={name}"}
    removed = {"containers": 0, "networks": 0, "volumes": 0}
    try:
        for container in client.containers.list(all=True, filters=selector):
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)
                removed["containers"] += 1
        for network in client.networks.list(filters=selector):
            with contextlib.suppress(docker.errors.NotFound):
                network.remove()
                removed["networks"] += 1
        for volume in client.volumes.list(filters=selector):
            with contextlib.suppress(docker.errors.NotFound):
                volume.remove(force=True)
                removed["volumes"] += 1
    except docker.errors.APIError as exc:
        raise ServiceFailed(f"the Docker engine refused to remove cluster {name!r}: {exc}") from exc
    state_path(out, name).unlink(missing_ok=True)
    return removed


def _tail(container: Any, lines: int = 15) -> str:
    with contextlib.suppress(Exception):
        text = bytes(container.logs(tail=lines)).decode(errors="replace").rstrip()
        return "\n".join(f"  | {line}" for line in text.splitlines())
    return "  | (no log)"


def _wait_ready(containers: Sequence[tuple[Any, str]], timeout: float) -> None:
    """Return once each container's log shows its ready line; ``ServiceFailed`` with its
    log if one exits, or if one is not ready after ``timeout`` seconds."""
    waiting = list(containers)
    deadline = time.monotonic() + timeout
    while waiting:
        for container, ready in list(waiting):
            container.reload()
            if ready in bytes(container.logs()).decode(errors="replace"):
                waiting.remove((container, ready))
            elif container.status in ("exited", "dead"):
                code = container.attrs["State"]["ExitCode"]
                raise ServiceFailed(
                    f"container {container.name} exited {code} before {ready!r}; its log "
                    f"ends:\n{_tail(container)}"
                )
        if waiting and time.monotonic() > deadline:
            container = waiting[0][0]
            raise ServiceFailed(
                f"container {container.name} not ready after {timeout:g} s (no "
                f"{waiting[0][1]!r}); its log ends:\n{_tail(container)}"
            )
        if waiting:
            time.sleep(POLL_SECONDS)  # polling the engine: no event says "ready"


def up(plan: Plan, client: Any | None = None) -> dict[str, Any]:
    """Start the cluster of ``plan`` (after removing one of that name); its state."""
    manifest = _manifest(plan.out)
    executors = plan.executors or manifest.executors
    unknown = sorted(set(executors) - set(manifest.executors))
    if unknown:
        raise BadInput(
            f"--executor {', '.join(unknown)}: not in this build; choose from "
            f"{', '.join(manifest.executors)}"
        )
    client = client or docker_client()
    down(plan.name, plan.out, client)  # what a killed `up` of this name left, or the last one
    labels = {LABEL: plan.name, "io.lockstep.build-id": manifest.build_id}
    state: dict[str, Any] = {"name": plan.name, "status": "starting", "build_id": manifest.build_id}
    _write_state(plan.state, state)
    try:
        image = client.images.get(load_archive(plan.out / "worker.tar"))
        built = image.labels.get("io.lockstep.build-id")
        if built != manifest.build_id:
            raise BadInput(
                f"{plan.out}/worker.tar is build {built}, {plan.out}/{MANIFEST_NAME} is "
                f"{manifest.build_id}; build again into {plan.out}"
            )
        python = list(image.attrs["Config"]["Entrypoint"][:-1])  # […, "-m", "lockstep"]
        network = client.networks.create(plan.name, driver="bridge", labels=labels)
        started = [_start_scheduler(client, plan, image.id, python, labels)]
        for executor in executors:
            for i in range(1, plan.workers + 1):
                started.append(_start_worker(client, plan, image.id, python, labels, executor, i))
        _wait_ready(
            [(started[0], SCHEDULER_READY)] + [(c, WORKER_READY) for c in started[1:]],
            plan.timeout,
        )
        started[0].reload()
        host_port = started[0].attrs["NetworkSettings"]["Ports"][f"{PORT}/tcp"][0]["HostPort"]
    except BaseException:
        down(plan.name, plan.out, client)
        raise
    state.update(
        status="up",
        scheduler=f"tcp://127.0.0.1:{host_port}",
        manifest=str(plan.out / MANIFEST_NAME),
        network=network.id,
        containers={c.name: c.id for c in started},
        executors=list(executors),
    )
    _write_state(plan.state, state)
    return state


def _run(client: Any, plan: Plan, image: str, name: str, **kwargs: Any) -> Any:
    container = client.containers.run(
        image, name=f"{plan.name}-{name}", network=plan.name, detach=True, **LOCKED_DOWN,
        **kwargs,
    )  # fmt: skip
    log.info("started %s", container.name)
    return container


def _start_scheduler(
    client: Any, plan: Plan, image: str, python: list[str], labels: dict[str, str]
) -> Any:
    endpoint = client.api.create_endpoint_config(aliases=["scheduler"])
    return _run(
        client,
        plan,
        image,
        "scheduler",
        entrypoint=[*python, "scheduler"],
        command=["--host", "0.0.0.0", "--port", str(PORT), "--insecure"],
        ports={f"{PORT}/tcp": ("127.0.0.1", plan.port or None)},
        networking_config={plan.name: endpoint},
        labels={**labels, "io.lockstep.role": "scheduler"},
    )


def _start_worker(
    client: Any,
    plan: Plan,
    image: str,
    python: list[str],
    labels: dict[str, str],
    executor: str,
    index: int,
) -> Any:
    name = f"worker-{executor.replace('_', '-')}-{index}"
    return _run(
        client,
        plan,
        image,
        name,
        entrypoint=[*python, "worker"],
        command=[f"tcp://scheduler:{PORT}", "--insecure", "--name", f"{plan.name}-{name}"],
        environment={EXECUTOR: executor},
        labels={**labels, "io.lockstep.role": "worker"},
    )
