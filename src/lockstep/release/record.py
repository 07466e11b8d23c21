"""The release manifest, ``release/<version>.json``: the pushed digests of one build.

Written by ``lockstep release`` only after every push is verified; read by
``lockstep verify``. JSON with sorted keys and two-space indents, for humans
and diffs. Each role is an OCI image index (its ``reference`` and ``digest``)
over one image per platform (``platforms``: each manifest's and config's
digest); ``layers`` names each platform's layer digests so a failed verify can
say which one differs, and on which platform.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lockstep.core.errors import BadInput

SCHEMA = "lockstep.release/v2"  # v1 (one image per role, before #22) is not read


@dataclass(frozen=True)
class PlatformImage:
    """One platform's image of a role: the manifest's and the config's digest."""

    digest: str
    config: str

    def to_dict(self) -> dict[str, str]:
        return {"digest": self.digest, "config": self.config}


@dataclass(frozen=True)
class ImageRecord:
    """One role: its image index, pinned, and the image of each platform in it."""

    reference: str  # HOST/REPO/NAME@sha256:<the index>
    digest: str  # the index's
    platforms: Mapping[str, PlatformImage]  # linux/amd64 -> its image, in the index's order

    def to_dict(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "digest": self.digest,
            "platforms": {p: image.to_dict() for p, image in self.platforms.items()},
        }


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
    # platform -> base, python:<group>…, app, <role>:…, manifest -> blob digest
    layers: Mapping[str, Mapping[str, str]]
    # role -> "index" or a platform -> {"sbom", "provenance": artifact manifest digests (a
    # platform's), "referrers": the sha256-<hex> index, "signature", "bundle", …: what
    # signing pushed (docs/design.md §4.6)}
    attachments: Mapping[str, Mapping[str, Mapping[str, str]]] = field(default_factory=dict)

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
            "layers": {p: dict(found) for p, found in self.layers.items()},
            **(
                {
                    "attachments": {
                        role: {
                            subject: dict(sorted(kinds.items()))
                            for subject, kinds in sorted(found.items())
                        }
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
            raise BadInput(
                f"{path}: schema is {data['schema']!r}, expected {SCHEMA!r}; a release "
                "recorded by an older lockstep is verified with that lockstep"
            )
        images = {role: _image(path, role, image) for role, image in need("images", dict).items()}
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


def _image(path: Path, role: str, image: Any) -> ImageRecord:
    """``images.<role>``: the index's reference and digest, and each platform's image."""
    platforms = image.get("platforms") if isinstance(image, dict) else None
    if not (
        isinstance(image, dict)
        and all(isinstance(image.get(k), str) for k in ("reference", "digest"))
        and isinstance(platforms, dict)
        and platforms
        and all(
            isinstance(p, dict) and all(isinstance(p.get(k), str) for k in ("digest", "config"))
            for p in platforms.values()
        )
    ):
        raise BadInput(
            f"{path}: images.{role} needs reference, digest and platforms (each with "
            "digest and config)"
        )
    return ImageRecord(
        image["reference"],
        image["digest"],
        {name: PlatformImage(p["digest"], p["config"]) for name, p in platforms.items()},
    )
