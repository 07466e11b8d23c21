"""A small client for the OCI distribution API: the calls a push and a pull need.

Used by ``lockstep release`` and by job bundles (pushed by the runner, pulled by
workers): standard library only, nothing of the build. The HTTP under it, and
the choice of HTTPS or plain HTTP, is ``oci/transport.py``.

Blobs go up as ``POST /v2/NAME/blobs/uploads/`` then ``PUT <location>?digest=``
(distribution 2.8 has no single-request upload); a blob the repository
already has (``HEAD``) is skipped, and one that another repository of this
push holds is mounted instead of uploaded. Manifests go up with their media
type. Every digest the registry reports (``Docker-Content-Digest``) must equal
ours: the registry stores our exact bytes or the push fails.

A 401 is answered once, with basic auth or a bearer token from the
challenge's realm, using credentials from Docker's config.json (never
logged).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import threading
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lockstep.core.errors import BadInput, CheckFailed, ServiceFailed
from lockstep.oci.auth import Credentials, docker_config_path, refresh_token_form
from lockstep.oci.media import MANIFEST_MEDIA_TYPES
from lockstep.oci.transport import Response, Transport

log = logging.getLogger(__name__)
CLIENT_ID = "lockstep"  # the OAuth2 client_id a token service is told

_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')


class BlobMismatch(CheckFailed):
    """A blob whose bytes are not those of the digest it was asked for."""


@dataclass
class PushStats:
    """What a push did: blobs uploaded (and their bytes), found, mounted; manifests put.
    Safe to update from several threads."""

    uploaded: int = 0
    uploaded_bytes: int = 0
    present: int = 0
    mounted: int = 0
    manifests: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, what: str, size: int = 0) -> None:
        with self._lock:
            if what == "uploaded":
                self.uploaded += 1
                self.uploaded_bytes += size
            elif what == "present":
                self.present += 1
            elif what == "mounted":
                self.mounted += 1
            elif what == "manifest":
                self.manifests += 1
            else:  # pragma: no cover - a typo in this module
                raise ValueError(what)

    def to_dict(self) -> dict[str, int]:
        return {
            "blobs_uploaded": self.uploaded,
            "bytes_uploaded": self.uploaded_bytes,
            "blobs_present": self.present,
            "blobs_mounted": self.mounted,
            "manifests_put": self.manifests,
        }


@dataclass
class RegistryClient:
    """One registry host, over a ``Transport`` (HTTPS or plain HTTP, ``scheme``).
    Usable from several threads: each keeps its own connections."""

    host: str
    credentials: Credentials | None = None
    plain_http: bool = False
    timeout: float = 120.0
    # What to do when the registry wants credentials this process lacks (a worker has
    # no `docker login`: it is given a config.json); None: run `docker login HOST`.
    login_hint: str | None = None
    _auth: dict[str, str] = field(default_factory=dict)  # scope -> Authorization value
    _transport: Transport = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._transport = Transport(self.host, self.plain_http, self.timeout)

    @property
    def scheme(self) -> str:
        """``https`` or ``http`` (``Transport.scheme``)."""
        return self._transport.scheme

    @property
    def base(self) -> str:
        return self._transport.base

    def close(self) -> None:
        self._transport.close()

    # -- auth ---------------------------------------------------------------------

    def request(
        self,
        method: str,
        path_or_url: str,
        *,
        scope: Sequence[str],
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
    ) -> Response:
        """One request, authenticated for ``scope`` (answering one 401 challenge)."""
        url = path_or_url if "://" in path_or_url else self.base + path_or_url
        key = " ".join(scope)
        all_headers = dict(headers or {})
        if key in self._auth:
            all_headers["Authorization"] = self._auth[key]
        resp = self._transport.raw(method, url, all_headers, body)
        if resp.status != 401:
            self._check_server_error(method, url, resp)
            return resp
        self._auth[key] = self._authenticate(resp.header("www-authenticate") or "", scope)
        all_headers["Authorization"] = self._auth[key]
        resp = self._transport.raw(method, url, all_headers, body)
        if resp.status == 401:
            raise self._rejected()
        self._check_server_error(method, url, resp)
        return resp

    def _denied(self, resp: Response) -> None:
        if resp.status == 403:
            who = repr(self.credentials.username) if self.credentials else "anonymous"
            raise BadInput(
                f"registry {self.host} denied {who} ({resp.error_text()}); ask for "
                "push access to the repository, or `docker login` as a user with it"
            )

    def _check_server_error(self, method: str, url: str, resp: Response) -> None:
        self._denied(resp)
        if resp.status >= 500:
            path = urllib.parse.urlsplit(url).path
            raise ServiceFailed(
                f"registry {self.host} failed: {method} {path} answered "
                f"{resp.status} ({resp.error_text()}); try again later"
            )

    def _rejected(self) -> BadInput:
        where = self.credentials.source if self.credentials else str(docker_config_path())
        if self.credentials is None:
            return BadInput(
                f"registry {self.host} needs credentials and {where} has none "
                f"for it; {self.login_hint or f'run `docker login {self.host}`'}"
            )
        who = (
            "the identitytoken"
            if self.credentials.identity_token
            else f"the credentials of {self.credentials.username!r}"
        )
        return BadInput(
            f"registry {self.host} rejected {who} from {where}; "
            f"{self.login_hint or f'run `docker login {self.host}` or fix that file'}"
        )

    def _basic(self) -> str:
        if self.credentials is None:
            raise self._rejected()
        pair = f"{self.credentials.username}:{self.credentials.password}".encode()
        return "Basic " + base64.b64encode(pair).decode()

    def _authenticate(self, challenge: str, scope: Sequence[str]) -> str:
        kind, _, rest = challenge.strip().partition(" ")
        params = dict(_CHALLENGE_PARAM.findall(rest))
        if kind.lower() == "basic":
            if self.credentials is not None and self.credentials.identity_token:
                raise BadInput(
                    f"registry {self.host} asks for basic auth, but the credentials from "
                    f"{self.credentials.source} are an identitytoken, which only a token "
                    f"service takes; run `docker login {self.host}` with a user and password"
                )
            return self._basic()
        if kind.lower() != "bearer" or "realm" not in params:
            raise ServiceFailed(
                f"registry {self.host} asked for authentication this client "
                f"does not speak ({kind or 'no challenge'}); use a registry "
                "with basic or bearer token auth"
            )
        query = [("service", params["service"])] if "service" in params else []
        query += [("scope", s) for s in scope]
        url = (
            params["realm"]
            + ("&" if "?" in params["realm"] else "?")
            + urllib.parse.urlencode(query)
        )
        if self.credentials is not None and self.credentials.identity_token:
            # OAuth2 refresh_token grant (docs/design.md §6 "Registry"), not GET + Basic.
            url = params["realm"]
            form = refresh_token_form(
                self.credentials.identity_token, params.get("service"), list(scope), CLIENT_ID
            )
            form_type = {"Content-Type": "application/x-www-form-urlencoded"}
            resp = self._transport.raw("POST", url, form_type, form)
        else:
            headers = {"Authorization": self._basic()} if self.credentials else {}
            resp = self._transport.raw("GET", url, headers)
        if resp.status in (401, 403):
            raise self._rejected()
        if resp.status != 200:
            raise ServiceFailed(
                f"token service {urllib.parse.urlsplit(url).netloc} answered "
                f"{resp.status} ({resp.error_text()}); try again later"
            )
        try:
            data: Any = json.loads(resp.body)
            token = data.get("token") or data.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise ServiceFailed(
                f"token service {urllib.parse.urlsplit(url).netloc} answered "
                "without a token; check the registry's auth setup"
            )
        log.debug("got a bearer token for %s", " ".join(scope))
        return f"Bearer {token}"

    # -- the calls of a push --------------------------------------------------------

    @staticmethod
    def scope(name: str, actions: str = "pull,push") -> str:
        return f"repository:{name}:{actions}"

    def has_blob(self, name: str, digest: str, actions: str = "pull,push") -> bool:
        resp = self.request("HEAD", f"/v2/{name}/blobs/{digest}", scope=[self.scope(name, actions)])
        if resp.status == 200:
            return True
        if resp.status == 404:
            return False
        raise self._unexpected("HEAD", f"blob {digest} in {name}", resp)

    def push_blob(
        self,
        name: str,
        digest: str,
        data: bytes | Callable[[], bytes],
        stats: PushStats,
        mount_from: str | None = None,
    ) -> None:
        """Make ``name`` hold the blob ``digest`` = ``data``: skipped, mounted or uploaded.

        ``data`` may be a callable, asked for the bytes only when they are uploaded."""
        if self.has_blob(name, digest):
            stats.add("present")
            log.debug("blob %s already in %s", digest, name)
            return
        scope = [self.scope(name)]
        path = f"/v2/{name}/blobs/uploads/"
        if mount_from:
            scope.append(self.scope(mount_from, "pull"))
            path += "?" + urllib.parse.urlencode({"mount": digest, "from": mount_from})
        resp = self.request("POST", path, scope=scope, headers={"Content-Length": "0"}, body=b"")
        if resp.status == 201 and mount_from:
            self._check_digest(resp, digest, f"blob mounted into {name}")
            stats.add("mounted")
            log.debug("blob %s mounted into %s from %s", digest, name, mount_from)
            return
        if resp.status != 202 or not resp.header("location"):
            raise self._unexpected("POST", f"upload to {name}", resp)
        location = urllib.parse.urljoin(self.base + path, resp.header("location") or "")
        location += ("&" if "?" in location else "?") + urllib.parse.urlencode({"digest": digest})
        data = data() if callable(data) else data
        log.debug("uploading %s to %s (%d bytes)", digest, name, len(data))
        resp = self.request(
            "PUT",
            location,
            scope=scope,
            body=data,
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(len(data))},
        )
        if resp.status != 201:
            raise self._unexpected("PUT", f"blob {digest} to {name}", resp)
        self._check_digest(resp, digest, f"blob uploaded to {name}")
        stats.add("uploaded", len(data))

    def put_manifest(
        self,
        name: str,
        reference: str,
        manifest: bytes,
        media_type: str,
        digest: str,
        stats: PushStats,
    ) -> None:
        """PUT the manifest bytes under ``reference`` (a digest or a tag); check the digest."""
        resp = self.request(
            "PUT",
            f"/v2/{name}/manifests/{reference}",
            scope=[self.scope(name)],
            body=manifest,
            headers={"Content-Type": media_type, "Content-Length": str(len(manifest))},
        )
        if resp.status != 201:
            raise self._unexpected("PUT", f"manifest {reference} to {name}", resp)
        sep = "@" if reference.startswith("sha256:") else ":"
        self._check_digest(resp, digest, f"manifest {name}{sep}{reference}")
        stats.add("manifest")

    def has_manifest(
        self, name: str, digest: str, accept: Sequence[str] = MANIFEST_MEDIA_TYPES
    ) -> bool:
        """Whether the registry serves ``name@digest``; its reported digest must be ours."""
        resp = self.request(
            "HEAD",
            f"/v2/{name}/manifests/{digest}",
            scope=[self.scope(name, "pull")],
            headers={"Accept": ", ".join(accept)},
        )
        if resp.status == 404:
            return False
        if resp.status != 200:
            raise self._unexpected("HEAD", f"manifest {name}@{digest}", resp)
        self._check_digest(resp, digest, f"manifest {name}@{digest}")
        return True

    def get_manifest(
        self, name: str, digest: str, accept: Sequence[str] = MANIFEST_MEDIA_TYPES
    ) -> bytes:
        """The exact manifest bytes the registry serves for ``name@digest``."""
        resp = self.request(
            "GET",
            f"/v2/{name}/manifests/{digest}",
            scope=[self.scope(name, "pull")],
            headers={"Accept": ", ".join(accept)},
        )
        if resp.status == 404:
            raise CheckFailed(
                f"registry {self.host} does not serve {name}@{digest}; "
                "the release was not pushed there, or was deleted"
            )
        if resp.status != 200:
            raise self._unexpected("GET", f"manifest {name}@{digest}", resp)
        return resp.body

    def get_blob(self, name: str, digest: str, max_bytes: int) -> bytes:
        """The bytes of blob ``digest`` in ``name``, checked against the digest before they
        are returned: ``BlobMismatch`` (nothing kept) if they differ, ``CheckFailed`` if the
        registry does not have it. A redirect (to a storage backend) is followed once."""
        scope = [self.scope(name, "pull")]
        resp = self.request("GET", f"/v2/{name}/blobs/{digest}", scope=scope)
        if resp.status in (301, 302, 303, 307, 308) and resp.header("location"):
            target = urllib.parse.urljoin(self.base + "/", resp.header("location") or "")
            resp = self._transport.raw("GET", target, {})
        if resp.status == 404:
            raise CheckFailed(
                f"registry {self.host} does not have blob {digest} in {name}; "
                "push it again (lockstep bundle push)"
            )
        if resp.status != 200:
            raise self._unexpected("GET", f"blob {digest} in {name}", resp)
        if len(resp.body) > max_bytes:
            raise CheckFailed(
                f"registry {self.host}: blob {digest} in {name} is {len(resp.body)} bytes, "
                f"more than {max_bytes}; refusing it"
            )
        found = "sha256:" + hashlib.sha256(resp.body).hexdigest()
        if found != digest:
            raise BlobMismatch(
                f"registry {self.host} served blob {digest} of {name} with the bytes of "
                f"{found}: refused, nothing kept; the registry's storage is corrupt or "
                "something between rewrote it; push the bundle again"
            )
        return resp.body

    def stream_blob(
        self, name: str, digest: str, feed: Callable[[bytes], None], piece: int = 1 << 20
    ) -> None:
        """The bytes of blob ``digest`` in ``name`` to ``feed`` as they arrive; the caller
        checks their length and digest before it uses them (``get_blob`` checks first).
        ``CheckFailed`` if the registry does not have it."""
        scope = [self.scope(name, "pull")]
        path = f"/v2/{name}/blobs/{digest}"
        if not self.has_blob(name, digest, actions="pull"):  # authenticates, too
            raise CheckFailed(
                f"registry {self.host} does not have blob {digest} in {name}; "
                "push it again (lockstep bundle push)"
            )
        headers = (
            {"Authorization": self._auth[" ".join(scope)]} if " ".join(scope) in self._auth else {}
        )
        resp = self._transport.stream(self.base + path, headers, feed, piece)
        if resp.status in (301, 302, 303, 307, 308) and resp.header("location"):
            target = urllib.parse.urljoin(self.base + "/", resp.header("location") or "")
            resp = self._transport.stream(target, {}, feed, piece)
        if resp.status != 200:
            raise self._unexpected("GET", f"blob {digest} in {name}", resp)

    def _check_digest(self, resp: Response, digest: str, what: str) -> None:
        reported = resp.header("docker-content-digest")
        if reported is not None and reported != digest:
            raise CheckFailed(
                f"registry {self.host} reports {reported} for the {what}, but "
                f"its bytes are {digest}; the registry changed them, so this "
                "release cannot be pinned there"
            )

    def _unexpected(self, method: str, what: str, resp: Response) -> ServiceFailed:
        return ServiceFailed(
            f"registry {self.host}: {method} {what} answered {resp.status} ({resp.error_text()})"
        )
