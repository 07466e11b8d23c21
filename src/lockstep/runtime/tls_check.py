"""Before a worker with TLS starts: one handshake with its scheduler, to say who refuses whom.

Dask retries a refused TLS connection as if the scheduler were not up yet (one INFO
"Waiting to connect" line after another, no error). So ``lockstep worker`` first
opens one mutual-TLS connection to the scheduler's address itself: if this side
rejects the scheduler's certificate (not signed by ``LOCKSTEP_TLS_CA_FILE``), or the
scheduler rejects ours (its alert arrives on the first read), it stops with one
line naming which side refused which certificate (``ServiceFailed``, exit 3). A
scheduler that cannot be reached at all is left to Dask's own waiting.
"""

from __future__ import annotations

import socket
import ssl
from urllib.parse import urlsplit

from lockstep.core.errors import ServiceFailed
from lockstep.core.settings import TLS_CA_FILE, TLS_CERT, TLS_KEY
from lockstep.runtime.config import TlsFiles

READ_SECONDS = 2.0  # how long the first read may wait for the scheduler's alert, if any


def check_scheduler_tls(address: str, tls: TlsFiles, timeout: float = 10.0) -> None:
    """``ServiceFailed`` if the TLS handshake with ``address`` (``tls://host:port``) fails
    on either side's certificate; nothing if it succeeds or the address cannot be reached."""
    parts = urlsplit(address)
    if parts.scheme != "tls" or parts.hostname is None or parts.port is None:
        return
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(tls.ca_file))
    context.check_hostname = False  # Dask checks the CA, not host names
    context.load_cert_chain(str(tls.cert), str(tls.key))
    try:
        raw = socket.create_connection((parts.hostname, parts.port), timeout=timeout)
    except OSError:
        return
    with raw:
        try:
            with context.wrap_socket(raw, server_hostname=parts.hostname) as conn:
                conn.settimeout(READ_SECONDS)
                try:
                    conn.recv(1)
                except TimeoutError:
                    return  # no alert: the scheduler took our certificate
                except ssl.SSLError as exc:
                    raise ServiceFailed(
                        f"TLS to scheduler {address}: the scheduler refused this worker's "
                        f"certificate {tls.cert} ({exc.reason or exc}): it is not signed by "
                        "the scheduler's CA; give this worker a certificate of the cluster's "
                        f"CA ({TLS_CERT}/{TLS_KEY})"
                    ) from exc
        except ssl.SSLCertVerificationError as exc:
            raise ServiceFailed(
                f"TLS to scheduler {address}: this worker refused the scheduler's "
                f"certificate ({exc.verify_message}): it is not signed by the CA in "
                f"{tls.ca_file}; give this worker the cluster's CA ({TLS_CA_FILE})"
            ) from exc
        except ssl.SSLError as exc:
            raise ServiceFailed(
                f"TLS to scheduler {address}: the handshake failed ({exc.reason or exc}); "
                "check that both sides' certificates come from one CA"
            ) from exc
        except OSError:
            return
