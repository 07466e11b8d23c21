"""Containers for the incident's replay (``tests/test_replay.py``).

``Replay`` owns one private user-defined network in the test run's dockerd
and every container started on it. Every container runs as user 65532, with
a read-only root filesystem and a tmpfs ``/tmp``, attached only to that
network (the engine runs with ``--bridge=none --iptables=false``, so the
containers reach each other by name and nothing else). ``close()`` removes
them, and then the network, by id.

Waits are bounded; a failed wait says what it waited for and shows the
container's log.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import re
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker.errors
import requests.exceptions

from tests.engine import DockerEngine

PYTHON = "/usr/bin/python3.11"
LOCKSTEP = [PYTHON, "-m", "lockstep"]
SCHEDULER = "tcp://scheduler:8786"
JOBS = "/job"  # where the examples directory is mounted, read-only
LOCKED_DOWN: dict[str, Any] = {"user": "65532", "read_only": True, "tmpfs": {"/tmp": ""}}


@dataclass(frozen=True)
class Finished:
    """A container that ran to its end."""

    name: str
    code: int
    stdout: str
    stderr: str

    def describe(self) -> str:
        return (
            f"container {self.name} exited {self.code}\n--- stdout\n{self.stdout[-4000:]}"
            f"\n--- stderr\n{self.stderr[-6000:]}"
        )


def log_text(container: Any, **kwargs: Any) -> str:
    with contextlib.suppress(docker.errors.APIError):
        return bytes(container.logs(**kwargs)).decode(errors="replace")
    return "(no log)"


def wait_exit(container: Any, timeout: float, what: str = "") -> Finished:
    """Wait for ``container`` to exit; its code and both streams. Fails with its log on timeout."""
    try:
        status = container.wait(timeout=timeout)
    except (requests.exceptions.RequestException, docker.errors.APIError) as exc:
        raise AssertionError(
            f"container {container.name} {what} still running after {timeout} s "
            f"({type(exc).__name__}); its log:\n{log_text(container)[-6000:]}"
        ) from None
    return Finished(
        container.name,
        int(status["StatusCode"]),
        log_text(container, stdout=True, stderr=False),
        log_text(container, stdout=False, stderr=True),
    )


def wait_for_log(container: Any, pattern: str, timeout: float) -> re.Match[str]:
    """The first match of ``pattern`` in the container's log; fails if it exits or times out."""
    deadline = time.monotonic() + timeout
    while True:
        text = log_text(container)
        found = re.search(pattern, text)
        if found:
            return found
        container.reload()
        if container.status in ("exited", "dead"):
            raise AssertionError(
                f"container {container.name} exited "
                f"{container.attrs['State']['ExitCode']} before {pattern!r}; "
                f"its log:\n{text[-6000:]}"
            )
        if time.monotonic() > deadline:
            raise AssertionError(
                f"no {pattern!r} from container {container.name} after "
                f"{timeout} s; its log:\n{text[-6000:]}"
            )
        time.sleep(0.1)


def _instant(stamp: str) -> datetime.datetime:
    """Docker's RFC 3339 time with nanoseconds, to microseconds."""
    main, _, frac = stamp.rstrip("Z").partition(".")
    return datetime.datetime.fromisoformat(f"{main}.{(frac + '000000')[:6]}+00:00")


def seconds_to_line(container: Any, pattern: str) -> float:
    """Seconds from the engine starting ``container`` to its first log line matching ``pattern``.

    Both instants are the engine's own (``State.StartedAt`` and the log's timestamp).
    """
    container.reload()
    started = _instant(container.attrs["State"]["StartedAt"])
    for line in log_text(container, timestamps=True).splitlines():
        stamp, _, text = line.partition(" ")
        if re.search(pattern, text):
            return (_instant(stamp) - started).total_seconds()
    raise AssertionError(f"no {pattern!r} in the log of {container.name}")


@dataclass
class Replay:
    """A private network in ``engine`` and the containers started on it."""

    engine: DockerEngine
    examples: Path  # mounted read-only at /job in runner containers
    tag: str = field(default_factory=lambda: secrets.token_hex(4))
    network: Any = None
    containers: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.network = self.engine.client.networks.create(
            f"replay-{self.tag}",
            driver="bridge",
            internal=True,
            labels={"io.lockstep.test": "replay"},
        )

    @property
    def client(self) -> Any:
        return self.engine.client

    def start(
        self,
        name: str,
        image: str,
        command: list[str],
        *,
        entrypoint: list[str] | None = None,
        env: dict[str, str] | None = None,
        alias: str | None = None,
        mount_examples: bool = False,
    ) -> Any:
        """Start a locked-down container on the network (not waited for)."""
        network = self.network.name
        endpoint = self.client.api.create_endpoint_config(aliases=[alias] if alias else None)
        container = self.client.containers.create(
            image,
            command,
            entrypoint=entrypoint,
            environment=env or {},
            name=f"replay-{self.tag}-{name}",
            network=network,
            networking_config={network: endpoint},
            volumes=(
                {str(self.examples): {"bind": JOBS, "mode": "ro"}} if mount_examples else None
            ),
            labels={"io.lockstep.test": "replay"},
            **LOCKED_DOWN,
        )
        self.containers.append(container)
        container.start()
        return container

    def lockstep(self, name: str, image: str, *args: str, timeout: float = 180) -> Finished:
        """``python3.11 -m lockstep ARGS`` in a container of ``image``, run to its end."""
        container = self.start(name, image, list(args), entrypoint=LOCKSTEP, mount_examples=True)
        return wait_exit(container, timeout, f"(lockstep {' '.join(args)})")

    def doctor(self, image: str, name: str) -> tuple[Finished, dict[str, Any]]:
        """``lockstep doctor --json`` in a container of ``image``; its run and its document."""
        done = self.lockstep(name, image, "doctor", "--scheduler", SCHEDULER, "--json", timeout=120)
        assert done.code in (0, 1), done.describe()
        try:
            return done, dict(json.loads(done.stdout))
        except ValueError:
            raise AssertionError(f"doctor printed no JSON\n{done.describe()}") from None

    def close(self) -> None:
        for container in reversed(self.containers):
            with contextlib.suppress(docker.errors.APIError):
                container.remove(force=True)
        with contextlib.suppress(docker.errors.APIError):
            self.network.remove()
