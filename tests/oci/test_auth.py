"""Registry credentials from Docker's config.json, never shown; unsupported forms fail loudly."""

from __future__ import annotations

import base64
import json
import os
import urllib.parse
from pathlib import Path

import pytest

from lockstep.core.errors import BadInput
from lockstep.oci.auth import credentials_for, refresh_token_form


def _config(tmp_path: Path, data: object) -> dict[str, str]:
    (tmp_path / "config.json").write_text(json.dumps(data))
    return {"DOCKER_CONFIG": str(tmp_path)}


def test_credentials_from_docker_config(tmp_path: Path) -> None:
    auth = base64.b64encode(b"ci:s3cret:with:colons").decode()
    env = _config(
        tmp_path,
        {
            "auths": {
                "https://r.io:5000/v1/": {"auth": auth},
                "other.io": {"username": "u", "password": "p"},
            }
        },
    )
    creds = credentials_for("r.io:5000", env)
    assert creds is not None and (creds.username, creds.password) == ("ci", "s3cret:with:colons")
    assert "s3cret" not in repr(creds)
    other = credentials_for("other.io", env)
    assert other is not None and other.username == "u"
    assert credentials_for("nowhere.io", env) is None
    assert credentials_for("r.io", {"DOCKER_CONFIG": str(tmp_path / "none")}) is None
    env = _config(tmp_path, {"auths": {"r.io": {"auth": "not base64!"}}})
    with pytest.raises(BadInput, match=r"docker login r.io"):
        credentials_for("r.io", env)
    env = _config(tmp_path, {"credHelpers": {"r.io": "lockstep-test-missing"}})
    with pytest.raises(BadInput, match="docker-credential-lockstep-test-missing"):
        credentials_for("r.io", env)


def test_credential_forms_lockstep_does_not_speak_fail_loudly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unsupported form is an error naming the registry and the form (never anonymous);
    an identitytoken is read, from config.json or from a helper's ``<token>`` user."""
    env = _config(tmp_path, {"auths": {"acr.io": {"registrytoken": "eyJ…", "email": "a@b"}}})
    with pytest.raises(BadInput) as caught:
        credentials_for("acr.io", env)
    message = str(caught.value)
    assert "auths['acr.io'] holds registrytoken, a credential form lockstep does not" in message
    assert "eyJ" not in message
    env = _config(tmp_path, {"auths": {"acr.io": {"identitytoken": "refresh-1"}}})
    creds = credentials_for("acr.io", env)
    assert creds is not None and creds.identity_token == "refresh-1"
    assert "refresh-1" not in repr(creds)
    env = _config(tmp_path, {"auths": {"acr.io": {}, "e.io": {"email": "a@b"}}})
    assert credentials_for("acr.io", env) is None  # nothing there: anonymous, as docker does
    assert credentials_for("e.io", env) is None
    helper = tmp_path / "bin" / "docker-credential-lockstep-test-token"
    helper.parent.mkdir()
    helper.write_text('#!/bin/sh\necho \'{"Username": "<token>", "Secret": "refresh-2"}\'\n')
    helper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{helper.parent}:{os.environ['PATH']}")
    env = _config(tmp_path, {"credHelpers": {"acr.io": "lockstep-test-token"}})
    creds = credentials_for("acr.io", env)
    assert creds is not None and creds.identity_token == "refresh-2"


def test_the_refresh_token_grant_is_the_documented_form() -> None:
    body = refresh_token_form("rt", "svc", ["repository:a:pull", "repository:b:pull"], "me")
    assert urllib.parse.parse_qsl(body.decode()) == [
        ("grant_type", "refresh_token"),
        ("client_id", "me"),
        ("service", "svc"),
        ("scope", "repository:a:pull repository:b:pull"),
        ("refresh_token", "rt"),
    ]
