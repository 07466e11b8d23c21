"""Dask scheduler preload (``--preload lockstep.runtime.preload_scheduler``): put the gate on.

``dask_setup`` loads the scheduler's manifest and installs the gate
(``lockstep.runtime.gate``: which workers and clients are admitted, and
why others are refused) and the ``lockstep_identity`` handler: the
scheduler's manifest, its ``LOCKSTEP_IMAGE``, the workers it admitted, the
clients it admitted, and the last refusals (each with its ``Refusal`` fields).

This wraps Dask-internal handlers and messages, so ``distributed`` is pinned;
``check_hooks`` verifies every one of them (and that Dask has no scheduler
handler the gate does not know) at start-up, and anything wrong (no manifest,
a Dask that changed) exits the scheduler: a scheduler that cannot guard must
not run. ``tests/runtime`` fails loudly if an upgrade breaks it.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from lockstep.core.errors import LockstepError
from lockstep.manifest import BuildManifest, load_manifest
from lockstep.runtime import health
from lockstep.runtime._logging import ensure_visible
from lockstep.runtime.config import image_from_env, scheduler_settings, tls_from_env
from lockstep.runtime.dask_handlers import REFUSED_OPS, REGISTER_OP, SUBMIT_OP, check_hooks
from lockstep.runtime.gate import Gate
from lockstep.runtime.identity import ANNOUNCE_KEY, EXECUTOR_KEY, HELLO_OP, IDENTITY_OP

log = logging.getLogger("lockstep.runtime.scheduler")


def install(scheduler: Any, manifest: BuildManifest, image: str | None = None) -> Gate:
    """Put the gates and the identity handler on ``scheduler``; ``RuntimeError`` if Dask changed.

    ``image`` is the scheduler's ``LOCKSTEP_IMAGE`` (informational), answered as is.
    """
    check_hooks(scheduler)
    gate = Gate(manifest, scheduler.handlers[REGISTER_OP], scheduler)
    scheduler.handlers[REGISTER_OP] = gate.register_worker

    scheduler.handle_stream = gate.wrap_stream(scheduler.handle_stream)
    gate.originals[SUBMIT_OP] = scheduler.stream_handlers[SUBMIT_OP]
    scheduler.stream_handlers[SUBMIT_OP] = gate.update_graph
    for op in REFUSED_OPS:
        gate.originals[op] = scheduler.handlers[op]
        scheduler.handlers[op] = gate.refuse_always(op)
    for op, handler in (
        ("broadcast", gate.broadcast),
        ("proxy", gate.proxy),
        ("scatter", gate.scatter),
    ):
        gate.originals[op] = scheduler.handlers[op]
        scheduler.handlers[op] = handler
    scheduler.handlers[HELLO_OP] = gate.hello

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
            "clients": gate.identity_of_clients(),
            "refused_clients": list(gate.refused_clients),
        }

    scheduler.handlers[IDENTITY_OP] = identity
    return gate


async def dask_setup(scheduler: Any) -> None:
    """Dask's preload hook: exits the process unless the gate is in place; then the
    probes (``runtime.health``: ready = the gate is installed and Dask runs)."""
    ensure_visible()
    log.info("%s", scheduler_settings())
    try:
        manifest = load_manifest()
        tls = tls_from_env()
    except LockstepError as exc:
        log.critical("lockstep scheduler cannot start: %s", exc.message)
        sys.exit(exc.exit_code)
    if tls is not None and not str(scheduler.address).startswith("tls://"):
        log.critical(
            "lockstep scheduler cannot start: %s is set but the scheduler listens on "
            "%s, not tls://; start it with `lockstep scheduler` (it adds the TLS "
            "options) or --protocol tls",
            tls.names(),
            scheduler.address,
        )
        sys.exit(2)
    try:
        install(scheduler, manifest, image_from_env())
    except RuntimeError as exc:
        from importlib.metadata import version

        log.critical(
            "lockstep scheduler cannot guard worker registration and clients on "
            "distributed %s (%s); use the pinned distributed version",
            version("distributed"),
            exc,
        )
        sys.exit(1)
    log.info(
        "lockstep scheduler ready: build %s version %s pid %d; admitting only workers "
        "and clients of this build%s",
        manifest.build_id,
        manifest.version,
        os.getpid(),
        " over mutual TLS" if tls is not None else "",
    )
    await health.start(
        scheduler, lambda: None if scheduler.status.name == "running" else scheduler.status.name
    )
