"""What answers at a scheduler's address, found within a deadline, before Dask is given it.

Dask waits without a bound or a reason when an address is not a Dask scheduler:
its ``connect`` reads the peer's greeting with no timeout, so an HTTP port (the
dashboard's 8787, say) holds a ``Client`` for ever, and a worker facing a closed
port says only "Nanny failed to start" after 30 s. A Dask server speaks first —
its handshake, framed by a little-endian 8-byte length, as soon as it accepts — so
one read tells a scheduler from anything else, and what else is there is named by
one more try: an HTTP request (an HTTP server answers its status line), or a TLS
handshake (a TLS server answers it).

``look`` makes one attempt; ``wait_for_scheduler`` retries what a scheduler that is
not up yet would give (refused, unreachable, no answer) until its deadline and
stops at once on anything else, with one line naming the address and what was
found there (``ServiceFailed``, exit 3); ``refuse_other_servers`` stops only on
anything else, for a caller that waits for a scheduler in its own way. With
``LOCKSTEP_TLS_*`` the look is a mutual-TLS handshake, and a refused certificate names
which side refused which.
"""

from __future__ import annotations

import logging
import socket
import ssl
import struct
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from lockstep.core.errors import BadInput, ServiceFailed
from lockstep.core.settings import TLS_CA_FILE, TLS_CERT, TLS_KEY
from lockstep.runtime.config import TlsFiles

log = logging.getLogger(__name__)

GREETING_SECONDS = 10.0  # the longest wait for a Dask server's greeting (it is immediate)
GREETING_SHARE = 0.6  # ... and at most this share of what is left, to name what is there
LARGEST_GREETING = 1 << 20  # a Dask handshake is a few hundred bytes
HTTP_PROBE = b"HEAD / HTTP/1.0\r\n\r\n"
TLS_ENV = f"{TLS_CA_FILE}, {TLS_CERT} and {TLS_KEY}"

DASK = "dask"
REFUSED = "refused"
UNREACHABLE = "unreachable"
NO_ANSWER = "no answer"
NOT_DASK = "not dask"
CERTIFICATE = "certificate"
WAIT_ON = frozenset({REFUSED, UNREACHABLE, NO_ANSWER})  # a scheduler not up yet gives these


@dataclass(frozen=True)
class Found:
    """What one look at an address found: ``kind`` (one of the names above) and the words."""

    kind: str
    says: str


def _host_port(address: str) -> tuple[str, str, int]:
    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme not in ("tcp", "tls") or not parts.hostname or port is None:
        raise BadInput(f"scheduler address {address!r}: write it like tcp://host:8786")
    return parts.scheme, parts.hostname, port


def _left(deadline: float) -> float:
    """Seconds to ``deadline`` (a socket timeout must be > 0)."""
    return max(deadline - time.monotonic(), 0.01)


def _connect(host: str, port: int, deadline: float) -> socket.socket | Found:
    try:
        return socket.create_connection((host, port), timeout=_left(deadline))
    except ConnectionRefusedError:
        return Found(REFUSED, "nothing listens there (connection refused)")
    except TimeoutError:
        return Found(NO_ANSWER, "no answer to a connection (a host that is down, or a firewall)")
    except OSError as exc:
        return Found(UNREACHABLE, f"unreachable ({exc.strerror or exc})")


def _read(sock: socket.socket, seconds: float, size: int = 8) -> bytes | None:
    """Up to ``size`` bytes within ``seconds``: None if none came, ``b""`` if it closed."""
    data = b""
    end = time.monotonic() + seconds
    while len(data) < size:
        left = end - time.monotonic()
        if left <= 0:
            return data or None
        sock.settimeout(left)
        try:
            chunk = sock.recv(size - len(data))
        except TimeoutError:
            return data or None
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk
    return data


def _is_greeting(data: bytes) -> bool:
    return len(data) >= 8 and 0 < struct.unpack("<Q", data[:8])[0] <= LARGEST_GREETING


def _greeting_wait(deadline: float) -> float:
    return min(GREETING_SECONDS, GREETING_SHARE * max(deadline - time.monotonic(), 0.0))


def _answered(data: bytes) -> Found:
    if data.startswith(b"HTTP/"):
        status = data.split(b"\r\n", 1)[0].decode("ascii", "replace")
        return Found(
            NOT_DASK,
            f"an HTTP server answers there ({status!r}), not a Dask scheduler (Dask's "
            "dashboard is HTTP, on 8787; the scheduler listens on 8786)",
        )
    if data[:1] in (b"\x15", b"\x16") and data[1:2] == b"\x03":
        return Found(NOT_DASK, f"a TLS server answers there: write tls://… and set {TLS_ENV}")
    return Found(NOT_DASK, f"it answered {data[:24]!r}, not a Dask handshake")


def _name_the_silent(host: str, port: int, deadline: float, waited: float) -> Found:
    """What listens at ``host:port`` that greets no one: an HTTP or TLS server, or unknown."""
    sock = _connect(host, port, deadline)
    if isinstance(sock, Found):
        return sock
    with sock:
        sock.sendall(HTTP_PROBE)
        data = _read(sock, _left(deadline), 64)
    if data:
        return _answered(data)
    if _speaks_tls(host, port, deadline):
        return Found(NOT_DASK, f"a TLS server answers there: write tls://… and set {TLS_ENV}")
    return Found(
        NOT_DASK,
        f"it accepts connections but sent nothing in {waited:.1f} s: not a Dask scheduler, "
        "which greets at once",
    )


def _speaks_tls(host: str, port: int, deadline: float) -> bool:
    sock = _connect(host, port, deadline)
    if isinstance(sock, Found):
        return False
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with sock:
        sock.settimeout(_left(deadline))
        try:
            context.wrap_socket(sock, server_hostname=host).close()
        except ssl.SSLError as exc:  # an alert is a TLS server's answer too
            return "ALERT" in str(exc.reason or "").upper()
        except OSError:
            return False
    return True


def _look_plain(host: str, port: int, deadline: float) -> Found:
    sock = _connect(host, port, deadline)
    if isinstance(sock, Found):
        return sock
    wait = _greeting_wait(deadline)
    with sock:
        data = _read(sock, wait)
    if data is None:
        return _name_the_silent(host, port, deadline, wait)
    if not data:
        return Found(NOT_DASK, "it closed the connection without a word: not a Dask scheduler")
    return Found(DASK, "a Dask server") if _is_greeting(data) else _answered(data)


def _look_tls(host: str, port: int, deadline: float, tls: TlsFiles, who: str) -> Found:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(tls.ca_file))
    context.check_hostname = False  # Dask checks the CA, not host names
    context.load_cert_chain(str(tls.cert), str(tls.key))
    sock = _connect(host, port, deadline)
    if isinstance(sock, Found):
        return sock
    with sock:
        sock.settimeout(_left(deadline))
        try:
            conn = context.wrap_socket(sock, server_hostname=host)
        except ssl.SSLCertVerificationError as exc:
            return Found(
                CERTIFICATE,
                f"{who} refused the scheduler's certificate ({exc.verify_message}): it is not "
                f"signed by the CA in {tls.ca_file}; give {who} the cluster's CA ({TLS_CA_FILE})",
            )
        except ssl.SSLError as exc:
            plain = _look_plain(host, port, deadline)  # not TLS: say what it is
            if plain.kind == DASK:
                return Found(
                    NOT_DASK,
                    "a Dask scheduler without TLS answers there: write tcp://… and unset "
                    f"{TLS_ENV}, or give the scheduler them",
                )
            if plain.kind == NOT_DASK:
                return plain
            return Found(NOT_DASK, f"the TLS handshake failed ({exc.reason or exc})")
        except TimeoutError:
            return Found(NOT_DASK, "it accepts connections but did not answer a TLS handshake")
        except OSError as exc:
            return Found(NOT_DASK, f"it broke off the TLS handshake ({exc.strerror or exc})")
        with conn:
            try:
                data = _read(conn, _greeting_wait(deadline))
            except ssl.SSLError as exc:  # TLS 1.3: the server's alert comes on the first read
                return Found(
                    CERTIFICATE,
                    f"the scheduler refused {who}'s certificate {tls.cert} "
                    f"({exc.reason or exc}): it is not signed by the scheduler's CA; give "
                    f"{who} a certificate of the cluster's CA ({TLS_CERT}/{TLS_KEY})",
                )
    if data and _is_greeting(data):
        return Found(DASK, "a Dask server over TLS")
    return Found(NOT_DASK, "it speaks TLS but sent no Dask handshake: not a Dask scheduler")


def look(address: str, timeout: float, tls: TlsFiles | None, who: str = "this client") -> Found:
    """One look at ``address`` within ``timeout`` seconds (``BadInput`` if it is malformed)."""
    scheme, host, port = _host_port(address)
    deadline = time.monotonic() + timeout
    if scheme == "tls" and tls is not None:
        return _look_tls(host, port, deadline, tls, who)
    return _look_plain(host, port, deadline)


def refuse_other_servers(
    address: str, timeout: float, tls: TlsFiles | None, who: str = "this client"
) -> None:
    """One look: ``ServiceFailed`` if something other than a Dask scheduler answers at
    ``address`` (or refuses ``who``'s certificate); nothing if a scheduler answers or none
    does yet (the caller waits for it its own way)."""
    found = look(address, timeout, tls, who)
    if found.kind != DASK and found.kind not in WAIT_ON:
        raise ServiceFailed(f"scheduler {address}: {found.says}")


def wait_for_scheduler(
    address: str, timeout: float, tls: TlsFiles | None, who: str = "this client"
) -> None:
    """Return once a Dask server answers at ``address``; ``ServiceFailed`` naming the
    address and what is there if something else answers, or nothing does in ``timeout``."""
    start = time.monotonic()
    deadline = start + timeout
    pause = 0.05
    while True:
        found = look(address, _left(deadline), tls, who)
        if found.kind == DASK:
            return
        if found.kind not in WAIT_ON:
            raise ServiceFailed(f"scheduler {address}: {found.says}")
        left = deadline - time.monotonic()
        if left <= 0:
            raise ServiceFailed(
                f"scheduler {address} unreachable after {timeout:g} s: {found.says}; check "
                "the address and that `lockstep scheduler` runs there"
            )
        log.debug("scheduler %s: %s; trying again", address, found.says)
        time.sleep(min(pause, left))  # a scheduler starting up: look again, less often
        pause = min(pause * 2, 1.0)
