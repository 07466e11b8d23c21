"""Digests: canonical JSON, ``sha256:`` strings, and the digest of a tree of files.

Pure functions with fixed test vectors (``tests/core``). Build inputs, job
bundles and the build manifest are all hashed through these, so anyone can
recompute a digest from the same bytes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

PREFIX = "sha256:"


# json.dumps with options makes a new encoder per call; one encoder, the same bytes
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical_json(obj: Any) -> bytes:
    """Keys sorted, no whitespace, UTF-8: the one serialisation we hash."""
    return _CANONICAL.encode(obj).encode()


def sha256_digest(data: bytes) -> str:
    """``sha256:<hex>`` of ``data``."""
    return PREFIX + hashlib.sha256(data).hexdigest()


def of_hex(hexpart: str) -> str:
    """``sha256:<hex>`` for a bare hex digest (as locks record them)."""
    return PREFIX + hexpart


def hex_of(digest: str) -> str:
    """The hex part of ``sha256:<64 hex>``; ``ValueError`` for anything else."""
    algo, _, hexpart = digest.partition(":")
    if algo != "sha256" or len(hexpart) != 64 or not _is_hex(hexpart):
        raise ValueError(f"not a sha256 digest: {digest!r}")
    return hexpart


SHORT = 12  # hex digits of a digest shown to humans and in names


def short_id(digest: str) -> str:
    """The first 12 hex digits of a ``sha256:`` digest: a build's or image's short id, as in
    ``lockstep-worker:0.1.0-<12 hex>``."""
    return digest.removeprefix(PREFIX)[:SHORT]


def is_digest(value: object) -> bool:
    """Whether ``value`` is a ``sha256:<64 lowercase hex>`` string."""
    if not isinstance(value, str):
        return False
    try:
        hex_of(value)
    except ValueError:
        return False
    return True


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdef" for c in text)


@dataclass(frozen=True)
class TreeFile:
    """One file of a tree: posix path relative to the tree's root, exec bit, content."""

    path: str
    executable: bool
    data: bytes


def tree_digest(files: Iterable[TreeFile]) -> str:
    """``sha256:`` over (path, exec bit, content sha256) of every file, in path order."""
    rows = [
        [f.path, "x" if f.executable else "-", hashlib.sha256(f.data).hexdigest()]
        for f in sorted(files, key=lambda f: f.path)
    ]
    return sha256_digest(canonical_json(rows))
