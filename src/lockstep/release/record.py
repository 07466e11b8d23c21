"""The release manifest, ``release/<version>.json``: the pushed digests of one build.

Written by ``lockstep release`` only after every push is verified; read by
``lockstep verify``. JSON with sorted keys and two-space indents, for humans
and diffs; ``layers`` names each layer's digest so a failed verify can say
which one differs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lockstep.core.errors import BadInput

SCHEMA = "lockstep.release/v1"


@dataclass(frozen=True)
class ImageRecord:
    reference: str  # HOST/REPO/NAME@sha256:…
    digest: str
    config: str

    def to_dict(self) -> dict[str, str]:
        return {"reference": self.reference, "digest": self.digest, "config": self.config}


@dataclass(frozen=True)
class ReleaseManifest:
    version: str
    tag: str
    commit: str
    build_id: str
    registry: str
    images: Mapping[str, ImageRecord]
    executors: tuple[str, ...]
    inputs: Mapping[str, str]  # the lock and source digests of the build (docs/design.md §4.1)
    layers: Mapping[str, str]  # base, python:<group>…, app, manifest -> blob digest
    # role -> {"sbom", "provenance": artifact manifest digests, "referrers": the
    # sha256-<hex> index, "signature": the sha256-<hex>.sig manifest when signed}
    attachments: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "version": self.version,
            "tag": self.tag,
            "commit": self.commit,
            "build_id": self.build_id,
            "registry": self.registry,
            "images": {role: image.to_dict() for role, image in sorted(self.images.items())},
            "executors": list(self.executors),
            "inputs": dict(sorted(self.inputs.items())),
            "layers": dict(self.layers),  # base, python:<group>…, app, manifest
            **(
                {
                    "attachments": {
                        role: dict(sorted(found.items()))
                        for role, found in sorted(self.attachments.items())
                    }
                }
                if self.attachments
                else {}
            ),
        }

    def to_json(self) -> bytes:
        return (json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n").encode()

    @classmethod
    def read(cls, path: Path) -> ReleaseManifest:
        """Read and validate; ``BadInput`` naming the file and the key on any problem."""
        try:
            data = json.loads(path.read_bytes())
        except OSError as exc:
            raise BadInput(
                f"{path}: cannot read ({exc.strerror}); pass the release/<version>.json "
                "that `lockstep release` wrote"
            ) from exc
        except ValueError as exc:
            raise BadInput(f"{path}: not valid JSON ({exc}); restore it from the release") from exc

        def need(key: str, kind: type) -> Any:
            value = data.get(key) if isinstance(data, dict) else None
            if not isinstance(value, kind):
                raise BadInput(
                    f"{path}: {key!r} is missing or not a {kind.__name__}; "
                    "is this a release manifest?"
                )
            return value

        if need("schema", str) != SCHEMA:
            raise BadInput(f"{path}: schema is {data['schema']!r}, expected {SCHEMA!r}")
        images = {}
        for role, image in need("images", dict).items():
            if not (
                isinstance(image, dict)
                and all(isinstance(image.get(k), str) for k in ("reference", "digest", "config"))
            ):
                raise BadInput(f"{path}: images.{role} needs reference, digest and config")
            images[role] = ImageRecord(image["reference"], image["digest"], image["config"])
        return cls(
            version=need("version", str),
            tag=need("tag", str),
            commit=need("commit", str),
            build_id=need("build_id", str),
            registry=need("registry", str),
            images=images,
            executors=tuple(need("executors", list)),
            inputs=need("inputs", dict),
            layers=need("layers", dict),
            attachments=data.get("attachments") or {},
        )
