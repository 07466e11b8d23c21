"""The handshake's proof on a worker's own port: its lockstep operations obey only the scheduler.

A worker makes a random secret when it starts and announces it with its
manifest (``startup_information``) on the connection it opens to the
scheduler. The scheduler's gate takes it out of the registration before Dask
stores it (so no ``identity`` answer shows it), keeps it for the worker it
admitted, and adds it (``PROOF_FIELD``) to every lockstep operation it relays
to that worker (``broadcast``/``proxy``, themselves allowed only with a
runner's hello token). The worker's handlers of ``GUARDED_OPS`` — storing a
bundle, importing it, storing wheels, making or pulling an environment — refuse
any message without the proof: a process that reaches the worker's port
directly, or a forged worker that knows only its own secret, gets one line and
nothing is done. Read-only identity (``lockstep_identity``, ``lockstep_bundle_has``)
stays open: it reveals the build and executor, which the manifest in the image
already does, and ``lockstep doctor`` reads it.

What this does not cover: Dask's own worker protocol (``get_data``,
``update_data``, ``compute-task`` on the scheduler's stream) is unauthenticated
and unpickles what it receives. Keeping strangers off the port is mutual TLS;
without it, lockstep listens on loopback only unless told ``--insecure``
(``runtime/protected.py``).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from lockstep.bundles.protocol import STORING_OPS

log = logging.getLogger("lockstep.runtime.worker")
PROOF_KEY = "lockstep-proof"  # startup_information key: the worker's secret, for its scheduler
PROOF_FIELD = "lockstep_proof"  # the field the scheduler adds to a relayed operation
# Worker ops that store or import code (``bundles.protocol``): relayed only with a hello's
# token (``dask_handlers.TOKEN_RELAY_OPS``), run only with the proof.
GUARDED_OPS = STORING_OPS


def new_secret() -> str:
    return secrets.token_hex(32)


def proven(msg: dict[str, Any], secret: str) -> bool:
    given = msg.get(PROOF_FIELD)
    return isinstance(given, str) and secrets.compare_digest(given, secret)


def guard(worker: Any, ops: frozenset[str], secret: str) -> None:
    """Wrap ``worker.handlers[op]`` for each op in ``ops`` so that it runs only with the
    proof; ``RuntimeError`` if one is missing (the preload installs them first)."""
    for op in sorted(ops):
        worker.handlers[op] = _guarded(op, worker.handlers[op], worker, secret)


def _guarded(op: str, handler: Any, worker: Any, secret: str) -> Any:
    wants_comm = "comm" in inspect.signature(handler).parameters

    async def guarded(comm: Any = None, **msg: Any) -> Any:
        if not proven(msg, secret):
            raise PermissionError(refusal(worker.address, op, comm))
        msg.pop(PROOF_FIELD)
        result = handler(comm=comm, **msg) if wants_comm else handler(**msg)
        return await result if inspect.isawaitable(result) else result

    guarded.__name__ = f"lockstep_proven_{op}"
    return guarded


def refusal(address: str, op: str, comm: Any) -> str:
    peer = getattr(comm, "peer_address", None) or "?"
    message = (
        f"lockstep worker {address} refused {op} from {peer}: it lacks the handshake's "
        "proof; lockstep operations reach a worker only through its scheduler, from a "
        "runner that said hello (lockstep.runtime.connect())"
    )
    log.warning("%s", message)
    return message


# --- the scheduler's side ------------------------------------------------------------------


def take_secret(msg: dict[str, Any]) -> str | None:
    """The worker's secret from a ``register-worker`` message, removed from it (so Dask
    never stores or shows it); None if it has none."""
    extra = msg.get("extra")
    if not isinstance(extra, dict) or PROOF_KEY not in extra:
        return None
    msg["extra"] = {k: v for k, v in extra.items() if k != PROOF_KEY}
    secret = extra[PROOF_KEY]
    return secret if isinstance(secret, str) else None


async def relay(
    broadcast: Callable[..., Awaitable[dict[str, Any]]],
    proofs: Mapping[str, str],
    scheduler: Any,
    kwargs: dict[str, Any],
) -> dict[str, Any]:
    """Dask's ``broadcast`` of ``kwargs["msg"]``, once per worker with that worker's proof
    (a worker without one gets none, and refuses)."""
    msg = kwargs.pop("msg")
    workers, hosts = kwargs.pop("workers", None), kwargs.pop("hosts", None)
    targets = list(scheduler.workers) if workers is None and hosts is None else list(workers or ())
    for host in hosts or ():
        targets.extend((scheduler.host_info.get(host) or {}).get("addresses", ()))
    answers = await asyncio.gather(
        *(
            broadcast(msg={**msg, PROOF_FIELD: proofs.get(w, "")}, workers=[w], **kwargs)
            for w in dict.fromkeys(targets)
        )
    )
    merged: dict[str, Any] = {}
    for answer in answers:
        merged.update(answer)
    return merged
