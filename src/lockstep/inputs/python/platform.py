"""The image interpreter's complete platform (markers and wheel tags), for pex.

``complete_platform`` asks a python (through ``pex3 interpreter inspect
--markers --tags``) for its marker environment and compatible wheel tags, so a
build host with another python can lock and install for Debian bookworm's
python3.11. Host facts (the interpreter's path, the kernel's release and
version) are left out, so the file is the same on every machine. The python
asked is the image's own, run from the cached base layer, by ``lockstep lock
platform`` (a function of the Debian lock); ``lockstep lock python`` reads the
committed file and builds nothing.
"""

from __future__ import annotations

import json
import shlex
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lockstep.core.errors import BadInput, ServiceFailed
from lockstep.inputs.python.pex import PEX_VERSION, last_line, pex_root, run_pex

# Marker keys that describe the machine the interpreter happens to run on (the
# kernel), not the image; left out so the platform file is the same everywhere.
# A requirement whose marker needs one of them then fails to lock, loudly.
HOST_MARKERS = frozenset({"platform_release", "platform_version"})


def normalize_platform(inspected: Mapping[str, Any]) -> dict[str, Any]:
    """Keep what pex needs (markers, tags); drop the path and the host's kernel facts."""
    markers = inspected.get("marker_environment")
    tags = inspected.get("compatible_tags")
    if (
        not isinstance(markers, dict)
        or not isinstance(tags, list)
        or not tags
        or not all(isinstance(t, str) for t in tags)
    ):
        raise ServiceFailed(
            "pex3 interpreter inspect gave no marker environment or tags; "
            f"check that pex=={PEX_VERSION} is installed"
        )
    return {
        "marker_environment": {k: markers[k] for k in sorted(markers) if k not in HOST_MARKERS},
        # pex reads tags in preference order: keep it, only drop repeats.
        "compatible_tags": list(dict.fromkeys(tags)),
    }


def platform_json(platform: Mapping[str, Any]) -> bytes:
    """The bytes written to ``images/complete-platform.json``."""
    return (json.dumps(platform, indent=2, sort_keys=True) + "\n").encode()


def complete_platform(
    python_argv: Sequence[str], env: Mapping[str, str] | None = None, cache_dir: Path | None = None
) -> bytes:
    """The ``--complete-platform`` JSON of the interpreter run by ``python_argv``.

    ``python_argv`` is a command that runs a python (``["/usr/bin/python3.11"]``,
    or a loader plus a staged interpreter); ``env`` is added to its environment.
    pex wants one executable, so a small wrapper script runs the command.
    """
    if not python_argv:
        raise BadInput("complete_platform: empty interpreter command")
    with tempfile.TemporaryDirectory(prefix="lockstep-inspect-") as tmp:
        wrapper = Path(tmp) / "python3"
        lines = ["#!/bin/sh"]
        lines += [f"export {k}={shlex.quote(v)}" for k, v in sorted((env or {}).items())]
        lines.append(f'exec {shlex.join(python_argv)} "$@"')
        wrapper.write_text("\n".join(lines) + "\n")
        wrapper.chmod(0o755)
        root = cache_dir if cache_dir is not None else Path(tmp) / "cache"
        out = run_pex(
            [
                "interpreter",
                "inspect",
                "--markers",
                "--tags",
                "--python",
                str(wrapper),
                "--pex-root",
                str(pex_root(root)),
            ],
            root,
            "interpreter inspect",
        )
    try:
        inspected = json.loads(out)
    except ValueError as exc:
        raise ServiceFailed(
            f"pex3 interpreter inspect printed no JSON ({exc}): {last_line(out)}"
        ) from exc
    return platform_json(normalize_platform(inspected))


def read_platform(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise BadInput(
            f"{path}: cannot read the complete platform ({exc.strerror}); restore it "
            "from version control or regenerate it from the image's python "
            "with `lockstep lock platform`"
        ) from exc
    return parse_platform(raw, str(path))


def parse_platform(raw: bytes, where: str) -> dict[str, Any]:
    """A complete platform's bytes, checked to be one; ``BadInput`` naming ``where``."""
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise BadInput(
            f"{where}: not valid JSON ({exc}); regenerate it from the image's python "
            "with `lockstep lock platform`"
        ) from exc
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("marker_environment"), dict)
        or not isinstance(data.get("compatible_tags"), list)
    ):
        raise BadInput(
            f"{where}: not a pex complete platform (needs marker_environment and "
            "compatible_tags); regenerate it from the image's python with `lockstep lock platform`"
        )
    return data
