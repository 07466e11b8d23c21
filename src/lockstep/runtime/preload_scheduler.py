"""Dask scheduler preload (``--preload lockstep.runtime.preload_scheduler``): the gate.

Wraps ``scheduler.handlers["register-worker"]`` so that a worker is admitted
only if the manifest it announces (``startup_information["lockstep"]``,
canonical JSON) has the scheduler's own build id. A refused worker gets
``{"status": "error", "message": …}`` naming both builds: Dask makes it log the
message and exit non-zero, and it never joins, so it never gets a task — also
when it arrives long after the runner connected. (DESIGN.md §5; this touches
a Dask-internal message, so ``distributed`` is pinned and
``tests/runtime`` fails loudly if an upgrade breaks it.)

Also answers ``lockstep_identity`` (a pickle-free handler) with the
scheduler's manifest, its ``LOCKSTEP_IMAGE``, the workers it admitted and the
last refusals.
Anything wrong at start-up (no manifest, a Dask without the hook) exits the
scheduler: a scheduler that cannot guard must not run.
"""

from __future__ import annotations

import inspect
import logging
import os
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from lockstep.errors import LockstepError
from lockstep.manifest import BuildManifest, load_manifest
from lockstep.runtime._logging import ensure_visible
from lockstep.runtime.config import image_from_env, scheduler_settings
from lockstep.runtime.identity import (
    ANNOUNCE_KEY,
    EXECUTOR_KEY,
    IDENTITY_OP,
    admission_refusal,
)

log = logging.getLogger("lockstep.runtime.scheduler")
REGISTER_OP = "register-worker"
MAX_REFUSALS = 100


def check_hook(handler: Any) -> None:
    """Raise ``RuntimeError`` unless ``handler`` is the ``add_worker`` our gate was built for."""
    name = getattr(handler, "__name__", repr(handler))
    if name != "add_worker":
        raise RuntimeError(f"scheduler.handlers[{REGISTER_OP!r}] is {name}, not add_worker")
    params = inspect.signature(handler).parameters
    missing = {"comm", "address", "extra"} - set(params)
    if missing:
        raise RuntimeError(f"Scheduler.add_worker has no parameter(s) {', '.join(sorted(missing))}")
    if next(iter(params)) != "comm":
        raise RuntimeError("Scheduler.add_worker no longer takes the comm first")


class Gate:
    """The wrapped ``register-worker`` handler and the record of whom it refused."""

    def __init__(self, manifest: BuildManifest, original: Callable[..., Awaitable[Any]]) -> None:
        self.manifest = manifest
        self.original = original
        self.refused: deque[dict[str, Any]] = deque(maxlen=MAX_REFUSALS)

    async def register_worker(self, comm: Any, **msg: Any) -> Any:
        """Dask's handler signature: ``comm`` first, the message's fields as keywords."""
        address = str(msg.get("address"))
        extra = msg.get("extra") or {}
        announced = extra.get(ANNOUNCE_KEY) if isinstance(extra, dict) else None
        refusal = admission_refusal(self.manifest, address, announced)
        if refusal is None:
            return await self.original(comm, **msg)
        log.warning("%s", refusal)
        self.refused.append(
            {
                "address": address,
                "message": refusal,
                "time": time.time(),
                "executor": str(extra.get(EXECUTOR_KEY, "-")) if isinstance(extra, dict) else "-",
            }
        )
        await comm.write({"status": "error", "message": refusal, "time": time.time()})
        return None


def install(scheduler: Any, manifest: BuildManifest, image: str | None = None) -> Gate:
    """Put the gate and the identity handler on ``scheduler``; ``RuntimeError`` if Dask changed.

    ``image`` is the scheduler's ``LOCKSTEP_IMAGE`` (informational), answered as is.
    """
    original = scheduler.handlers.get(REGISTER_OP)
    check_hook(original)
    gate = Gate(manifest, original)
    scheduler.handlers[REGISTER_OP] = gate.register_worker

    def identity() -> dict[str, Any]:
        workers = [
            {
                "address": ws.address,
                "manifest": ws.extra.get(ANNOUNCE_KEY),
                "executor": ws.extra.get(EXECUTOR_KEY, "-"),
                "status": ws.status.name,
            }
            for ws in scheduler.workers.values()
        ]
        return {
            "manifest": manifest.to_json().decode(),
            "pid": os.getpid(),
            "address": scheduler.address,
            "image": image,
            "workers": workers,
            "refused": list(gate.refused),
        }

    scheduler.handlers[IDENTITY_OP] = identity
    return gate


def dask_setup(scheduler: Any) -> None:
    """Dask's preload hook: exits the process unless the gate is in place."""
    ensure_visible()
    log.info("%s", scheduler_settings())
    try:
        manifest = load_manifest()
    except LockstepError as exc:
        log.critical("lockstep scheduler cannot start: %s", exc.message)
        sys.exit(exc.exit_code)
    try:
        install(scheduler, manifest, image_from_env())
    except RuntimeError as exc:
        from importlib.metadata import version

        log.critical(
            "lockstep scheduler cannot guard worker registration on distributed %s "
            "(%s); use the pinned distributed version",
            version("distributed"),
            exc,
        )
        sys.exit(1)
    log.info(
        "lockstep scheduler ready: build %s version %s pid %d; admitting only workers "
        "of this build",
        manifest.build_id,
        manifest.version,
        os.getpid(),
    )
