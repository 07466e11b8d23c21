"""Registry credentials from the usual Docker ``config.json``.

Looked up as ``docker login`` writes them: ``$DOCKER_CONFIG/config.json``,
else ``~/.docker/config.json``; ``credHelpers``/``credsStore`` run
``docker-credential-<helper> get``, else ``auths[HOST].auth`` is base64 of
``user:password``. Passwords are never logged and never in a ``repr``.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import subprocess
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
        return Credentials(str(data["Username"]), str(data["Secret"]), program)
    except (ValueError, KeyError, TypeError) as exc:
        raise BadInput(
            f"{program} answered something other than Username/Secret JSON for "
            f"{host}; fix the helper"
        ) from exc
