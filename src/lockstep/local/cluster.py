"""A local cluster on the Docker engine from a build's outputs: ``lockstep up`` / ``down``.

``up`` loads the worker archive of ``<out>/manifest.json``'s platform (``worker-<arch>.tar``
from a build of several platforms, else ``worker.tar``; its image ID checked), then starts
on one bridge network a scheduler and N workers per executor from it, each as deployed
(docs/design.md §4.10): user 65532, read-only root with a tmpfs ``/tmp``, every capability
dropped, no new privileges, and the CPU and memory limits it has on Kubernetes
(``[tool.lockstep.deploy]``: the scheduler's, and for a worker its executor's worker
group's, unless ``--cpus``/``--memory`` set every worker's). The scheduler's port is
published on 127.0.0.1 only. With ``LOCKSTEP_TLS_*`` set (all three), the cluster speaks
mutual TLS only: the three files are copied (owner 65532, mode 0400) into a volume that
every container mounts read-only, and the scheduler's address is ``tls://``. Without TLS
both listen beyond their container's loopback, so they run with ``--insecure`` (the network
is the engine's, the port is loopback's). Everything it makes carries the label
``io.lockstep.local=<name>``, and ``down`` removes exactly what has that label (containers,
network, volumes), then the state file; so does every ``up`` first, which cleans what a
killed ``up`` left. The state (``<out>/local-<name>.json``) is written atomically, once
before anything is made (``starting``) and once when every process said it is ready. Every
wait is bounded: a container that exits, or a process that is not ready in time, ends ``up``
with its log's last lines, and what was made is removed.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import tarfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lockstep.assembly import layout
from lockstep.assembly.engine import docker_client, load_archive
from lockstep.assembly.sinks import MANIFEST_NAME
from lockstep.core import platforms
from lockstep.core.atomic import write_bytes
from lockstep.core.bounded import KEY_MAX, read_regular
from lockstep.core.errors import BadInput, ServiceFailed
from lockstep.core.settings import EXECUTOR, TLS_CA_FILE, TLS_CERT, TLS_KEY
from lockstep.deployment import DEFAULTS, DeploySettings, Resources
from lockstep.manifest import BuildManifest, load_manifest

log = logging.getLogger(__name__)

LABEL = "io.lockstep.local"
PORT = 8786  # the scheduler's port inside its container, and by default on the host
SCHEDULER_READY = "lockstep scheduler ready"
WORKER_READY = "lockstep worker ready"
# A Kubernetes emptyDir's mount, as a tmpfs: exec (a bundle's native wheels, numpy's .so,
# are mapped from LOCKSTEP_BUNDLE_DIR under /tmp; docker's tmpfs is noexec unless told).
EMPTY_DIR = "rw,exec,nosuid,nodev"
LOCKED_DOWN: dict[str, Any] = {
    "user": "65532:65532",
    "read_only": True,
    "tmpfs": {"/tmp": EMPTY_DIR},
    "cap_drop": ["ALL"],
    "security_opt": ["no-new-privileges"],
}
POLL_SECONDS = 0.2
TLS_DIR = "/etc/lockstep/tls"  # the TLS volume's mount point in every container
TLS_FILES = {TLS_CA_FILE: "ca.pem", TLS_CERT: "cert.pem", TLS_KEY: "key.pem"}


@dataclass(frozen=True)
class Limits:
    """One container's CPU (millicores) and memory (bytes) limits on the engine."""

    cpu_millis: int
    memory_bytes: int

    @classmethod
    def of(cls, resources: Resources) -> Limits:
        return cls(resources.cpu_limit_millis, resources.memory_limit_bytes)

    def engine(self) -> dict[str, int]:
        """The docker SDK's ``containers.run`` arguments: no swap beyond the memory limit,
        as on Kubernetes."""
        return {
            "nano_cpus": self.cpu_millis * 1_000_000,
            "mem_limit": self.memory_bytes,
            "memswap_limit": self.memory_bytes,
        }


@dataclass(frozen=True)
class Plan:
    """What ``up`` starts: from which outputs, under which name, how many of what."""

    out: Path
    name: str
    workers: int = 1  # per executor
    executors: tuple[str, ...] = ()  # default: every executor of the build
    port: int = PORT  # on 127.0.0.1; 0: any free port
    timeout: float = 120.0
    deploy: DeploySettings = DEFAULTS  # the deployed limits, [tool.lockstep.deploy]
    worker_cpu_millis: int | None = None  # --cpus: every worker's, over the deployed
    worker_memory_bytes: int | None = None  # --memory: the same

    def limits(self, executor: str | None) -> Limits:
        """The container's limits as deployed: the scheduler's (``executor`` None), or a
        worker's: ``--cpus``/``--memory``, else those of the first worker group that runs
        its executor, else of the first group."""
        if executor is None:
            return Limits.of(self.deploy.scheduler)
        groups = [g for g in self.deploy.workers if g.executor == executor]
        deployed = Limits.of((groups or list(self.deploy.workers))[0].resources)
        return Limits(
            self.worker_cpu_millis or deployed.cpu_millis,
            self.worker_memory_bytes or deployed.memory_bytes,
        )

    @property
    def state(self) -> Path:
        return state_path(self.out, self.name)


def state_path(out: Path, name: str) -> Path:
    return out / f"local-{name}.json"


def _write_state(path: Path, state: dict[str, Any]) -> None:
    write_bytes(path, (json.dumps(state, indent=2, sort_keys=True) + "\n").encode())


def _manifest(out: Path) -> tuple[BuildManifest, Path]:
    """The build manifest in ``out`` and the worker archive of its platform."""
    path = out / MANIFEST_NAME
    if path.is_file():
        manifest = load_manifest(path)
        for archive in worker_archives(out, manifest.platform):
            if archive.is_file():
                return manifest, archive
    raise BadInput(
        f"{out}: no {MANIFEST_NAME} and worker.tar of a build; run `lockstep build "
        f"--out {out}` first"
    )


def worker_archives(out: Path, platform: str) -> list[Path]:
    """Where a build into ``out`` put the worker image of ``platform``: ``worker-<arch>.tar``
    in a project of several platforms (``layout.platform_suffix``), ``worker.tar`` in one."""
    names = ["worker.tar"]
    if platform:
        arch = platforms.platform(platform).architecture
        names.insert(0, f"worker{layout.platform_suffix(arch, len(platforms.PLATFORMS))}.tar")
    return [out / name for name in names]


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


def _tls_files() -> dict[str, bytes] | None:
    """The three ``LOCKSTEP_TLS_*`` files' bytes by their name in the volume; None if unset."""
    given = {env: os.environ.get(env) for env in TLS_FILES}
    if not any(given.values()):
        return None
    if not all(given.values()):
        missing = ", ".join(env for env, value in given.items() if not value)
        raise BadInput(f"mutual TLS needs all of {', '.join(TLS_FILES)}; {missing} not set")
    return {TLS_FILES[env]: read_regular(Path(str(path)), KEY_MAX) for env, path in given.items()}


def _tls_volume(client: Any, plan: Plan, image: str, labels: dict[str, str]) -> Any:
    """A labelled volume holding the TLS files, owned by the images' user, read-only to it."""
    files = _tls_files()
    if files is None:
        return None
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        for name, content in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.uid, info.gid = len(content), 0o400, 65532, 65532
            tar.addfile(info, io.BytesIO(content))
    volume = client.volumes.create(f"{plan.name}-tls", labels=labels)
    helper = client.containers.create(  # never started: only its mount is written
        image, name=f"{plan.name}-tls-copy", labels=labels,
        volumes={volume.name: {"bind": TLS_DIR, "mode": "rw"}},
    )  # fmt: skip
    try:
        helper.put_archive(TLS_DIR, data.getvalue())
    finally:
        helper.remove(force=True)
    return volume


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
    manifest, archive = _manifest(plan.out)
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
        image = client.images.get(load_archive(archive))
        built = image.labels.get("io.lockstep.build-id")
        if built != manifest.build_id:
            raise BadInput(
                f"{archive} is build {built}, {plan.out}/{MANIFEST_NAME} is "
                f"{manifest.build_id}; build again into {plan.out}"
            )
        python = list(image.attrs["Config"]["Entrypoint"][:-1])  # […, "-m", "lockstep"]
        volume = _tls_volume(client, plan, image.id, labels)
        scheme = "tcp" if volume is None else "tls"
        network = client.networks.create(plan.name, driver="bridge", labels=labels)
        run = _Runner(client, plan, image.id, python, labels, volume)
        started = [run.scheduler()]
        for executor in executors:
            started += [run.worker(executor, i) for i in range(1, plan.workers + 1)]
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
        scheduler=f"{scheme}://127.0.0.1:{host_port}",
        tls=volume is not None,
        manifest=str(plan.out / MANIFEST_NAME),
        network=network.id,
        containers={c.name: c.id for c in started},
        executors=list(executors),
    )
    _write_state(plan.state, state)
    return state


@dataclass(frozen=True)
class _Runner:
    """Starts the cluster's containers: one image, one network, one lockdown, one label."""

    client: Any
    plan: Plan
    image: str
    python: list[str]  # the image's ``python -m lockstep``
    labels: dict[str, str]
    tls: Any  # the TLS volume, or None

    def _run(self, name: str, role: str, command: list[str], **kwargs: Any) -> Any:
        environment = dict(kwargs.pop("environment", {}))
        volumes = None
        if self.tls is not None:
            environment.update({env: f"{TLS_DIR}/{file}" for env, file in TLS_FILES.items()})
            volumes = {self.tls.name: {"bind": TLS_DIR, "mode": "ro"}}
        else:
            command = [*command, "--insecure"]  # loopback's port only: see the docstring
        container = self.client.containers.run(
            self.image, name=f"{self.plan.name}-{name}", network=self.plan.name, detach=True,
            entrypoint=[*self.python, role], command=command, environment=environment,
            volumes=volumes, labels={**self.labels, "io.lockstep.role": role}, **LOCKED_DOWN,
            **kwargs,
        )  # fmt: skip
        log.info("started %s", container.name)
        return container

    def scheduler(self) -> Any:
        endpoint = self.client.api.create_endpoint_config(aliases=["scheduler"])
        return self._run(
            "scheduler",
            "scheduler",
            ["--host", "0.0.0.0", "--port", str(PORT)],
            ports={f"{PORT}/tcp": ("127.0.0.1", self.plan.port or None)},
            networking_config={self.plan.name: endpoint},
            **self.plan.limits(None).engine(),
        )

    def worker(self, executor: str, index: int) -> Any:
        name = f"worker-{executor.replace('_', '-')}-{index}"
        scheme = "tcp" if self.tls is None else "tls"
        return self._run(
            name,
            "worker",
            [f"{scheme}://scheduler:{PORT}", "--name", f"{self.plan.name}-{name}"],
            environment={EXECUTOR: executor},
            **self.plan.limits(executor).engine(),
        )
