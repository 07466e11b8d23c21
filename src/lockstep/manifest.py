"""The build manifest (docs/design.md §4.1): schema, canonical JSON, build id.

Every image carries one at ``/etc/lockstep/manifest.json``. The build id is a
pure function of the build inputs' digests, so anyone can recompute it; a
manifest whose ``build_id`` does not match its ``inputs`` is corrupt. Beside it,
in the same top layer, the image carries what a bundle is locked against
(``BESIDE``): its Python lock and its python's complete platform, byte for byte.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lockstep.core.bounded import MANIFEST_MAX, read_regular
from lockstep.core.digests import canonical_json, sha256_digest, short_id
from lockstep.core.errors import BadInput
from lockstep.core.settings import MANIFEST as MANIFEST_ENV
from lockstep.core.settings import MANIFEST_PATH

SCHEMA = "lockstep.manifest/v1"
BUILDER = "lockstep-build/2"  # 2: layers compressed by assembly.compress (pinned zlib-ng)
PROTOCOL = 1
INPUT_KEYS = ("builder", "debian_lock", "python_lock", "sources")
# The files beside the manifest: the Python lock (its sha256 is ``inputs.python_lock``) and
# the complete platform of the image's python (a declared source, so in ``inputs.sources``).
PYTHON_LOCK_PATH = "/etc/lockstep/python.lock.json"
PLATFORM_PATH = "/etc/lockstep/complete-platform.json"
BESIDE = (PYTHON_LOCK_PATH, PLATFORM_PATH)


def compute_build_id(inputs: Mapping[str, str]) -> str:
    """``sha256:`` of the canonical JSON of the build inputs' digests."""
    return sha256_digest(canonical_json(dict(inputs)))


@dataclass(frozen=True)
class Stamp:
    """Git facts added by ``--stamp``; the build id does not depend on them."""

    commit: str
    tag: str | None
    dirty: bool

    def to_dict(self) -> dict[str, Any]:
        return {"commit": self.commit, "tag": self.tag, "dirty": self.dirty}


@dataclass(frozen=True)
class BuildManifest:
    """What an image says about itself."""

    name: str
    version: str
    inputs: Mapping[str, str]
    executors: tuple[str, ...]
    python: str
    stamp: Stamp | None = None
    protocol: int = PROTOCOL
    build_id: str = field(default="")
    # The image's platform ("linux/arm64"); not an input: every platform of a build shares
    # its build id. "" in a manifest that names none (written before there were several).
    platform: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", dict(sorted(self.inputs.items())))
        object.__setattr__(self, "executors", tuple(sorted(self.executors)))
        if not self.build_id:
            object.__setattr__(self, "build_id", compute_build_id(self.inputs))

    @property
    def short_id(self) -> str:
        """The first 12 hex digits of the build id, for humans."""
        return short_id(self.build_id)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "name": self.name,
            "version": self.version,
            "build_id": self.build_id,
            "inputs": dict(self.inputs),
            "executors": list(self.executors),
            "protocol": self.protocol,
            "python": self.python,
            "stamp": self.stamp.to_dict() if self.stamp else None,
            **({"platform": self.platform} if self.platform else {}),
        }

    def to_json(self) -> bytes:
        """Canonical JSON: the exact bytes written into the image."""
        return canonical_json(self.to_dict())

    @classmethod
    def from_dict(cls, data: Any, where: str = "manifest") -> BuildManifest:
        """Validate a decoded manifest; raise ``BadInput`` naming ``where``."""

        def fail(what: str) -> BadInput:
            return BadInput(
                f"{where}: {what}; rebuild the image or point {MANIFEST_ENV} at a "
                "manifest written by `lockstep build`"
            )

        if not isinstance(data, dict):
            raise fail("not a JSON object")
        if data.get("schema") != SCHEMA:
            raise fail(f"schema is {data.get('schema')!r}, expected {SCHEMA!r}")
        for key, kind in (
            ("name", str),
            ("version", str),
            ("build_id", str),
            ("python", str),
            ("protocol", int),
        ):
            if not isinstance(data.get(key), kind) or isinstance(data.get(key), bool):
                raise fail(f"{key!r} is missing or not a {kind.__name__}")
        inputs = data.get("inputs")
        if (
            not isinstance(inputs, dict)
            or sorted(inputs) != sorted(INPUT_KEYS)
            or not all(isinstance(v, str) for v in inputs.values())
        ):
            raise fail(f"'inputs' must map exactly {', '.join(INPUT_KEYS)} to strings")
        executors = data.get("executors")
        if not isinstance(executors, list) or not all(isinstance(e, str) for e in executors):
            raise fail("'executors' must be a list of strings")
        stamp_data = data.get("stamp")
        stamp: Stamp | None = None
        if stamp_data is not None:
            if not (
                isinstance(stamp_data, dict)
                and isinstance(stamp_data.get("commit"), str)
                and isinstance(stamp_data.get("dirty"), bool)
                and (stamp_data.get("tag") is None or isinstance(stamp_data.get("tag"), str))
            ):
                raise fail("'stamp' must be null or {commit, tag, dirty}")
            stamp = Stamp(stamp_data["commit"], stamp_data.get("tag"), stamp_data["dirty"])
        platform = data.get("platform", "")
        if not isinstance(platform, str):
            raise fail("'platform' must be a string (os/architecture)")
        expected = compute_build_id(inputs)
        if data["build_id"] != expected:
            raise fail(
                f"build_id {data['build_id']} does not match its inputs ({expected}): "
                "the manifest is corrupt"
            )
        return cls(
            name=data["name"],
            version=data["version"],
            inputs=inputs,
            executors=tuple(executors),
            python=data["python"],
            stamp=stamp,
            protocol=data["protocol"],
            build_id=data["build_id"],
            platform=platform,
        )

    @classmethod
    def from_json(cls, raw: bytes | str, where: str = "manifest") -> BuildManifest:
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadInput(
                f"{where}: not valid JSON ({exc}); rebuild the image or point "
                f"{MANIFEST_ENV} at a manifest written by `lockstep build`"
            ) from exc
        return cls.from_dict(data, where)


def manifest_path(environ: Mapping[str, str] | None = None) -> Path:
    """Where this process's manifest lives: ``$LOCKSTEP_MANIFEST`` or the image default."""
    env = os.environ if environ is None else environ
    return Path(env.get(MANIFEST_ENV) or MANIFEST_PATH)


def load_manifest(path: Path | None = None) -> BuildManifest:
    """Read and validate a manifest file; ``BadInput`` naming the path if it is absent or bad."""
    path = path or manifest_path()
    try:
        raw = read_regular(path, MANIFEST_MAX)
    except OSError as exc:
        raise BadInput(
            f"{path}: cannot read the build manifest ({exc.strerror}); run inside a "
            f"lockstep image or set {MANIFEST_ENV} (e.g. to out/manifest.json, which "
            "`lockstep build` writes)"
        ) from exc
    return BuildManifest.from_json(raw, str(path))
