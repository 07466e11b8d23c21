"""The scheduler's gate: the wrapped Dask handlers that admit only this build, and its record.

``lockstep.runtime.preload_scheduler`` installs it.

**Workers.** Wraps ``scheduler.handlers["register-worker"]`` so that a worker
is admitted only if the manifest it announces
(``startup_information["lockstep"]``, canonical JSON) has the scheduler's own
build id. A refused worker gets ``{"status": "error", "message": …,
"refusal": …}``: the ``identity.Refusal`` as text (naming both builds) and as
fields. Dask makes it log the message and exit non-zero (``lockstep worker``
shows the refusal's text), and it never joins, so it never gets a task — also
when it arrives long after the runner connected.

**Clients.** A ``distributed.Client`` can do more than submit tasks: run any
function on every worker (``Client.run``: the ``broadcast`` op with
``{"op": "run"}``) or on the scheduler (``run_function``), and register
plugins that reconfigure workers — the incident's own mechanism (a runner of
an old image swapped the workers' executor through a pickled plugin). So:

- *Submitting* (the ``update-graph`` stream message) and ``scatter`` are
  admitted only from a client that said hello: ``lockstep_hello(manifest,
  client)`` (pickle-free; ``lockstep.runtime.connect()`` calls it) with the
  manifest of the scheduler's own build (canonical JSON, at most 64 KiB) and
  its ``client.id``. The scheduler binds the admission to that client's
  *stream connection* as it is at the hello (and refuses a hello from another
  host than that connection's), and answers a token. An ``update-graph`` is
  let through only if it arrives on that very connection and does not name
  another client id in its message (Dask lets a message's fields override the
  connection's, so a forged ``client`` field is refused). A client that
  reconnects must say hello again (``connect()`` again).
- *Running functions and plugins* are refused for **every** client, hello or
  not: ``run_function`` (``Client.run_on_scheduler``), ``feed``, the
  register/unregister handlers of worker, nanny and scheduler plugins
  (``Client.register_plugin``, ``unregister_worker_plugin``…, ``upload_file``),
  ``dump_cluster_state_to_url``, and ``broadcast``/``proxy`` of any op but
  the pickle-free read-only ones (``lockstep_identity``, ``lockstep_bundle_has``,
  ``identity``, ``versions``, ``ping``) — ``Client.run`` included. lockstep
  configures a worker only from its own image and environment; nothing of
  it comes from a client (docs/design.md §1). The job bundle handlers that store
  or import code (``lockstep_bundle_put``, ``lockstep_bundle_check``) are
  relayed only with the token of a hello.
- *Read-only inspection stays open* to anyone who can connect:
  ``lockstep_identity`` (what ``lockstep doctor`` and ``connect`` read),
  ``identity``, ``versions``, the task and worker listings. Admin ops that
  do not run client code (``restart``, ``retire_workers``, ``terminate``…)
  stay Dask's.

Each refusal reaches the client as a ``PermissionError`` that says what was
refused, why, and what to do (for a submission: the futures' exception). The
scheduler keeps the last 100 refused clients (client id, address, what it
tried, when, and a refused hello's ``Refusal`` fields) and answers them in
``lockstep_identity`` (``refused_clients``); ``lockstep doctor`` lists them
and exits 1.

**What this is not.** The hello checks a *claim*: a build's manifest is no
secret (``lockstep_identity`` answers it), and a worker also unpickles what
arrives on its own port. The gate stops a process that speaks Dask in good
faith — a runner of another build, a notebook's plain ``Client`` — from
running code or reconfiguring the cluster. Keeping hostile processes out is
mutual TLS (``LOCKSTEP_TLS_*``, ``lockstep.runtime.config``): without the
cluster's certificate a process cannot connect at all.
"""

from __future__ import annotations

import contextvars
import logging
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from lockstep.manifest import BuildManifest
from lockstep.runtime import worker_proof
from lockstep.runtime.dask_handlers import (
    MAX_CLIENT_ID,
    MAX_REFUSALS,
    OPEN_RELAY_OPS,
    REFUSED_WHAT,
    SUBMIT_OP,
    TOKEN_RELAY_OPS,
)
from lockstep.runtime.identity import (
    ANNOUNCE_KEY,
    EXECUTOR_KEY,
    HELLO_OP,
    TOKEN_KEY,
    Refusal,
    admission_refusal,
    hello_refusal,
)

log = logging.getLogger("lockstep.runtime.scheduler")

_STREAM: contextvars.ContextVar[tuple[Any, dict[str, Any]] | None] = contextvars.ContextVar(
    "lockstep_stream", default=None
)


def _peer(comm: Any) -> str:
    return str(getattr(comm, "peer_address", None) or "?")


def _host(address: str) -> str:
    from distributed.comm.addressing import get_address_host

    try:
        return str(get_address_host(address))
    except ValueError:
        return address


@dataclass
class Admission:
    """A client that said hello: bound to its stream connection as it was then."""

    client: str
    comm: Any
    token: str
    time: float

    def live(self, scheduler: Any) -> bool:
        bcomm = scheduler.client_comms.get(self.client)
        current: Any = getattr(bcomm, "comm", None)
        return current is not None and current is self.comm and not current.closed()


class Gate:
    """The wrapped handlers and the record of whom they refused."""

    def __init__(
        self,
        manifest: BuildManifest,
        original: Callable[..., Awaitable[Any]],
        scheduler: Any = None,
    ) -> None:
        self.manifest = manifest
        self.original = original
        self.scheduler = scheduler
        self.refused: deque[dict[str, Any]] = deque(maxlen=MAX_REFUSALS)
        self.refused_clients: deque[dict[str, Any]] = deque(maxlen=MAX_REFUSALS)
        self.admitted: dict[str, Admission] = {}
        self.originals: dict[str, Callable[..., Any]] = {}
        self.proofs: dict[str, str] = {}  # worker address -> its secret (``worker_proof``)

    # --- workers ------------------------------------------------------------------------------

    async def register_worker(self, comm: Any, **msg: Any) -> Any:
        """Dask's handler signature: ``comm`` first, the message's fields as keywords."""
        address = str(msg.get("address"))
        secret = worker_proof.take_secret(msg)
        extra = msg.get("extra") or {}
        announced = extra.get(ANNOUNCE_KEY) if isinstance(extra, dict) else None
        refusal = admission_refusal(self.manifest, address, announced)
        if refusal is None:
            if secret is not None:
                self.proofs[address] = secret
            return await self.original(comm, **msg)
        log.warning("%s", refusal.text)
        self.refused.append(
            {
                "address": address,
                "message": refusal.text,
                "refusal": refusal.to_wire(),
                "time": time.time(),
                "executor": str(extra.get(EXECUTOR_KEY, "-")) if isinstance(extra, dict) else "-",
            }
        )
        # Dask's worker raises with the repr of this answer; ``lockstep worker`` reads "refusal".
        await comm.write(
            {
                "status": "error",
                "message": refusal.text,
                "refusal": refusal.to_wire(),
                "time": time.time(),
            }
        )
        return None

    # --- clients ------------------------------------------------------------------------------

    @property
    def build(self) -> str:
        return f"build {self.manifest.build_id} version {self.manifest.version}"

    def _refuse(
        self, client: str, address: str, op: str, message: str, refusal: Refusal | None = None
    ) -> PermissionError:
        """Record a refused client request (with the ``Refusal`` fields of a hello's)."""
        log.warning("%s", message)
        self.refused_clients.append(
            {
                "client": client,
                "address": address,
                "op": op,
                "message": message,
                "refusal": refusal.to_wire() if refusal is not None else None,
                "time": time.time(),
            }
        )
        return PermissionError(message)

    def _admission(self, client: object) -> Admission | None:
        found = self.admitted.get(client) if isinstance(client, str) else None
        if found is not None and not found.live(self.scheduler):
            del self.admitted[found.client]
            return None
        return found

    def _not_admitted(self, what: str, client: str, address: str) -> str:
        return (
            f"lockstep refused {what} from client {client} at {address}: it has not "
            f"completed the lockstep handshake with this scheduler ({self.build}) on "
            "this connection. Connect with lockstep.runtime.connect() (or `lockstep "
            "run`) from the scheduler's build; a plain distributed.Client cannot submit "
            "to a lockstep cluster"
        )

    async def hello(
        self, comm: Any, manifest: object = None, client: object = None
    ) -> dict[str, Any]:
        """``lockstep_hello``: admit ``client`` if ``manifest`` is the scheduler's build."""
        address = _peer(comm)
        if not isinstance(client, str) or not client or len(client) > MAX_CLIENT_ID:
            raise self._refuse(
                "-",
                address,
                HELLO_OP,
                (
                    f"lockstep refused the hello from {address}: client must be the client.id of "
                    f"an open Client (a string of at most {MAX_CLIENT_ID} characters), not "
                    f"{type(client).__name__}"
                ),
            )
        refusal = hello_refusal(self.manifest, client, manifest)
        if refusal is not None:
            raise self._refuse(client, address, HELLO_OP, refusal.text, refusal)
        bcomm = self.scheduler.client_comms.get(client)
        stream: Any = getattr(bcomm, "comm", None)
        if stream is None or stream.closed():
            raise self._refuse(
                client,
                address,
                HELLO_OP,
                (
                    f"lockstep refused the hello of client {client} from {address}: no client of "
                    "that id is connected to this scheduler; open the Client first and say hello "
                    "with its client.id (lockstep.runtime.connect() does)"
                ),
            )
        if _host(_peer(stream)) != _host(address):
            raise self._refuse(
                client,
                address,
                HELLO_OP,
                (
                    f"lockstep refused the hello of client {client} from {address}: that client "
                    f"is connected from {_peer(stream)}, another host; a client says hello for "
                    "itself"
                ),
            )
        for name in [n for n, a in self.admitted.items() if not a.live(self.scheduler)]:
            del self.admitted[name]
        token = secrets.token_hex(16)
        self.admitted[client] = Admission(client, stream, token, time.time())
        log.info("lockstep admitted client %s at %s: %s", client, _peer(stream), self.build)
        return {
            "ok": True,
            "token": token,
            "build_id": self.manifest.build_id,
            "version": self.manifest.version,
        }

    async def update_graph(self, **msg: Any) -> Any:
        """The ``update-graph`` stream handler: only from an admitted client's own stream."""
        stream = _STREAM.get()
        comm, extra = stream if stream is not None else (None, {})
        client = str(extra.get("client", "-"))
        claimed = msg.get("client")
        address = _peer(comm)
        admission = self._admission(client)
        if comm is None or "client" not in extra:
            message = f"lockstep refused {SUBMIT_OP}: it did not arrive on a client's connection"
        elif claimed != client:
            message = (
                f"lockstep refused {SUBMIT_OP} from client {client} at {address}: the "
                f"message names client {claimed!r}, not the client of its own "
                "connection; a client submits only as itself"
            )
        elif admission is None or admission.comm is not comm:
            message = self._not_admitted("task submission (update-graph)", client, address)
        else:
            return await self.originals[SUBMIT_OP](**msg)
        error = self._refuse(client, address, SUBMIT_OP, message)
        self._report_refusal(client, comm, msg.get("keys"), error)
        return None

    def _report_refusal(self, client: str, comm: Any, keys: Any, error: BaseException) -> None:
        """Make the client's futures of ``keys`` raise ``error`` (only on its own stream)."""
        from distributed.core import error_message

        bcomm = self.scheduler.client_comms.get(client)
        if (
            comm is None
            or getattr(bcomm, "comm", None) is not comm
            or not isinstance(keys, list | tuple | set | frozenset)
        ):
            return
        err = error_message(error)
        for key in list(keys)[:10_000]:
            bcomm.send(
                {
                    "op": "task-erred",
                    "key": key,
                    "exception": err["exception"],
                    "traceback": err["traceback"],
                }
            )

    def refuse_always(self, op: str) -> Callable[..., Awaitable[Any]]:
        """A handler that refuses ``op`` to every caller."""
        what = REFUSED_WHAT.get(op) or op.replace("_", " ")

        async def refuse(comm: Any = None, **msg: Any) -> Any:
            client = msg.get("client")
            raise self._refuse(
                str(client) if isinstance(client, str) else "-",
                _peer(comm),
                op,
                (
                    f"lockstep refused {op} from {_peer(comm)}: {what} is refused for every client "
                    "of a lockstep cluster, handshake or not: its scheduler and workers are "
                    "configured only from their own image and environment (LOCKSTEP_EXECUTOR), "
                    "never by a client. "
                    "Change the image or the deployment; run code as tasks with "
                    "lockstep.runtime.submit_task after connect()"
                ),
            )

        refuse.__name__ = f"lockstep_refuse_{op}"
        return refuse

    def _relay_refusal(self, via: str, address: str, msg: Any, nanny: bool) -> str | None:
        op = msg.get("op") if isinstance(msg, dict) else None
        token = msg.get(TOKEN_KEY) if isinstance(msg, dict) else None
        if op in OPEN_RELAY_OPS and not nanny:
            return None
        if (
            op in TOKEN_RELAY_OPS
            and not nanny
            and isinstance(token, str)
            and any(
                secrets.compare_digest(a.token, token)
                for a in list(self.admitted.values())
                if self._admission(a.client) is a
            )
        ):
            return None
        if op in TOKEN_RELAY_OPS and not nanny:
            return (
                f"lockstep refused {via} of {op} from {address}: it needs the token of a "
                f"lockstep handshake with this scheduler ({self.build}); connect with "
                "lockstep.runtime.connect() from the scheduler's build"
            )
        shown = "run (Client.run)" if op == "run" else repr(op)
        return (
            f"lockstep refused {via} of {shown}{' to nannies' if nanny else ''} from "
            f"{address}: relaying ops to workers is refused for every client of a lockstep "
            "cluster but the read-only ones (" + ", ".join(sorted(OPEN_RELAY_OPS)) + "); "
            "functions and plugins never run on lockstep workers from a client. Run code "
            "as tasks with lockstep.runtime.submit_task after connect()"
        )

    async def broadcast(self, comm: Any = None, **kwargs: Any) -> Any:
        address = _peer(comm)
        msg: Any = kwargs.get("msg")
        refusal = self._relay_refusal("broadcast", address, msg, bool(kwargs.get("nanny")))
        if refusal is not None:
            raise self._refuse("-", address, "broadcast", refusal)
        kwargs["msg"] = {k: v for k, v in msg.items() if k != TOKEN_KEY}
        if msg.get("op") in TOKEN_RELAY_OPS:
            return await worker_proof.relay(
                self.originals["broadcast"], self.proofs, self.scheduler, kwargs
            )
        return await self.originals["broadcast"](**kwargs)

    async def proxy(self, comm: Any = None, **kwargs: Any) -> Any:
        address = _peer(comm)
        msg: Any = kwargs.get("msg")
        refusal = self._relay_refusal("proxy", address, msg, False)
        if refusal is not None:
            raise self._refuse("-", address, "proxy", refusal)
        kwargs["msg"] = {k: v for k, v in msg.items() if k != TOKEN_KEY}
        if msg.get("op") in TOKEN_RELAY_OPS:
            proof = self.proofs.get(str(kwargs.get("worker")), "")
            kwargs["msg"][worker_proof.PROOF_FIELD] = proof
        return await self.originals["proxy"](**kwargs)

    async def scatter(self, comm: Any = None, **kwargs: Any) -> Any:
        client = kwargs.get("client")
        address = _peer(comm)
        if self._admission(client) is None:
            shown = str(client) if isinstance(client, str) else "-"
            raise self._refuse(
                shown, address, "scatter", self._not_admitted("scatter", shown, address)
            )
        return await self.originals["scatter"](**kwargs)

    def wrap_stream(self, original: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        """Dask's ``handle_stream`` that lets ``update_graph`` see the connection it came on."""

        async def handle_stream(comm: Any, extra: dict[str, Any] | None = None) -> Any:
            token = _STREAM.set((comm, dict(extra or {})))
            try:
                return await original(comm=comm, extra=extra)
            finally:
                _STREAM.reset(token)

        return handle_stream

    def identity_of_clients(self) -> list[dict[str, Any]]:
        return [
            {"client": a.client, "address": _peer(a.comm), "time": a.time}
            for a in list(self.admitted.values())
            if self._admission(a.client) is a
        ]
