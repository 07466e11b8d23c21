"""Registry credentials from Docker's config.json, never shown."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from lockstep.core.errors import BadInput
from lockstep.oci.auth import credentials_for


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
