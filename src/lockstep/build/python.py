"""The image's third-party Python packages, pinned by a pex lock (DESIGN.md §6).

Three steps, each a pure function of its inputs:

* ``complete_platform`` asks the image's own interpreter (through
  ``pex3 interpreter inspect --markers --tags``) for its marker environment and
  compatible wheel tags, so a build host with another python can lock and install
  for Debian bookworm's python3.11. Host facts (the interpreter's path, the
  kernel's release and version) are left out, so the file is the same on every
  machine.
* ``lock`` runs ``pex3 lock create`` for that platform: strict, wheels only,
  sha256 for every artifact, packages from the public index only (the host's
  pip configuration and pexrc files are ignored).
* ``install_entries`` installs the lock with ``pex3 venv create --layout flat``
  into a scratch directory and turns the tree into layer entries under the
  image's ``dist-packages``. Every file is checked against the ``RECORD`` of its
  wheel, and every wheel against the lock's sha256, so a tampered pex cache or an
  edited lock is an error, never a different image.

``PEX_ROOT`` lives under the lockstep cache directory; pex is pinned.
"""

from __future__ import annotations

import base64
import csv
import functools
import hashlib
import importlib.metadata
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lockstep.atomic import write_bytes
from lockstep.build.layers import Entry
from lockstep.errors import BadInput, CheckFailed, LockstepError, ServiceFailed
from lockstep.project import Project

Progress = Callable[[str], None]

PEX_VERSION = "2.105.2"
PIP_VERSION = "26.2.1"  # pex's default ("latest") pip is not served here
INDEX_URL = "https://pypi.org/simple/"
SITE_DIR = "usr/local/lib/python3.11/dist-packages"
LOCK_HINT = "run `lockstep lock python`"

# Marker keys that describe the machine the interpreter happens to run on (the
# kernel), not the image; left out so the platform file is the same everywhere.
# A requirement whose marker needs one of them then fails to lock, loudly.
HOST_MARKERS = frozenset({"platform_release", "platform_version"})

# Never shipped: byte code (compiled later with the image's python), console
# scripts (the image runs modules, and their shebangs name the build host's
# python), and per-install metadata that records where an install came from.
_DROPPED_DIRS = frozenset({"__pycache__"})
_DROPPED_TOP = frozenset({"bin"})
_DROPPED_META = frozenset({"direct_url.json", "INSTALLER", "REQUESTED"})
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


def _noop(_: str) -> None:
    pass


# --------------------------------------------------------------------------- digests


def digest_bytes(data: bytes) -> str:
    """``sha256:<hex>`` of a lock file's bytes."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def lock_digest(path: Path) -> str:
    """``sha256:<hex>`` of the lock file at ``path`` (``BadInput`` if it cannot be read)."""
    try:
        return digest_bytes(path.read_bytes())
    except OSError as exc:
        raise BadInput(
            f"{path}: cannot read the Python lock ({exc.strerror}); {LOCK_HINT}"
        ) from exc


# --------------------------------------------------------------------------- running pex


@functools.cache
def pex3_argv() -> list[str]:
    """How to run the pinned ``pex3``: next to this interpreter, else on ``$PATH``.

    ``BadInput`` if there is none, or if it is not pex ``PEX_VERSION``.
    """
    fix = f"install the build extras (pip install 'lockstep[build]', which pins pex=={PEX_VERSION})"
    here = Path(sys.executable).parent / "pex3"
    if here.is_file() and os.access(here, os.X_OK):
        found = str(here)
        try:
            version = importlib.metadata.version("pex")
        except importlib.metadata.PackageNotFoundError:
            version = ""
    else:
        which = shutil.which("pex3")
        if not which:
            raise BadInput(f"pex3 is not installed; {fix}")
        found = which
        proc = subprocess.run(
            [found, "--version"],
            capture_output=True,
            text=True,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        version = proc.stdout.strip()
    if version != PEX_VERSION:
        raise BadInput(
            f"{found} is pex {version or '(unknown version)'}, lockstep needs {PEX_VERSION}; {fix}"
        )
    return [found]


def pex_root(cache_dir: Path) -> Path:
    """pex's own cache (downloads, installed wheels, pip) inside the lockstep cache."""
    return cache_dir / "pex"


def pex_env(cache_dir: Path, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment pex runs in: no host pip or pex configuration can reach it.

    pex runs pip with ``--isolated`` (no ``PIP_*`` variables, no user pip.conf);
    pip still reads machine-wide config files in that mode, so
    ``PIP_CONFIG_FILE=/dev/null`` turns every config file off, and pexrc files are
    ignored. ``PIP_*``/``PEX_*`` variables of the caller are dropped.
    """
    env = {
        k: v
        for k, v in (os.environ if base is None else base).items()
        if not k.startswith(("PIP_", "PEX_", "_PEX_"))
    }
    env.update(
        {
            "PEX_ROOT": str(pex_root(cache_dir)),
            "PEX_IGNORE_RCFILES": "true",
            "PIP_CONFIG_FILE": os.devnull,
            "PIP_NO_INPUT": "1",
        }
    )
    return env


def _common_args(cache_dir: Path) -> list[str]:
    return [
        "--pex-root",
        str(pex_root(cache_dir)),
        "--pip-version",
        PIP_VERSION,
        "--no-allow-pip-version-fallback",
        "--no-use-pip-config",
        "--no-pypi",
        "--index",
        INDEX_URL,
        "--no-build",  # wheels only: a build from an sdist is not reproducible
    ]


_HASH_MISMATCH = re.compile(
    r"Expected (\w+) hash of (\w+) when downloading (\S+) but hashed to (\w+)"
)
_NETWORK = re.compile(
    r"Max retries exceeded|Failed to establish a new connection|NewConnectionError|"
    r"Temporary failure in name resolution|Name or service not known|Network is unreachable|"
    r"Connection refused|ConnectTimeout|ReadTimeout|timed out|ProxyError|SSLError|"
    r"CERTIFICATE_VERIFY_FAILED|Could not fetch URL|HTTP error \d+|ConnectionError",
    re.IGNORECASE,
)
_UNRESOLVABLE = re.compile(
    r"(No matching distribution found for [^\n]+|"
    r"Could not find a version that satisfies the requirement [^\n]+|ResolutionImpossible)"
)


def _log_path(cache_dir: Path, what: str) -> Path:
    return cache_dir / "logs" / f"pex-{what}.log"


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else "no output"


def pex_error(what: str, output: str, log: Path) -> LockstepError:
    """Turn a failed pex run's output into one line that says what to do."""
    mismatch = _HASH_MISMATCH.search(output)
    if mismatch:
        algo, expected, project, actual = mismatch.groups()
        return CheckFailed(
            f"{what}: {project} does not match the lock: expected {algo} {expected}, "
            f"downloaded {actual}; the lock was edited or the index serves different bytes; "
            f"{LOCK_HINT} to re-lock (details: {log})"
        )
    # Before the resolver's verdict: pip ends a TLS or network failure with
    # "No matching distribution" too.
    network = _NETWORK.search(output)
    if network:
        return ServiceFailed(
            f"{what}: cannot reach the package index ({network.group(0)}); check the network "
            f"or proxy and retry (details: {log})"
        )
    unresolvable = _UNRESOLVABLE.search(output)
    if unresolvable:
        return BadInput(
            f"{what}: cannot resolve for the image's python: {unresolvable.group(1).strip()}; "
            f"fix requirements in [tool.lockstep] of pyproject.toml (details: {log})"
        )
    return ServiceFailed(f"{what}: pex failed: {_last_line(output)} (details: {log})")


def run_pex(args: Sequence[str], cache_dir: Path, what: str, progress: Progress = _noop) -> str:
    """Run ``pex3 ARGS`` in the isolated environment; its stdout, or a one-line error.

    The whole output of a failed run is kept in ``CACHE/logs/pex-WHAT.log``.
    """
    argv = [*pex3_argv(), *args]
    progress(f"pex3 {args[0]} {args[1] if len(args) > 1 else ''}".rstrip())
    cache_dir.mkdir(parents=True, exist_ok=True)
    try:
        proc = subprocess.run(
            argv,
            env=pex_env(cache_dir),
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except OSError as exc:
        raise BadInput(
            f"cannot run {argv[0]} ({exc.strerror}); install the build extras (pex=={PEX_VERSION})"
        ) from exc
    if proc.returncode != 0:
        log = _log_path(cache_dir, what.replace(" ", "-"))
        output = f"$ {shlex.join(argv)}\n{proc.stdout}\n{proc.stderr}"
        write_bytes(log, output.encode())
        raise pex_error(what, output, log)
    return proc.stdout


# --------------------------------------------------------------------------- platform


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
            f"pex3 interpreter inspect printed no JSON ({exc}): {_last_line(out)}"
        ) from exc
    return platform_json(normalize_platform(inspected))


def staged_complete_platform(root: Path, cache_dir: Path | None = None) -> bytes:
    """The platform file made by the image's own python in a materialised base at ``root``."""
    from lockstep.build.stage import StagedPython

    staged = StagedPython(root)
    staged.check()
    return complete_platform(staged.argv(), staged.env(), cache_dir)


def image_complete_platform(
    project: Project, cache_dir: Path, progress: Progress | None = None
) -> bytes:
    """The platform file of the image's python: stage the locked Debian base, ask its python."""
    from lockstep.build import debian
    from lockstep.build.cache import Cache
    from lockstep.build.stage import materialize

    progress = progress or _noop
    deb_lock = debian.read_lock(project.debian_lock)
    debs = debian.fetch(deb_lock, project.mirror(), Cache(cache_dir), progress)
    progress("inspecting the image's python for its markers and wheel tags")
    with tempfile.TemporaryDirectory(prefix="lockstep-platform-") as tmp:
        materialize(debian.base_entries(deb_lock, debs), Path(tmp) / "root")
        return staged_complete_platform(Path(tmp) / "root", cache_dir)


def write_complete_platform(
    project: Project, cache_dir: Path, progress: Progress | None = None
) -> Path:
    """Write ``images/complete-platform.json`` from the image's own python (Debian lock)."""
    path = project.complete_platform
    write_bytes(path, image_complete_platform(project, cache_dir, progress))
    return path


def _read_platform(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_bytes())
    except OSError as exc:
        raise BadInput(
            f"{path}: cannot read the complete platform ({exc.strerror}); restore it "
            "from version control or regenerate it from the image's python "
            "(lockstep.build.python.write_complete_platform)"
        ) from exc
    except ValueError as exc:
        raise BadInput(
            f"{path}: not valid JSON ({exc}); regenerate it from the image's python "
            "(lockstep.build.python.write_complete_platform)"
        ) from exc
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("marker_environment"), dict)
        or not isinstance(data.get("compatible_tags"), list)
    ):
        raise BadInput(
            f"{path}: not a pex complete platform (needs marker_environment and "
            "compatible_tags); regenerate it from the image's python"
        )
    return data


# --------------------------------------------------------------------------- the lock


@dataclass(frozen=True)
class LockedWheel:
    """One artifact of the lock: the wheel installed for one locked project."""

    project: str
    version: str
    url: str
    sha256: str  # hex

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


def parse_lock(raw: bytes, where: str) -> list[LockedWheel]:
    """Validate a pex lock: strict, one resolve, https wheels only, sha256 for every artifact."""

    def fail(what: str) -> BadInput:
        return BadInput(f"{where}: {what}; {LOCK_HINT}")

    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise fail(f"not valid JSON ({exc})") from exc
    if not isinstance(data, dict) or "locked_resolves" not in data:
        raise fail("not a pex lock (no locked_resolves)")
    if data.get("style") != "strict":
        raise fail(f"lock style is {data.get('style')!r}, expected 'strict'")
    resolves = data["locked_resolves"]
    if not isinstance(resolves, list) or len(resolves) != 1 or not isinstance(resolves[0], dict):
        raise fail("expected exactly one locked resolve (the image's platform)")
    requirements = resolves[0].get("locked_requirements")
    if not isinstance(requirements, list) or not requirements:
        raise fail("no locked requirements")
    wheels: list[LockedWheel] = []
    for req in requirements:
        if (
            not isinstance(req, dict)
            or not isinstance(req.get("project_name"), str)
            or not isinstance(req.get("version"), str)
            or not isinstance(req.get("artifacts"), list)
            or not req["artifacts"]
        ):
            raise fail("a locked requirement lacks project_name, version or artifacts")
        name = req["project_name"]
        for art in req["artifacts"]:
            if not isinstance(art, dict):
                raise fail(f"{name}: an artifact is not an object")
            url, algo, digest = art.get("url"), art.get("algorithm"), art.get("hash")
            if not isinstance(url, str) or not url.startswith("https://"):
                raise fail(
                    f"{name}: artifact URL {url!r} is not https (a local path or "
                    "file:// URL must never be locked)"
                )
            if algo != "sha256" or not isinstance(digest, str) or not _SHA256_HEX.match(digest):
                raise fail(f"{name}: artifact {url} has no sha256 hash")
        chosen = [a for a in req["artifacts"] if a["url"].endswith(".whl")]
        if len(chosen) != 1:
            raise fail(
                f"{name} {req['version']}: expected exactly one wheel, found "
                f"{len(chosen)} (the image installs wheels only)"
            )
        wheels.append(LockedWheel(name, req["version"], chosen[0]["url"], chosen[0]["hash"]))
    return wheels


def read_lock(path: Path) -> list[LockedWheel]:
    """Read and validate the lock; ``BadInput`` naming the file if it is absent or bad."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise BadInput(
            f"{path}: cannot read the Python lock ({exc.strerror}); {LOCK_HINT}"
        ) from exc
    return parse_lock(raw, str(path))


def lock(
    project: Project, out_path: Path | None, cache_dir: Path, progress: Progress | None = None
) -> None:
    """``lockstep lock python``: lock ``[tool.lockstep] requirements`` for the image's platform.

    The lock is checked (https URLs, sha256 everywhere, wheels only) before it
    atomically replaces ``out_path`` (default: the project's ``python_lock``).
    """
    progress = progress or _noop
    out_path = out_path or project.python_lock
    if not project.requirements:
        raise BadInput(
            f"{project.pyproject} [tool.lockstep]: requirements is empty; list the "
            "packages the image needs (e.g. distributed==2026.8.0)"
        )
    platform = project.complete_platform
    _read_platform(platform)
    progress(f"locking {', '.join(project.requirements)} for {project.complete_platform.name}")
    with tempfile.TemporaryDirectory(prefix="lockstep-lock-") as tmp:
        tmp_lock = Path(tmp) / "lock.json"
        run_pex(
            [
                "lock",
                "create",
                *_common_args(cache_dir),
                "--style",
                "strict",
                "--complete-platform",
                str(platform),
                "--output",
                str(tmp_lock),
                *project.requirements,
            ],
            cache_dir,
            "lock create",
            progress,
        )
        try:
            data = json.loads(tmp_lock.read_bytes())
        except (OSError, ValueError) as exc:
            raise ServiceFailed(
                f"pex3 lock create wrote no readable lock ({exc}); rerun `lockstep lock python`"
            ) from exc
    raw = (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()
    wheels = parse_lock(raw, f"the new lock for {out_path}")
    write_bytes(out_path, raw)
    progress(f"locked {len(wheels)} wheels into {out_path}")


# --------------------------------------------------------------------------- install


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
    lock_path: Path, platform_path: Path, cache_dir: Path, progress: Progress | None = None
) -> list[Entry]:
    """Install the lock for the image's platform; the files as layer entries (no .pyc, no bin/)."""
    progress = progress or _noop
    wheels = read_lock(lock_path)
    _read_platform(platform_path)
    root = pex_root(cache_dir)
    scratch_parent = cache_dir / "tmp"
    scratch_parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="venv-", dir=scratch_parent) as tmp:
        tree = Path(tmp) / "site"
        run_pex(
            [
                "venv",
                "create",
                *_common_args(cache_dir),
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
