"""The third-party layer: the pex lock installed for the image's python, every file verified.

``install_entries`` installs the lock with ``pex3 venv create --layout flat``
into a scratch directory and turns the tree into layer entries under the
image's ``dist-packages``. Every file is checked against the ``RECORD`` of its
wheel, and every wheel against the lock's sha256, so a tampered pex cache or
an edited lock is an error, never a different image.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import os
import tempfile
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from lockstep.assembly.entries import Entry
from lockstep.assembly.layout import SITE_DIR
from lockstep.core.atomic import SUFFIX, remove_stale, temp_prefix
from lockstep.core.errors import CheckFailed
from lockstep.core.progress import Progress, quiet
from lockstep.inputs.python.lock import LockedWheel, read_lock
from lockstep.inputs.python.pex import common_args, pex_root, run_pex
from lockstep.inputs.python.platform import read_platform

# Never shipped: byte code (compiled later with the image's python), console
# scripts (the image runs modules, and their shebangs name the build host's
# python), and per-install metadata that records where an install came from.
_DROPPED_DIRS = frozenset({"__pycache__"})
_DROPPED_TOP = frozenset({"bin"})
_DROPPED_META = frozenset({"direct_url.json", "INSTALLER", "REQUESTED"})


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _installed_path(member: str) -> str | None:
    """Where a wheel member lands in a flat (``pip install --target``-like) install."""
    head, _, rest = member.partition("/")
    if not head.endswith(".data"):
        return member
    scheme, _, rest = rest.partition("/")
    if scheme in ("purelib", "platlib", "data"):
        return rest
    if scheme == "scripts":
        return "bin/" + rest
    return None  # headers: not part of the flat tree


@dataclass(frozen=True)
class _WheelFacts:
    dist_info: str
    record: bytes  # the wheel's own RECORD: lists exactly the files we ship
    hashes: Mapping[str, str]  # installed path -> "sha256=<urlsafe b64>"


def _find_download(root: Path, wheel: LockedWheel) -> Path:
    found = sorted(root.glob(f"downloads/*/{wheel.sha256}/{wheel.filename}"))
    if not found:
        raise CheckFailed(
            f"{wheel.filename}: pex installed it but its download is not in "
            f"{root}/downloads; delete {root} and rebuild"
        )
    return found[0]


def _wheel_facts(root: Path, wheel: LockedWheel) -> _WheelFacts:
    """Check the downloaded wheel against the lock's sha256 and read its RECORD."""
    path = _find_download(root, wheel)
    data = path.read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    if actual != wheel.sha256:
        raise CheckFailed(
            f"{wheel.filename}: the cached wheel {path} has sha256 {actual}, the "
            f"lock says {wheel.sha256}: the pex cache is corrupt or tampered with; "
            f"delete {root} and rebuild"
        )
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        records = [
            n for n in zf.namelist() if n.count("/") == 1 and n.endswith(".dist-info/RECORD")
        ]
        if len(records) != 1:
            raise CheckFailed(
                f"{wheel.filename}: expected one .dist-info/RECORD, found "
                f"{len(records)}; the wheel is malformed"
            )
        record = zf.read(records[0])
    hashes: dict[str, str] = {}
    for row in csv.reader(io.StringIO(record.decode())):
        if len(row) >= 2 and row[1]:
            target = _installed_path(row[0])
            if target is not None:
                hashes[target] = row[1]
    return _WheelFacts(records[0].split("/")[0], record, hashes)


def _walk(tree: Path) -> Iterator[tuple[str, Path]]:
    """Files under ``tree`` (relative posix path, absolute path), sorted, minus dropped ones."""
    for dirpath, dirnames, filenames in os.walk(tree):
        dirnames[:] = sorted(d for d in dirnames if d not in _DROPPED_DIRS)
        here = Path(dirpath)
        rel_dir = here.relative_to(tree).as_posix()
        if rel_dir == ".":
            dirnames[:] = [d for d in dirnames if d not in _DROPPED_TOP]
        for name in sorted(filenames):
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            if name.endswith((".pyc", ".pyo")):
                continue
            parent = rel.rpartition("/")[0]
            if parent.endswith(".dist-info") and "/" not in parent and name in _DROPPED_META:
                continue
            yield rel, here / name


def tree_entries(tree: Path, facts: Sequence[_WheelFacts]) -> list[Entry]:
    """A flat install → entries under ``SITE_DIR``, every file checked against its wheel.

    Every shipped byte is either a wheel's own ``RECORD`` or a file whose sha256
    that ``RECORD`` lists, and every wheel was checked against the lock: the
    entries are a function of the lock alone (no build paths, no pex metadata).
    Modes: 0755 where pex kept an owner-exec bit from the wheel, else 0644.
    """
    expected: dict[str, str] = {}
    records: dict[str, bytes] = {}
    for fact in facts:
        expected.update(fact.hashes)
        records[f"{fact.dist_info}/RECORD"] = fact.record
    entries: list[Entry] = []
    seen_records: set[str] = set()
    for rel, path in _walk(tree):
        if path.is_symlink() or not path.is_file():
            raise CheckFailed(
                f"{rel}: pex installed a symlink or special file; wheels hold regular files only"
            )
        mode = 0o755 if path.stat().st_mode & 0o100 else 0o644
        if rel in records:
            data = records[rel]  # the wheel's own RECORD, not pex's (which lists bin/ scripts)
            seen_records.add(rel)
        else:
            data = path.read_bytes()
            want = expected.get(rel)
            if want is None:
                raise CheckFailed(
                    f"{rel}: installed by pex but listed in no locked wheel's "
                    "RECORD; the pex cache may be tampered with; delete it and "
                    "rebuild"
                )
            if _record_hash(data) != want:
                raise CheckFailed(
                    f"{rel}: content differs from its locked wheel's RECORD: the "
                    "pex cache is corrupt or tampered with; delete it and rebuild"
                )
        entries.append(Entry.file(f"{SITE_DIR}/{rel}", data, mode))
    missing = sorted(set(records) - seen_records)
    if missing:
        raise CheckFailed(
            f"{missing[0].split('/')[0]}: a locked wheel is missing from pex's "
            "install; delete the pex cache and rebuild"
        )
    return entries


def install_entries(
    lock_path: Path, platform_path: Path, cache_dir: Path, progress: Progress = quiet
) -> list[Entry]:
    """Install the lock for the image's platform; the files as layer entries (no .pyc, no bin/)."""
    wheels = read_lock(lock_path)
    read_platform(platform_path)
    root = pex_root(cache_dir)
    scratch_parent = cache_dir / "tmp"
    scratch_parent.mkdir(parents=True, exist_ok=True)
    remove_stale(scratch_parent, "venv")  # a killed build's half-made install
    with tempfile.TemporaryDirectory(
        prefix=temp_prefix("venv"), suffix=SUFFIX, dir=scratch_parent
    ) as tmp:
        tree = Path(tmp) / "site"
        run_pex(
            [
                "venv",
                "create",
                *common_args(cache_dir),
                "--layout",
                "flat",
                "--dir",
                str(tree),
                "--lock",
                str(lock_path),
                "--complete-platform",
                str(platform_path),
            ],
            cache_dir,
            "venv create",
            progress,
        )
        progress(f"checking {len(wheels)} installed wheels against {lock_path.name}")
        facts = [_wheel_facts(root, w) for w in wheels]
        entries = tree_entries(tree, facts)
    progress(f"{len(entries)} files from {len(wheels)} wheels")
    return entries
