"""The layer cache: each layer kept under a key made of everything it depends on.

A key is the canonical JSON of the layer's kind, the builder's own code
digest and the digests of its inputs, so a change to any of them makes a new
layer and nothing stale is ever reused. A record holds the layer blob's
digests plus facts learned while making it (the base's python version).
Layers are also materialised once per digest (``staged``) for the steps that
run the image's python against them; a layer made from a tree already on disk (the
base, whose python compiled its own ``.pyc`` there) keeps that tree as its staging
(``staging`` + ``keep_staged``) rather than unpacking its blob again.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import shutil
import tarfile
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lockstep.assembly import compress, oci
from lockstep.assembly.entries import Entry, Layer
from lockstep.assembly.identity import builder_code_digest
from lockstep.assembly.stage import materialize
from lockstep.core.atomic import scratch_dir, staging_dir
from lockstep.core.digests import canonical_json, hex_of, sha256_digest
from lockstep.core.errors import BadInput
from lockstep.core.store import Cache

STAGING = "new"  # the stem of a tree being made under ``staged/`` (core.atomic's naming)


@dataclass(frozen=True)
class LayerRecord:
    """A cached layer: its blob's digests, plus facts learned while making it."""

    digest: str
    diff_id: str
    size: int
    facts: Mapping[str, Any] = field(default_factory=dict)

    def ref(self) -> oci.LayerRef:
        return oci.LayerRef(self.digest, self.diff_id, self.size)


def _lost(cache: Cache, digest: str) -> BadInput:
    return BadInput(
        f"{cache.blob_path(digest)}: cached layer is missing or corrupt; "
        "run the build again (it will be remade)"
    )


def read_blob(cache: Cache, digest: str) -> bytes:
    """A layer blob the build put in ``cache``; BadInput if it is gone or corrupt."""
    data = cache.get_blob(digest)
    if data is None:
        raise _lost(cache, digest)
    return data


def entries_from_tar(raw: bytes) -> list[Entry]:
    """Entries of an uncompressed layer tar we wrote ourselves."""
    out: list[Entry] = []
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
        for info in tar:
            name = info.name.rstrip("/")
            if info.isdir():
                out.append(Entry.dir(name, info.mode))
            elif info.issym():
                out.append(Entry.symlink(name, info.linkname))
            elif info.isfile():
                f = tar.extractfile(info)
                assert f is not None
                out.append(Entry.file(name, f.read(), info.mode))
    return out


class LayerCache:
    """Layers of one builder (its code digest) in a content-addressed ``Cache``."""

    def __init__(self, cache: Cache) -> None:
        self.cache = cache
        self._code = builder_code_digest()
        self._staged: dict[str, Path] = {}
        self._staging = threading.Lock()  # layers are made on several threads (``schedule``)

    def key(self, kind: str, **parts: str) -> str:
        code = {"kind": kind, "code": self._code, "compressor": compress.IDENTITY}
        return sha256_digest(canonical_json({**code, **parts}))

    def get(self, kind: str, key: str) -> LayerRecord | None:
        """The record stored under ``key``, if it and its blob are still present."""
        record_digest = self.cache.get_key(kind, key)
        if record_digest is None:
            return None
        raw = self.cache.get_blob(record_digest)
        if raw is None:
            return None
        data = json.loads(raw)
        record = LayerRecord(data["digest"], data["diff_id"], data["size"], data["facts"])
        return record if self.cache.blob_path(record.digest).exists() else None

    def put(
        self, kind: str, key: str, layer: Layer, facts: Mapping[str, Any] | None = None
    ) -> LayerRecord:
        """Store ``layer`` (and its record under ``key``)."""
        self.cache.put_blob(layer.blob)
        record = LayerRecord(layer.digest, layer.diff_id, layer.size, dict(facts or {}))
        record_digest = self.cache.put_blob(
            canonical_json(
                {
                    "digest": record.digest,
                    "diff_id": record.diff_id,
                    "size": record.size,
                    "facts": record.facts,
                }
            )
        )
        self.cache.put_key(kind, key, record_digest)
        return record

    def get_fact(self, kind: str, key: str) -> Any:
        """A JSON value stored under ``key`` (``put_fact``), or None."""
        digest = self.cache.get_key(kind, key)
        raw = self.cache.get_blob(digest) if digest else None
        return None if raw is None else json.loads(raw)

    def put_fact(self, kind: str, key: str, value: Any) -> None:
        """Remember a JSON value under ``key`` (a plan, not a layer)."""
        self.cache.put_key(kind, key, self.cache.put_blob(canonical_json(value)))

    def blob(self, digest: str) -> bytes:
        return read_blob(self.cache, digest)

    def copy_blob(self, digest: str, out: int) -> None:
        """Append a layer blob to the file open as ``out`` (what the sinks write:
        ``oci.BlobCopy``); BadInput if it is gone or corrupt (nothing appended; a corrupt
        one is removed, so the next build makes it again)."""
        if not self.cache.copy_blob(digest, out):
            raise _lost(self.cache, digest)

    def staged(self, record: LayerRecord) -> Path:
        """The layer's files on disk under the cache (made once per layer digest)."""
        with self._staging:
            if record.digest in self._staged:
                return self._staged[record.digest]
            path = self.cache.root / "staged" / hex_of(record.digest)
            if not (path / ".complete").exists():
                entries = entries_from_tar(gzip.decompress(self.blob(record.digest)))
                with staging_dir(path) as tmp:
                    materialize(entries, tmp)
                    (tmp / ".complete").write_text(record.digest)
            self._staged[record.digest] = path
            return path

    @contextlib.contextmanager
    def staging(self) -> Iterator[Path]:
        """An empty directory under ``staged/`` to make a layer's tree in, removed after the
        block unless ``keep_staged`` took it; a killed build's is removed by the next."""
        parent = self.cache.root / "staged"
        parent.mkdir(parents=True, exist_ok=True)
        with scratch_dir(STAGING, parent) as tree:
            yield tree

    def keep_staged(self, record: LayerRecord, tree: Path) -> Path:
        """``tree`` (from ``staging``: exactly the layer's entries, materialised) as the
        layer's staging, so ``staged`` need not unpack the blob; a staging already there
        is kept (and ``tree`` left to be removed)."""
        with self._staging:
            path = self.cache.root / "staged" / hex_of(record.digest)
            if not (path / ".complete").exists():
                (tree / ".complete").write_text(record.digest)
                if path.exists():
                    shutil.rmtree(path)  # an incomplete one, left by a killed build
                os.replace(tree, path)
            self._staged[record.digest] = path
            return path
