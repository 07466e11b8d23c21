"""``connect``: the runner's side of the handshake, before anything is submitted.

The runner compares its own build (its manifest) with the scheduler's and
with every worker's, asking each through pickle-free handlers
(``lockstep_identity`` on the scheduler, and on the workers through the
scheduler's ``broadcast``): plain strings and numbers in msgpack, never an
object from another build. Any difference raises ``IncompatibleClusterError``
with a table (address, role, version, build id, executor); then it waits until
at least ``n_workers`` workers of its build are ready.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any

from lockstep.errors import BadInput, LockstepError, ServiceFailed
from lockstep.manifest import BuildManifest, load_manifest
from lockstep.runtime.identity import (
    IDENTITY_OP,
    ClusterNotReady,
    ClusterReport,
    IncompatibleClusterError,
    Member,
    read_announced,
)

log = logging.getLogger(__name__)
POLL_SECONDS = 0.1


def open_client(address: str, timeout: float) -> Any:
    """A ``distributed.Client`` for ``address``; ``ServiceFailed`` if it is unreachable in time."""
    from distributed import Client

    try:
        return Client(address, timeout=timeout)  # type: ignore[no-untyped-call]
    except (OSError, TimeoutError) as exc:
        raise ServiceFailed(
            f"scheduler {address} unreachable after {timeout:g} s ({exc}); "
            "check the address and that `lockstep scheduler` runs there"
        ) from exc
    except ValueError as exc:
        raise BadInput(
            f"scheduler address {address!r}: {exc}; write it like tcp://host:8786"
        ) from exc


def connect(
    address: str,
    n_workers: int = 1,
    timeout: float = 30.0,
    manifest: BuildManifest | None = None,
    probe_workers: bool = False,
) -> Any:
    """A connected ``Client``, once scheduler and ≥ ``n_workers`` ready workers match our build.

    ``manifest`` is the runner's own (default: ``$LOCKSTEP_MANIFEST``). Raises
    ``IncompatibleClusterError`` (exit 1) on any other build,
    ``ClusterNotReady`` (exit 3) if too few workers are ready within
    ``timeout`` seconds, ``ServiceFailed`` (exit 3) if the scheduler is
    unreachable. ``timeout`` bounds the whole call. See ``check_cluster`` for
    ``probe_workers``.
    """
    own = manifest or load_manifest()
    start = time.monotonic()
    client = open_client(address, timeout)
    try:
        remaining = max(timeout - (time.monotonic() - start), 0.0)
        check_cluster(
            client, own, n_workers=n_workers, timeout=remaining, probe_workers=probe_workers
        )
    except BaseException:
        client.close()
        raise
    return client


def check_cluster(
    client: Any,
    manifest: BuildManifest,
    n_workers: int = 0,
    timeout: float = 30.0,
    probe_workers: bool = False,
    log_ready: bool = True,
) -> ClusterReport:
    """Check the cluster behind ``client`` against ``manifest``; wait for ``n_workers`` ready.

    The scheduler answers with its own manifest and, for each worker, the
    manifest that worker announced when it registered (which the gate
    checked) — one call. ``probe_workers`` also asks every worker directly
    (the scheduler's ``broadcast``), which costs a connection per worker.
    A worker counts as ready when the scheduler has it running: it registers
    only once its executor has started. See ``connect`` for what it raises.
    ``log_ready=False`` leaves out the "N worker(s) ready" log line (for a
    caller that checks again after ``connect``, which logged it already).
    """
    if n_workers < 0:
        raise BadInput(f"n_workers must be ≥ 0, not {n_workers}")
    deadline = time.monotonic() + timeout
    runner = Member.of(f"{socket.gethostname()} pid {os.getpid()}", "runner", manifest)
    address = str(client.scheduler.address)
    while True:
        info = _call(client, client.scheduler.lockstep_identity, deadline, address)
        scheduler = _scheduler_member(address, info, manifest)
        listed = info.get("workers", []) if isinstance(info, dict) else []
        workers = [_listed_member(w, manifest) for w in listed]
        if not scheduler.ok:
            raise IncompatibleClusterError(
                _mismatch_summary(manifest, scheduler, address), [runner, scheduler, *workers]
            )
        if probe_workers and listed:
            addresses = [str(w["address"]) for w in listed]
            answers = _call(
                client,
                client.scheduler.broadcast,
                deadline,
                address,
                msg={"op": IDENTITY_OP},
                workers=addresses,
                on_error="ignore",
            )
            workers = [
                _worker_member(w, answers.get(w.address), manifest) if w.ok else w for w in workers
            ]
        members = (runner, scheduler, *workers)
        wrong = [w for w in workers if w.status.startswith(_WRONG)]
        if wrong:
            named = ", ".join(
                f"{w.address} ({w.status}: build {w.build_id} version {w.version})" for w in wrong
            )
            raise IncompatibleClusterError(
                f"{len(wrong)} worker(s) at {address} are not build {manifest.build_id} "
                f"version {manifest.version} of this runner: {named}; refusing to submit",
                members,
            )
        ready = [w for w in workers if w.ok]
        if len(ready) >= n_workers:
            if log_ready:
                log.info(
                    "lockstep cluster %s: build %s, %d worker(s) ready",
                    address,
                    manifest.build_id,
                    len(ready),
                )
            return ClusterReport(members)
        if time.monotonic() >= deadline:
            raise ClusterNotReady(
                _not_ready_summary(address, n_workers, timeout, workers, info.get("refused", [])),
                members,
            )
        time.sleep(POLL_SECONDS)


_WRONG = ("other build", "bad manifest", "no manifest")


def _call(client: Any, fn: Callable[..., Any], deadline: float, address: str, **kwargs: Any) -> Any:
    remaining = deadline - time.monotonic()
    try:
        return client.sync(fn, callback_timeout=max(remaining, 1.0), **kwargs)
    except LockstepError:
        raise
    except (OSError, TimeoutError) as exc:
        raise ServiceFailed(
            f"scheduler {address} did not answer the lockstep handshake "
            f"({type(exc).__name__}: {exc}); check that it runs "
            "`lockstep scheduler`"
        ) from exc


def _scheduler_member(address: str, info: Any, own: BuildManifest) -> Member:
    if not isinstance(info, dict) or "manifest" not in info:
        return Member.unknown(
            address, "scheduler", "no lockstep gate (not started with `lockstep scheduler`)"
        )
    try:
        theirs = read_announced(info["manifest"], f"scheduler {address}")
    except BadInput as exc:
        return Member.unknown(address, "scheduler", f"bad manifest: {exc.message}")
    status = "ok" if theirs.build_id == own.build_id else "other build"
    return Member.of(address, "scheduler", theirs, status=status)


def _listed_member(entry: Mapping[str, Any], own: BuildManifest) -> Member:
    """A worker as the scheduler lists it, with the manifest it announced at registration."""
    address = str(entry.get("address"))
    executor = str(entry.get("executor") or "-")
    try:
        theirs = read_announced(entry.get("manifest"), f"worker {address}")
    except BadInput:
        return Member.unknown(address, "worker", "no manifest", executor)
    if theirs.build_id != own.build_id:
        return Member.of(address, "worker", theirs, executor, "other build")
    state = str(entry.get("status", "running"))
    status = "ok" if state == "running" else f"not ready ({state})"
    return Member.of(address, "worker", theirs, executor, status)


def _worker_member(listed: Member, answer: Any, own: BuildManifest) -> Member:
    """A worker as it answered ``lockstep_identity`` itself (``probe_workers``)."""
    address = listed.address
    if not isinstance(answer, dict) or "manifest" not in answer:
        return Member.unknown(
            address, "worker", "not ready (no answer to lockstep_identity)", listed.executor
        )
    executor = str(answer.get("executor") or "-")
    try:
        theirs = read_announced(answer["manifest"], f"worker {address}")
    except BadInput as exc:
        return Member.unknown(address, "worker", f"bad manifest: {exc.message}", executor)
    if theirs.build_id != own.build_id:
        return Member.of(address, "worker", theirs, executor, "other build")
    if not answer.get("ready"):
        return Member.of(address, "worker", theirs, executor, "not ready (executor starting)")
    return Member.of(address, "worker", theirs, executor)


def _mismatch_summary(own: BuildManifest, scheduler: Member, address: str) -> str:
    if scheduler.status == "other build":
        return (
            f"runner is build {own.build_id} version {own.version} but scheduler {address} "
            f"is build {scheduler.build_id} version {scheduler.version}; refusing to submit: "
            "run the runner from the same build as the cluster"
        )
    return f"scheduler {address}: {scheduler.status}; refusing to submit"


def _not_ready_summary(
    address: str, n_workers: int, timeout: float, workers: list[Member], refused: list[Any]
) -> str:
    ready = sum(w.ok for w in workers)
    text = (
        f"only {ready} of {n_workers} required worker(s) of this build ready at {address} "
        f"after {timeout:g} s"
    )
    waiting = [f"{w.address} ({w.status})" for w in workers if not w.ok]
    if waiting:
        text += "; not ready: " + ", ".join(waiting)
    if refused:
        shown = [str(r.get("message", r)) if isinstance(r, dict) else str(r) for r in refused[-3:]]
        text += f"; the scheduler refused {len(refused)} worker(s), last: " + " | ".join(shown)
    return text + "; start more workers of this build or raise the timeout"
