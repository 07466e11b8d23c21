"""Whether an environment on disk is exactly what its ``ENV.json`` lists.

``ENV.json`` (``MARKER``, schema ``ENV_SCHEMA``) lists every file of an
environment with its sha256, size and modification time, and whether it is
compiled. ``verify`` walks the directory against it: no file unlisted (until
the compile, ``.pyc`` files in ``__pycache__`` are allowed), none missing,
none changed, no link, nothing but regular files.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from lockstep.bundles.env_compile import file_sha256, is_pyc, is_pyc_temp
from lockstep.core.atomic import temp_owner

MARKER = "ENV.json"
ENV_SCHEMA = "lockstep.env/v3"  # v3: the platform whose wheels it holds


def verify(final: Path, key: str, platform: str, deep: bool = False) -> tuple[str, bool]:
    """``(why final is not exactly the environment its ENV.json lists, for ``platform``,
    "" if it is; whether it is compiled)``.

    Every file must be listed, with its size and modification time (any write
    changes them); ``deep`` also compares every file's sha256 (``verify_deep``).
    Until it is compiled, unlisted ``.pyc`` files in ``__pycache__`` are allowed, and so
    is the seal's temporary of ``ENV.json``."""
    try:
        marker = json.loads((final / MARKER).read_bytes())
        files = {str(p): (str(h), int(n), int(m)) for p, h, n, m in marker["files"]}
        compiled = marker["compiled"] is True
        if marker.get("schema") != ENV_SCHEMA or marker.get("key") != key:
            return "its ENV.json is for another environment", False
        if marker.get("platform") != platform:
            return f"it holds the wheels of {marker.get('platform')}, not {platform}", False
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"its ENV.json does not read ({exc})", False
    seen = 0
    pending = [("", str(final))]  # (path under final, with a trailing /; real path)
    while pending:
        under, real = pending.pop()
        try:
            entries = list(os.scandir(real))
        except OSError as exc:  # removed or made unreadable meanwhile
            return f"{under or '.'} does not read ({exc.strerror})", compiled
        for entry in entries:
            rel = under + entry.name
            if entry.is_symlink():
                return f"{rel} is a symlink", compiled
            if entry.is_dir(follow_symlinks=False):
                pending.append((rel + "/", entry.path))
                continue
            if rel == MARKER or (not compiled and temp_owner(rel, MARKER) is not None):
                continue  # the marker, or the seal writing its compiled form right now
            being_compiled = not compiled and (is_pyc(rel) or is_pyc_temp(rel))
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError as exc:
                if being_compiled:
                    continue  # a compile's temporary, renamed meanwhile
                return f"{rel} does not read ({exc.strerror})", compiled
            if not stat.S_ISREG(st.st_mode):
                return f"{rel} is not a regular file", compiled
            want = files.get(rel)
            if want is None:
                if being_compiled:
                    continue
                return f"{rel} is not part of it", compiled
            if st.st_size != want[1] or st.st_mtime_ns != want[2]:
                return f"{rel} was changed", compiled
            if deep and file_sha256(Path(entry.path)) != want[0]:
                return f"{rel} was changed", compiled
            seen += 1
    if seen != len(files):
        return f"{len(files) - seen} of its file(s) are missing", compiled
    return "", compiled
