"""``lockstep inspect``: what an image archive holds, read back from its bytes."""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path
from typing import Any

from lockstep.assembly.layout import MANIFEST_FILE, role_of
from lockstep.assembly.oci import read_archive
from lockstep.core.errors import BadInput
from lockstep.core.settings import MANIFEST_PATH
from lockstep.manifest import BuildManifest


def _manifest_from_layers(archive_blobs: list[bytes]) -> bytes | None:
    """The build manifest file from the topmost layer that has it."""
    for blob in reversed(archive_blobs):
        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob)), mode="r:") as tar:
            for info in tar:
                if info.name == MANIFEST_FILE and info.isfile():
                    f = tar.extractfile(info)
                    assert f is not None
                    return f.read()
    return None


def gzip_size(blob: bytes) -> int:
    """The uncompressed size a gzip member records in its trailer (ISIZE: exact below 4 GiB)."""
    return int.from_bytes(blob[-4:], "little") if len(blob) >= 18 else 0


def _history(config: dict[str, Any]) -> list[dict[str, Any]]:
    """The config's history entries that stand for a layer (not ``empty_layer`` ones)."""
    entries = config.get("history") or []
    return [e for e in entries if isinstance(e, dict) and not e.get("empty_layer")]


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
        "role": role_of(config.get("Labels", {})),
        "platform": f"{archive.config.get('os')}/{archive.config.get('architecture')}",
        "entrypoint": config.get("Entrypoint"),
        "labels": config.get("Labels", {}),
        "layers": [
            {
                "digest": layer["digest"],
                "size": layer["size"],
                "uncompressed": gzip_size(blob),
                "what": str(entry.get("created_by", "")),
            }
            for layer, blob, entry in zip(
                archive.manifest["layers"], layer_blobs, _history(archive.config), strict=True
            )
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
        f"platform  {info['platform']}",
        f"digest    {info['digest']}",
        f"config    {info['config']}",
        f"build_id  {m['build_id']}",
        f"version   {m['version']}",
        f"python    {m['python']}",
        f"executors {', '.join(m['executors'])}",
        f"stamp     {m['stamp'] or '(unstamped)'}",
        f"layers    {len(info['layers'])}, {info['size'] / 1e6:.1f} MB compressed, "
        f"{sum(layer['uncompressed'] for layer in info['layers']) / 1e6:.1f} MB uncompressed",
    ]
    lines += [
        f"  {layer['size'] / 1e6:7.2f} MB {layer['uncompressed'] / 1e6:8.2f} MB  "
        f"{layer['digest'][:19]}  {layer['what'] or '(no history)'}"
        for layer in info["layers"]
    ]
    return "\n".join(lines)
