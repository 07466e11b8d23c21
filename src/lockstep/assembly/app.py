"""The app layer: the project's own package, installed the way pip would, without pip.

The package tree under ``package_root`` goes into the image's site directory
next to a ``.dist-info`` written from ``pyproject.toml``, so
``importlib.metadata`` (and so the executor registry) works in the image.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from lockstep.assembly.entries import Entry
from lockstep.assembly.layout import BIN_DIR, PYTHON, SITE_DIR
from lockstep.core import entrypoints
from lockstep.core.digests import TreeFile
from lockstep.project import Project


def dist_info_name(name: str, version: str) -> str:
    return f"{re.sub(r'[-_.]+', '_', name).lower()}-{version}.dist-info"


def entry_points_txt(groups: Mapping[str, Mapping[str, str]]) -> bytes:
    """``entry_points.txt`` for ``groups``, sorted so the bytes depend only on the content."""
    lines: list[str] = []
    for group in sorted(groups):
        lines.append(f"[{group}]")
        lines.extend(f"{name} = {target}" for name, target in sorted(groups[group].items()))
        lines.append("")
    return "\n".join(lines).encode()


def metadata_txt(name: str, version: str, requires: Iterable[str]) -> bytes:
    lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    lines.extend(f"Requires-Dist: {r}" for r in requires)
    return ("\n".join(lines) + "\n").encode()


def console_script(target: str) -> bytes:
    module, attr = entrypoints.split(target)
    return (f"#!/{PYTHON}\nimport sys\nfrom {module} import {attr}\nsys.exit({attr}())\n").encode()


def app_entries(project: Project, files: Iterable[TreeFile]) -> list[Entry]:
    """Entries of the app layer: package files, dist-info, console scripts."""
    prefix = project.package_root.rstrip("/") + "/"
    entries: list[Entry] = []
    packages: set[str] = set()
    for f in files:
        if not f.path.startswith(prefix):
            continue
        rel = f.path[len(prefix) :]
        packages.add(rel.split("/", 1)[0])
        entries.append(Entry.file(f"{SITE_DIR}/{rel}", f.data, 0o755 if f.executable else 0o644))
    dist_info = f"{SITE_DIR}/{dist_info_name(project.name, project.version)}"
    groups: dict[str, Mapping[str, str]] = {entrypoints.GROUP: project.executors}
    scripts = project.scripts
    if scripts:
        groups["console_scripts"] = scripts
    entries += [
        Entry.file(
            f"{dist_info}/METADATA",
            metadata_txt(project.name, project.version, project.dependencies),
        ),
        Entry.file(f"{dist_info}/entry_points.txt", entry_points_txt(groups)),
        Entry.file(f"{dist_info}/top_level.txt", ("\n".join(sorted(packages)) + "\n").encode()),
        Entry.file(f"{dist_info}/INSTALLER", b"lockstep\n"),
    ]
    entries += [
        Entry.file(f"{BIN_DIR}/{name}", console_script(target), 0o755)
        for name, target in sorted(scripts.items())
    ]
    return entries
