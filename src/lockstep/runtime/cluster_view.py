"""Reading a live cluster: how the runner's ``connect`` and ``lockstep doctor`` see it.

One client (``open_client``, mutual TLS with ``LOCKSTEP_TLS_*``), pickle-free
questions (``call`` the scheduler's ``lockstep_identity``, ``ask_workers``
theirs through its ``broadcast``), and the answers turned into ``Member``
rows compared with a reference build (``scheduler_member``,
``listed_member``, ``worker_member``). Nothing here decides what to do
about a difference: ``lockstep.runtime.cluster`` refuses to submit,
``lockstep.runtime.doctor`` reports.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from lockstep.core.errors import BadInput, LockstepError, ServiceFailed
from lockstep.core.settings import TLS_CA_FILE
from lockstep.manifest import BuildManifest
from lockstep.runtime import reach
from lockstep.runtime.config import TLS_ENVS, tls_from_env
from lockstep.runtime.identity import IDENTITY_OP, Member, read_announced


def open_client(address: str, timeout: float) -> Any:
    """A ``distributed.Client`` for ``address``; ``ServiceFailed`` if it is unreachable in time,
    or something other than a Dask scheduler answers there (``lockstep.runtime.reach``).

    Mutual TLS if ``LOCKSTEP_TLS_*`` are set (``BadInput`` if they are bad, or the address
    is not ``tls://``).
    """
    from distributed import Client

    tls = tls_from_env()
    kwargs: dict[str, Any] = {}
    if tls is not None:
        if not address.startswith("tls://"):
            raise BadInput(
                f"scheduler address {address!r}: {', '.join(TLS_ENVS)} are set, so "
                "the cluster speaks mutual TLS only; write it like "
                "tls://host:8786"
            )
        kwargs["security"] = tls.client_security()
    start = time.monotonic()
    reach.wait_for_scheduler(address, timeout, tls)  # Dask's connect has no bound on its own
    left = max(timeout - (time.monotonic() - start), 1.0)
    try:
        return Client(address, timeout=left, **kwargs)  # type: ignore[no-untyped-call]
    except (OSError, TimeoutError) as exc:
        hint = (
            f" (with TLS: is the scheduler's certificate signed by {TLS_CA_FILE}, "
            "and ours by the scheduler's CA?)"
            if tls is not None
            else ""
        )
        raise ServiceFailed(
            f"scheduler {address} unreachable after {timeout:g} s ({exc}){hint}; "
            "check the address and that `lockstep scheduler` runs there"
        ) from exc
    except ValueError as exc:
        raise BadInput(
            f"scheduler address {address!r}: {exc}; write it like tcp://host:8786"
        ) from exc


WRONG = ("other build", "bad manifest", "no manifest")  # statuses of a process not of the build


def call(client: Any, fn: Callable[..., Any], deadline: float, address: str, **kwargs: Any) -> Any:
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


def ask_workers(client: Any, addresses: Sequence[str], deadline: float, address: str) -> Any:
    """Each worker's own ``lockstep_identity`` answer, by address, through the scheduler at
    ``address`` (a worker that does not answer is left out)."""
    return call(
        client,
        client.scheduler.broadcast,
        deadline,
        address,
        msg={"op": IDENTITY_OP},
        workers=list(addresses),
        on_error="ignore",
    )


def scheduler_member(address: str, info: Any, own: BuildManifest) -> Member:
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


def listed_member(entry: Mapping[str, Any], own: BuildManifest) -> Member:
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


def worker_member(listed: Member, answer: Any, own: BuildManifest) -> Member:
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
