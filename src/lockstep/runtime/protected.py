"""Protected mode: a scheduler or worker without TLS listens on loopback only, unless told
``--insecure``.

Dask's protocol unpickles what arrives on a port, and the handshake's proofs
(``worker_proof``, the gate's hello) are only as good as the network that carries
them: without mutual TLS, anyone who reaches a port can run code. So, as Redis's
protected mode and Jupyter's token do, ``lockstep scheduler`` and ``lockstep worker``
refuse to start (exit 2, one line) when they would listen beyond loopback without
``LOCKSTEP_TLS_*``, unless the command line says ``--insecure``; then they start and
log a warning naming it. Where they listen is read from Dask's own options:
``--host``, ``--listen-address``, ``--interface``; none of them means all interfaces.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Sequence

from lockstep.core.errors import BadInput
from lockstep.core.settings import TLS_CA_FILE, TLS_CERT, TLS_KEY

log = logging.getLogger(__name__)
INSECURE = "--insecure"
LOOPBACK_NAMES = frozenset({"localhost", "lo", "lo0"})  # host names and interface names


def option(args: Sequence[str], *names: str) -> str | None:
    """The value of the last of ``names`` in ``args`` (``--x V`` or ``--x=V``)."""
    found = None
    for i, arg in enumerate(args):
        for name in names:
            if arg == name and i + 1 < len(args):
                found = args[i + 1]
            elif arg.startswith(name + "="):
                found = arg.partition("=")[2]
    return found


def _host(value: str) -> str:
    """The host of ``tcp://H:P``, ``H:P``, ``[v6]:P`` or ``H``."""
    rest = value.partition("://")[2] or value
    if rest.startswith("["):
        return rest[1:].partition("]")[0]
    if rest.count(":") == 1:
        return rest.partition(":")[0]
    return rest


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def listening_on(args: Sequence[str]) -> str | None:
    """Where Dask will listen per ``args``, if beyond loopback (None if loopback only)."""
    where = option(args, "--listen-address", "--host")
    if where is not None:
        host = _host(where)
        return None if is_loopback(host) else host or "all interfaces"
    interface = option(args, "--interface")
    if interface is not None:
        return None if interface in LOOPBACK_NAMES else f"interface {interface}"
    return "all interfaces (no --host)"


def check(args: list[str], prog: str, tls: bool) -> list[str]:
    """``args`` without ``--insecure``; ``BadInput`` if ``prog`` would listen beyond loopback
    without TLS and ``--insecure`` was not given."""
    insecure = INSECURE in args
    args = [a for a in args if a != INSECURE]
    where = None if tls else listening_on(args)
    if where is None:
        return args
    if not insecure:
        raise BadInput(
            f"{prog} would listen on {where} without TLS: anyone who reaches its port could "
            f"run code in the cluster; set {TLS_CA_FILE}, {TLS_CERT} and {TLS_KEY}, or "
            "listen on loopback (--host 127.0.0.1), or pass "
            f"{INSECURE} to run it so on purpose"
        )
    log.warning(
        "%s listens on %s without TLS (%s): anyone who reaches its port can run code in "
        "the cluster",
        prog,
        where,
        INSECURE,
    )
    return args
