"""Registry credentials from the usual Docker ``config.json``.

Looked up as ``docker login`` writes them: ``$DOCKER_CONFIG/config.json``,
else ``~/.docker/config.json``; ``credHelpers``/``credsStore`` run
``docker-credential-<helper> get``, else ``auths[HOST]`` holds ``auth`` (base64 of
``user:password``), ``username`` + ``password``, or ``identitytoken``: an OAuth2
refresh token (Azure ACR's ``az acr login``; a helper answering the user
``<token>``), which the registry client trades at the token service for an
access token with the ``refresh_token`` grant (the distribution spec's OAuth2
token authentication) — no vendor SDK. Any other credential an entry carries
(``registrytoken``, anything unknown) is an error naming the registry and the
form, never an anonymous request. Secrets are never logged and never in a ``repr``.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import subprocess
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lockstep.core.errors import BadInput

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)
    source: str = ""  # where they came from, for messages
    # An OAuth2 refresh token (config.json ``identitytoken``); then username/password unused.
    identity_token: str = field(default="", repr=False)


# What an auths entry may carry beside its credentials (docker login writes these).
_ENTRY_INFO = frozenset({"email", "serveraddress"})
# docker-credential-helpers: a Username of "<token>" means the Secret is an identity token.
TOKEN_USER = "<token>"


def refresh_token_form(
    identity_token: str, service: str | None, scope: list[str], client_id: str
) -> bytes:
    """The body of the OAuth2 ``refresh_token`` grant a token service takes at ``POST
    realm`` (``application/x-www-form-urlencoded``); ``scope`` space-separated."""
    fields = [("grant_type", "refresh_token"), ("client_id", client_id)]
    fields += [("service", service)] if service else []
    fields += [("scope", " ".join(scope))] if scope else []
    fields.append(("refresh_token", identity_token))
    return urllib.parse.urlencode(fields).encode()


def docker_config_path(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    if env.get("DOCKER_CONFIG"):
        return Path(env["DOCKER_CONFIG"]) / "config.json"
    return Path(env.get("HOME") or Path.home()) / ".docker" / "config.json"


def _host_of(key: str) -> str:
    """``https://host:port/v1/`` → ``host:port`` (config.json keys come in both forms)."""
    key = key.strip()
    for prefix in ("https://", "http://"):
        key = key.removeprefix(prefix)
    return key.split("/", 1)[0]


def credentials_for(host: str, environ: Mapping[str, str] | None = None) -> Credentials | None:
    """The credentials config.json holds for ``host``, or None if it holds none."""
    path = docker_config_path(environ)
    try:
        raw = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise BadInput(
            f"{path}: cannot read ({exc.strerror}); fix it or set DOCKER_CONFIG"
        ) from exc
    try:
        config: Any = json.loads(raw)
    except ValueError as exc:
        raise BadInput(f"{path}: not valid JSON ({exc}); fix it or run `docker login`") from exc
    if not isinstance(config, dict):
        raise BadInput(f"{path}: not a JSON object; fix it or run `docker login`")
    helpers = config.get("credHelpers") or {}
    helper = (
        next((h for k, h in helpers.items() if _host_of(k) == host), None)
        if isinstance(helpers, dict)
        else None
    )
    auths = config.get("auths") or {}
    entry = (
        next((v for k, v in auths.items() if _host_of(k) == host), None)
        if isinstance(auths, dict)
        else None
    )
    if helper is None and isinstance(config.get("credsStore"), str) and entry is not None:
        helper = config["credsStore"]
    if isinstance(helper, str) and helper:
        return _from_helper(helper, host, path)
    if not isinstance(entry, dict):
        return None
    if isinstance(entry.get("identitytoken"), str) and entry["identitytoken"]:
        return Credentials(TOKEN_USER, "", str(path), identity_token=entry["identitytoken"])
    if isinstance(entry.get("auth"), str) and entry["auth"]:
        try:
            pair = base64.b64decode(entry["auth"], validate=True).decode()
            user, sep, password = pair.partition(":")
        except (binascii.Error, UnicodeDecodeError):
            sep = ""
        if not sep:
            raise BadInput(
                f"{path}: auths[{host!r}].auth is not base64 of user:password; "
                f"run `docker login {host}` again"
            )
        return Credentials(user, password, str(path))
    if isinstance(entry.get("username"), str) and isinstance(entry.get("password"), str):
        return Credentials(entry["username"], entry["password"], str(path))
    forms = sorted(k for k, v in entry.items() if v and k not in _ENTRY_INFO)
    if forms:
        raise BadInput(
            f"{path}: auths[{host!r}] holds {', '.join(forms)}, a credential form lockstep "
            "does not support (it reads auth, username + password, or identitytoken); "
            f"run `docker login {host}` with a user and password, or use a credential helper"
        )
    return None


def _from_helper(helper: str, host: str, config: Path) -> Credentials:
    program = f"docker-credential-{helper}"
    try:
        proc = subprocess.run(
            [program, "get"], input=host, capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BadInput(
            f"{config}: credential helper {program} for {host} did not run "
            f"({type(exc).__name__}); install it or fix credHelpers"
        ) from exc
    if proc.returncode != 0:
        raise BadInput(
            f"{config}: {program} has no credentials for {host}; run `docker login {host}`"
        )
    try:
        data = json.loads(proc.stdout)
        if data["Username"] == TOKEN_USER:
            return Credentials(TOKEN_USER, "", program, identity_token=str(data["Secret"]))
        return Credentials(str(data["Username"]), str(data["Secret"]), program)
    except (ValueError, KeyError, TypeError) as exc:
        raise BadInput(
            f"{program} answered something other than Username/Secret JSON for "
            f"{host}; fix the helper"
        ) from exc
