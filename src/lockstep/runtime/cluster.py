"""``connect``: the runner's side of the handshake, before anything is submitted.

The runner compares its own build (its manifest) with the scheduler's and
with every worker's, asking each through pickle-free handlers
(``lockstep_identity`` on the scheduler, and on the workers through the
scheduler's ``broadcast``): plain strings and numbers in msgpack, never an
object from another build. Any difference raises ``IncompatibleClusterError``
with a table (address, role, version, build id, executor); then it waits until
at least ``n_workers`` workers of its build are ready, and says hello:
``lockstep_hello`` with its manifest (canonical JSON) and its ``client.id``, so
that the scheduler's client gate lets this client submit tasks (a plain
``distributed.Client`` cannot; ``lockstep.runtime.preload_scheduler``). The
scheduler answers a token (``admission_token``) that the runner adds to the
job bundle messages it relays.

It reads the cluster through ``lockstep.runtime.cluster_view`` (as the doctor
does); with ``LOCKSTEP_TLS_*`` set (``lockstep.runtime.config``), every client
it opens uses mutual TLS and only a ``tls://`` address.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import time
import weakref
from typing import Any

from lockstep.core.errors import BadInput, ServiceFailed
from lockstep.manifest import BuildManifest, load_manifest
from lockstep.runtime.cluster_view import (
    WRONG,
    ask_workers,
    call,
    listed_member,
    open_client,
    scheduler_member,
    worker_member,
)
from lockstep.runtime.identity import (
    HELLO_OP,
    IDENTITY_OP,
    TOKEN_KEY,
    ClusterNotReady,
    ClusterReport,
    IncompatibleClusterError,
    Member,
    Refusal,
)

log = logging.getLogger(__name__)
POLL_SECONDS = 0.1


_TOKENS: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


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
        hello(client, own, max(timeout - (time.monotonic() - start), 1.0))
    except BaseException:
        client.close()
        raise
    return client


def hello(client: Any, manifest: BuildManifest, timeout: float = 30.0) -> str:
    """Say ``lockstep_hello`` to the scheduler so ``client`` may submit; the token answered.

    Raises ``IncompatibleClusterError`` (exit 1) if the scheduler refuses.
    """
    address = str(client.scheduler.address)
    deadline = time.monotonic() + timeout
    try:
        say = functools.partial(getattr(client.scheduler, HELLO_OP), client=client.id)
        answer = call(client, say, deadline, address, manifest=manifest.to_json().decode())
    except PermissionError as exc:
        raise IncompatibleClusterError(
            f"scheduler {address} refused this runner's hello: {exc}"
        ) from exc
    if not isinstance(answer, dict) or not isinstance(answer.get("token"), str):
        raise ServiceFailed(
            f"scheduler {address} answered {HELLO_OP} with {answer!r}, not a "
            "token; run the scheduler from the runner's build"
        )
    _TOKENS[client] = str(answer["token"])
    log.info("lockstep cluster %s: this runner (client %s) may submit", address, client.id)
    return str(answer["token"])


def admission_token(client: Any) -> str | None:
    """The token the scheduler answered to ``client``'s hello (``connect``); None if none."""
    return _TOKENS.get(client)


def with_token(client: Any, msg: dict[str, Any]) -> dict[str, Any]:
    """``msg`` for the scheduler's ``broadcast``, with ``client``'s token if it has one."""
    token = admission_token(client)
    return {**msg, TOKEN_KEY: token} if token else dict(msg)


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
        info = call(client, getattr(client.scheduler, IDENTITY_OP), deadline, address)
        scheduler = scheduler_member(address, info, manifest)
        listed = info.get("workers", []) if isinstance(info, dict) else []
        workers = [listed_member(w, manifest) for w in listed]
        if not scheduler.ok:
            raise IncompatibleClusterError(
                _mismatch_summary(manifest, scheduler, address), [runner, scheduler, *workers]
            )
        if probe_workers and listed:
            addresses = [str(w["address"]) for w in listed]
            answers = ask_workers(client, addresses, deadline, address)
            workers = [
                worker_member(w, answers.get(w.address), manifest) if w.ok else w for w in workers
            ]
        members = (runner, scheduler, *workers)
        wrong = [w for w in workers if w.status.startswith(WRONG)]
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
        shown = [_refusal_text(r) for r in refused[-3:]]
        text += f"; the scheduler refused {len(refused)} worker(s), last: " + " | ".join(shown)
    return text + "; start more workers of this build or raise the timeout"


def _refusal_text(entry: Any) -> str:
    """One refusal the scheduler recorded, as the gate rendered it."""
    refusal = Refusal.from_wire(entry.get("refusal") if isinstance(entry, dict) else None)
    return refusal.text if refusal is not None else str(entry)
