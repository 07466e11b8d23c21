"""``lockstep inspect``: what an image archive holds, read back from its bytes."""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path
from typing import Any

from lockstep.build.oci import read_archive
from lockstep.errors import BadInput
from lockstep.manifest import MANIFEST_PATH, BuildManifest


def _manifest_from_layers(archive_blobs: list[bytes]) -> bytes | None:
    """The build manifest file from the topmost layer that has it."""
    wanted = MANIFEST_PATH.lstrip("/")
    for blob in reversed(archive_blobs):
        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob)), mode="r:") as tar:
            for info in tar:
                if info.name == wanted and info.isfile():
                    f = tar.extractfile(info)
                    assert f is not None
                    return f.read()
    return None


def inspect_archive(path: Path) -> dict[str, Any]:
    """Digests, config, layers and the build manifest of the archive at ``path``."""
    archive = read_archive(path)
    layer_blobs = [archive.blob(layer["digest"]) for layer in archive.manifest["layers"]]
    raw = _manifest_from_layers(layer_blobs)
    if raw is None:
        raise BadInput(f"{path}: no {MANIFEST_PATH} in any layer; not a lockstep image")
    manifest = BuildManifest.from_json(raw, f"{path}:{MANIFEST_PATH}")
    config = archive.config.get("config", {})
    return {
        "path": str(path),
        "digest": archive.digest,
        "config": archive.config_digest,
        "role": config.get("Labels", {}).get("io.lockstep.role"),
        "entrypoint": config.get("Entrypoint"),
        "labels": config.get("Labels", {}),
        "layers": [
            {"digest": layer["digest"], "size": layer["size"]}
            for layer in archive.manifest["layers"]
        ],
        "size": sum(layer["size"] for layer in archive.manifest["layers"]),
        "manifest": manifest.to_dict(),
    }


def describe(info: dict[str, Any]) -> str:
    """A human summary of ``inspect_archive``'s result."""
    m = info["manifest"]
    lines = [
        f"image     {info['path']}",
        f"role      {info['role']}",
        f"digest    {info['digest']}",
        f"config    {info['config']}",
        f"build_id  {m['build_id']}",
        f"version   {m['version']}",
        f"python    {m['python']}",
        f"executors {', '.join(m['executors'])}",
        f"stamp     {m['stamp'] or '(unstamped)'}",
        f"layers    {len(info['layers'])}, {info['size'] / 1e6:.1f} MB compressed",
    ]
    lines += [f"  {layer['digest']}  {layer['size'] / 1e6:8.2f} MB" for layer in info["layers"]]
    return "\n".join(lines)
