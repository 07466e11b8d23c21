"""The project definition: ``[project]`` and ``[tool.lockstep]`` of ``pyproject.toml``.

One place for every fact about the images; the CLI and Bazel both read it. The
deployment settings (``[tool.lockstep.deploy]``) are checked by ``deployment``.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lockstep import deployment
from lockstep.core import platforms as platform_table
from lockstep.core import settings
from lockstep.core.entrypoints import GROUP as EXECUTOR_GROUP
from lockstep.core.errors import BadInput

ROLES = ("runner", "worker")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_ENTRY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


@dataclass(frozen=True)
class ImageSpec:
    """How one role's image differs from the other: its config, and what only it needs.

    ``requirements`` (``[tool.lockstep.images.<role>] requirements``) are third-party
    packages of this role alone, locked into ``python_lock`` with the shared lock's pins
    as constraints (``inputs.python.lock``), so a wheel both need is the same wheel and
    the same layer in both images."""

    role: str
    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...] = ()
    requirements: tuple[str, ...] = ()
    python_lock: Path | None = None  # set exactly when requirements are


@dataclass(frozen=True)
class Project:
    root: Path
    name: str
    version: str
    source_url: str
    sources: tuple[str, ...]
    package_root: str
    python_lock: Path
    debian_lock: Path
    complete_platform: Path  # linux/amd64's interpreter's markers and tags, for pex
    debian_mirror: str
    requirements: tuple[str, ...]
    debian_packages: tuple[str, ...]
    executors: Mapping[str, str]  # name -> "module:attr", from the entry-point group
    images: Mapping[str, ImageSpec]
    scripts: Mapping[str, str] = field(default_factory=dict)  # [project.scripts]
    dependencies: tuple[str, ...] = ()  # [project] dependencies
    description: str = ""  # [project] description
    license: str = ""  # [project] license: an SPDX expression (or {text = …})
    deploy: deployment.DeploySettings = deployment.DEFAULTS  # [tool.lockstep.deploy]
    # [project] maintainers, then authors (PEP 621): (name, email) pairs, either may be ""
    people: tuple[tuple[str, str], ...] = ()
    # [tool.lockstep] platforms: what every build builds and every lock locks, in order
    platforms: tuple[str, ...] = platform_table.DEFAULT

    @property
    def pyproject(self) -> Path:
        return self.root / "pyproject.toml"

    def complete_platform_of(self, platform: str) -> Path:
        """The complete-platform file of ``platform``'s interpreter: ``complete_platform``
        for linux/amd64 (its name before there were others), ``<stem>-<arch>.json`` beside it
        for any other (``images/complete-platform-arm64.json``)."""
        if platform == platform_table.AMD64.name:
            return self.complete_platform
        arch = platform_table.platform(platform).architecture
        return self.complete_platform.with_name(
            f"{self.complete_platform.stem}-{arch}{self.complete_platform.suffix}"
        )

    def mirror(self, environ: Mapping[str, str] | None = None) -> str:
        """The Debian mirror: ``$LOCKSTEP_DEBIAN_MIRROR``, else the project's, else Debian's."""
        env = os.environ if environ is None else environ
        return (
            env.get(settings.DEBIAN_MIRROR) or self.debian_mirror or settings.DEFAULT_MIRROR
        ).rstrip("/")


def _str_list(table: Mapping[str, Any], key: str, where: str, default: list[str]) -> list[str]:
    value = table.get(key, default)
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise BadInput(f"{where}: {key} must be a list of non-empty strings")
    return value


def _str(table: Mapping[str, Any], key: str, where: str, default: str | None = None) -> str:
    value = table.get(key, default)
    if not isinstance(value, str) or not value:
        raise BadInput(
            f"{where}: {key} must be a non-empty string"
            + ("" if default is not None else " (it is required)")
        )
    return value


def load_project(root: Path) -> Project:
    """Read and validate ``root/pyproject.toml``; ``BadInput`` naming the key on any problem."""
    path = root / "pyproject.toml"
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise BadInput(
            f"{path}: cannot read ({exc.strerror}); run from the project root or pass --project"
        ) from exc
    import tomllib  # here only: a no-op build does not parse the project file

    try:
        data = tomllib.loads(raw.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise BadInput(f"{path}: not valid TOML ({exc}); fix the file") from exc
    project = data.get("project")
    if not isinstance(project, dict):
        raise BadInput(f"{path}: no [project] table; add name and version")
    tool = data.get("tool", {}).get("lockstep")
    where = f"{path} [tool.lockstep]"
    if not isinstance(tool, dict):
        raise BadInput(f"{path}: no [tool.lockstep] table; add sources, locks and images")
    name = _str(project, "name", f"{path} [project]")
    version = _str(project, "version", f"{path} [project]")
    urls = project.get("urls", {})
    source_url = urls.get("Source", "") if isinstance(urls, dict) else ""
    description = project.get("description", "")
    license_value = project.get("license", "")
    if isinstance(license_value, dict):
        license_value = license_value.get("text", "")

    people = tuple(
        (str(p.get("name", "")), str(p.get("email", "")))
        for key in ("maintainers", "authors")
        for p in (project.get(key) or [])
        if isinstance(p, dict)
    )

    group = project.get("entry-points", {}).get(EXECUTOR_GROUP, {})
    if not isinstance(group, dict) or not group:
        raise BadInput(
            f'{path}: [project.entry-points."{EXECUTOR_GROUP}"] is missing or empty; '
            "register at least one executor"
        )
    for ex_name, target in group.items():
        if not _NAME.match(ex_name) or not isinstance(target, str) or not _ENTRY.match(target):
            raise BadInput(
                f"{path}: executor entry point {ex_name!r} = {target!r} must be "
                'name = "module:attribute"'
            )

    images_table = tool.get("images")
    if not isinstance(images_table, dict):
        raise BadInput(f"{where}: missing [tool.lockstep.images.runner] and .worker")
    images: dict[str, ImageSpec] = {}
    for role in ROLES:
        spec = images_table.get(role)
        if not isinstance(spec, dict):
            raise BadInput(f"{where}: missing [tool.lockstep.images.{role}]")
        iwhere = f"{path} [tool.lockstep.images.{role}]"
        requirements = tuple(_str_list(spec, "requirements", iwhere, []))
        role_lock = spec.get("python_lock")
        if bool(requirements) != (role_lock is not None):
            raise BadInput(
                f"{iwhere}: requirements and python_lock go together (the role's own "
                f'packages and their lock, e.g. python_lock = "images/python-{role}.lock.json")'
            )
        images[role] = ImageSpec(
            role=role,
            entrypoint=tuple(_str_list(spec, "entrypoint", iwhere, [])) or _missing(iwhere),
            cmd=tuple(_str_list(spec, "cmd", iwhere, [])),
            requirements=requirements,
            python_lock=root / _relative(spec, "python_lock", iwhere) if requirements else None,
        )
    unknown = sorted(set(images_table) - set(ROLES))
    if unknown:
        raise BadInput(f"{where}: unknown image {unknown[0]!r}; the images are runner and worker")

    sources = _str_list(tool, "sources", where, [])
    if not sources:
        raise BadInput(f"{where}: sources must list the declared input files (globs)")
    for pattern in sources:
        if pattern.startswith("/") or ".." in pattern.split("/"):
            raise BadInput(f"{where}: source pattern {pattern!r} must be relative to the project")
    # A role's own lock is a declared source: the build id covers it through ``sources``
    # (the manifest's inputs stay the shared locks'), and Bazel watches it with the rest.
    locks = [s.python_lock.relative_to(root).as_posix() for s in images.values() if s.python_lock]
    sources += [lock for lock in locks if lock not in sources]
    return Project(
        root=root,
        name=name,
        version=version,
        source_url=source_url,
        description=description if isinstance(description, str) else "",
        license=license_value if isinstance(license_value, str) else "",
        people=people,
        sources=tuple(sources),
        package_root=_str(tool, "package_root", where, "src"),
        python_lock=root / _str(tool, "python_lock", where),
        debian_lock=root / _str(tool, "debian_lock", where),
        complete_platform=root
        / _str(tool, "complete_platform", where, "images/complete-platform.json"),
        debian_mirror=_str(tool, "debian_mirror", where, settings.DEFAULT_MIRROR),
        requirements=tuple(_str_list(tool, "requirements", where, [])),
        debian_packages=tuple(_str_list(tool, "debian_packages", where, ["python3.11"])),
        executors=dict(sorted(group.items())),
        images=images,
        scripts=_scripts(project, f"{path} [project]"),
        dependencies=tuple(_str_list(project, "dependencies", f"{path} [project]", [])),
        deploy=deployment.load(tool.get("deploy"), f"{path} [tool.lockstep.deploy]", group),
        platforms=_platforms(tool, where),
    )


def _platforms(tool: Mapping[str, Any], where: str) -> tuple[str, ...]:
    """``platforms``: a non-empty list of known platforms, each once (default: all)."""
    names = _str_list(tool, "platforms", where, list(platform_table.DEFAULT))
    if not names:
        raise BadInput(
            f"{where}: platforms is empty; name at least one of "
            f"{', '.join(platform_table.PLATFORMS)}"
        )
    for name in names:
        platform_table.platform(name, f"{where} platforms")
    if len(set(names)) != len(names):
        raise BadInput(f"{where}: platforms names a platform twice; list each once")
    return tuple(names)


def _str_table(table: Mapping[str, Any], key: str, where: str) -> dict[str, str]:
    value = table.get(key, {})
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise BadInput(f"{where}: {key} must be a table of strings")
    return value


def _scripts(project: Mapping[str, Any], where: str) -> dict[str, str]:
    """``[project.scripts]``: each a ``name = "module:function"`` console script."""
    scripts = _str_table(project, "scripts", where)
    for name, target in scripts.items():
        if not _ENTRY.match(target):
            raise BadInput(
                f'{where}: script {name!r} = {target!r} must be name = "module:function"'
            )
    return dict(sorted(scripts.items()))


def _relative(table: Mapping[str, Any], key: str, where: str) -> str:
    """A path inside the project (relative, no ``..``); ``BadInput`` naming ``key``."""
    value = _str(table, key, where)
    if value.startswith("/") or ".." in value.split("/"):
        raise BadInput(f"{where}: {key} {value!r} must be a path relative to the project")
    return value


def _missing(where: str) -> tuple[str, ...]:
    raise BadInput(f"{where}: entrypoint must be a non-empty list of strings")


def find_root(start: Path | None = None) -> Path:
    """The nearest directory at or above ``start`` holding a pyproject.toml with [tool.lockstep]."""
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        pyproject = candidate / "pyproject.toml"
        if pyproject.is_file() and b"[tool.lockstep" in pyproject.read_bytes():
            return candidate
    raise BadInput(
        f"{here}: no pyproject.toml with [tool.lockstep] here or above; "
        "run from the project root or pass --project"
    )


def add_project_arg(parser: argparse.ArgumentParser) -> None:
    """``--project``: the project root, for commands that read ``pyproject.toml``."""
    parser.add_argument("--project", type=Path, help="project root (default: found from the cwd)")
