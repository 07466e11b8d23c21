"""Deployment files pinned by digest, rendered from the project's templates.

Templates live in ``images/deploy/`` (Kubernetes manifests and the team's
workspace file); ``{{ name }}`` placeholders are replaced by the release's
values, and an unknown placeholder is an error naming its file and line. A
rendered file must parse, name every image by digest, and set only executors
that the build really contains.

A signed release also gets ``image-policy.yaml``, made here rather than from a
template: a Sigstore policy-controller ``ClusterImagePolicy`` that admits the
project's image repositories only with a signature by the release's public key.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from lockstep.core.errors import BadInput
from lockstep.core.settings import EXECUTOR as EXECUTOR_ENV
from lockstep.release import pins

TEMPLATES_DIR = "images/deploy"
POLICY_FILE = "image-policy.yaml"
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


def admission_policy(name: str, repositories: Sequence[str], public_pem: str) -> str:
    """A Sigstore policy-controller ``ClusterImagePolicy`` requiring a signature by
    ``public_pem`` on every image of ``repositories`` (``HOST/PATH/NAME``, no tag or
    digest). The signatures are made offline, with no transparency-log entry, so the
    authority names no ``ctlog``. Pure: the same inputs give the same bytes."""
    import yaml

    if not repositories or any("@" in r or r.endswith("/") for r in repositories):
        raise ValueError(f"repositories without tag or digest expected, got {repositories}")
    document = {
        "apiVersion": "policy.sigstore.dev/v1beta1",
        "kind": "ClusterImagePolicy",
        "metadata": {
            "name": (re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:48] or "lockstep")
            + "-signed"
        },
        "spec": {
            "images": [{"glob": f"{repository}**"} for repository in sorted(repositories)],
            "authorities": [{"name": "release-key", "key": {"data": public_pem}}],
        },
    }
    header = (
        "# Made by `lockstep release --sign-key`: admits these images only when signed\n"
        "# by the release key. Apply it where the Sigstore policy-controller runs.\n"
    )

    class Dumper(yaml.SafeDumper):
        pass

    def text(dumper: yaml.SafeDumper, value: str) -> yaml.Node:  # a PEM as a literal block
        return dumper.represent_scalar(
            "tag:yaml.org,2002:str", value, style="|" if "\n" in value else None
        )

    Dumper.add_representer(str, text)
    return header + yaml.dump(document, Dumper=Dumper, sort_keys=False)
