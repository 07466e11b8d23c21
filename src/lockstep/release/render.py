"""Deployment files pinned by digest, rendered from the project's templates.

Templates live in ``images/deploy/`` (Kubernetes manifests and the team's
workspace file); ``{{ name }}`` placeholders are replaced by the release's
values, and an unknown placeholder is an error naming its file and line. A
rendered file must parse, name every image by digest, and set only executors
that the build really contains.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from lockstep.errors import BadInput
from lockstep.release import pins

TEMPLATES_DIR = "images/deploy"
EXECUTOR_ENV = "LOCKSTEP_EXECUTOR"
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


def templates(root: Path) -> list[Path]:
    """The deployment templates of the project at ``root``."""
    where = root / TEMPLATES_DIR
    found = sorted(p for p in where.glob("*") if p.is_file() and p.suffix in pins.SUFFIXES)
    if not found:
        raise BadInput(
            f"{where}: no deployment templates (*.yaml, *.json, *.toml); "
            "add them or restore the directory"
        )
    return found


def substitute(template: Path, text: str, values: Mapping[str, str]) -> str:
    """``text`` with every ``{{ name }}`` replaced; BadInput at the first unknown one."""
    out = []
    for number, line in enumerate(text.splitlines(keepends=True), start=1):

        def replace(match: re.Match[str], number: int = number) -> str:
            name = match.group(1)
            if name not in values:
                raise BadInput(
                    f"{template}:{number}: unknown placeholder {{{{ {name} }}}}; "
                    f"the known ones are {', '.join(sorted(values))}"
                )
            return values[name]

        out.append(_PLACEHOLDER.sub(replace, line))
    return "".join(out)


def _executor_settings(data: Any) -> Iterator[str]:
    """Every executor a deployment sets: ``LOCKSTEP_EXECUTOR`` env entries and ``executor`` keys."""
    if isinstance(data, dict):
        if data.get("name") == EXECUTOR_ENV and "value" in data:
            yield str(data["value"])
        for key, value in data.items():
            if key in ("executor", EXECUTOR_ENV) and isinstance(value, str):
                yield value
            yield from _executor_settings(value)
    elif isinstance(data, list):
        for item in data:
            yield from _executor_settings(item)


def check_rendered(path: Path, executors: Sequence[str]) -> None:
    """A rendered file parses, pins every image, and names only executors of the build."""
    import yaml

    bad = [ref for ref in pins.scan_file(path) if ref.problem]
    if bad:
        raise BadInput(f"{bad[0]} (from the template {TEMPLATES_DIR}/{path.name})")
    if path.suffix in (".yaml", ".yml"):
        docs = list(yaml.safe_load_all(path.read_text()))
    else:
        docs = [pins.load_data(path)]
    for name in _executor_settings(docs):
        if name not in executors:
            raise BadInput(
                f"{TEMPLATES_DIR}/{path.name}: executor {name!r} is not in this "
                f"build (it has {', '.join(executors)}); fix the template"
            )


def render(
    root: Path, values: Mapping[str, str], dest: Path, executors: Sequence[str]
) -> list[Path]:
    """Render every template of the project at ``root`` into ``dest``; the files written."""
    written = []
    for template in templates(root):
        text = substitute(template, template.read_text(), values)
        out = dest / template.name
        out.write_text(text)
        check_rendered(out, executors)
        written.append(out)
    return written
