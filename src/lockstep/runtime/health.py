"""What a scheduler or worker serves besides its Dask comm port: probes on a Unix socket.

Dask's own HTTP server (dashboard, ``/health``, ``/info``…: plain HTTP, no
authentication) is closed once the process runs (``close_http``) unless
``lockstep scheduler|worker`` was asked for it (``--dashboard``), so with TLS
nothing on the process answers a client without a certificate.

Kubernetes probes without a network port: a Unix socket the event loop answers.

A scheduler or worker started with ``LOCKSTEP_HEALTH_SOCKET`` set serves that
Unix socket from its own Dask event loop. A probe connects, writes ``live`` or
``ready`` and a newline, and reads one line: ``ok`` or ``no <why>``.

- ``live``: answered at all, so the event loop runs (a loop stuck in a task or
  a deadlock answers nothing and the probe times out);
- ``ready``: a worker is admitted by the scheduler of its own build and its
  executor runs (``WorkerRuntime.ready``, Dask status running or paused); the
  scheduler serves its gate (the preload installed it and Dask is running).

The socket lives in the container's own ``/tmp`` (mode 0600, the process's
user), so only processes inside the container reach it; it answers one word
and carries no Dask message: no path around the gate and no port beside the
mutual-TLS one. Kubernetes runs ``core.health_probe.probe_command(…)``
(``exec``): a bare ``python3.11 -I -S`` that imports only the built-in
``_socket`` (docs/design.md §4.10 has its measured cost).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lockstep.core.health_probe import TIMEOUT
from lockstep.core.settings import HEALTH_SOCKET

log = logging.getLogger(__name__)
Check = Callable[[], str | None]  # None: fine; else why not


HTTP_CONFIG = "lockstep.http-server"  # dask config, set by runtime.commands; False: close it


def close_http(server: Any) -> None:
    """Close Dask's HTTP server of ``server`` unless the command line opted in to it."""
    import dask

    http = getattr(server, "http_server", None)
    if http is not None and dask.config.get(HTTP_CONFIG, True) is False:
        http.stop()  # tornado: idempotent, so Dask's own stop at close is harmless
        log.info("lockstep: Dask's HTTP server is closed (no dashboard; probes on a socket)")


async def start(server: Any, ready: Check) -> None:
    """The preloads' call: close Dask's HTTP server (``close_http``) and, with
    ``LOCKSTEP_HEALTH_SOCKET`` set, answer probes there for as long as ``server`` runs."""
    close_http(server)
    path = socket_path()
    if path is None:
        return
    probes = await serve(path, ready)
    _servers.append(probes)  # kept referenced; closed with the loop


_servers: list[asyncio.AbstractServer] = []


def socket_path() -> Path | None:
    """``LOCKSTEP_HEALTH_SOCKET``, or None when this process serves no probes."""
    value = os.environ.get(HEALTH_SOCKET, "")
    return Path(value) if value else None


async def serve(path: Path, ready: Check) -> asyncio.AbstractServer:
    """Answer probes on ``path`` from the running loop until the returned server closes."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            question = (await asyncio.wait_for(reader.readline(), TIMEOUT)).strip().decode()
            if question == "live":
                reply = "ok"
            elif question == "ready":
                why = ready()
                reply = "ok" if why is None else f"no {why}"
            else:
                reply = f"no unknown question {question[:40]!r}"
            writer.write(reply.encode() + b"\n")
            await writer.drain()
        except (OSError, TimeoutError, UnicodeDecodeError):
            pass
        finally:
            writer.close()

    with contextlib.suppress(FileNotFoundError):
        path.unlink()  # a previous process's socket (a restarted container keeps /tmp)
    old = os.umask(0o177)
    try:
        server = await asyncio.start_unix_server(answer, path=str(path))
    finally:
        os.umask(old)
    log.info("lockstep probes: answering on %s", path)
    return server
