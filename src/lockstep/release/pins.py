"""``check-pins``: every image reference in a deployment file must carry a digest.

An image reference is the value of a key named ``image`` (or ending in
``_image``/``-image``/``Image``), each value under a key named ``images``, a
Helm-style ``image: {repository: …, tag: …}`` table (pinned only with a
``digest``), and the ``value`` of a Kubernetes environment entry whose
``name`` is ``IMAGE`` or ends in ``_IMAGE`` (``LOCKSTEP_IMAGE``: the reference
a pod pulled, which must be as pinned as its ``image``). YAML positions come
from the YAML composer; JSON and TOML are parsed by their own parsers and
each reference is found on its line by its quoted text.

In YAML, the value of every ``uses:`` key (a GitHub Actions step or reusable
workflow, in a workflow or a composite action) is an action reference: pinned
only as ``owner/repo[/path]@<40 hex commit>``; a local ``./…`` action is
pinned with the repository, and ``docker://IMAGE`` needs a digest like any
image.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lockstep.core.digests import is_digest
from lockstep.core.errors import BadInput
from lockstep.oci.reference import pin_problem

SUFFIXES = (".yaml", ".yml", ".json", ".toml")


IMAGE = "image"
ACTION = "action"
COMMIT = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class Reference:
    path: Path
    line: int
    value: str
    problem: str | None
    kind: str = IMAGE  # IMAGE, or ACTION: a workflow's ``uses:``

    def __str__(self) -> str:
        if self.kind == ACTION:
            name = self.value.partition("@")[0] or "owner/repo"
            return (
                f"{self.path}:{self.line}: action {self.value!r} {self.problem}; pin it "
                f"to the commit, the tag in a comment: uses: {name}@<40 hex> # vX.Y.Z"
            )
        return (
            f"{self.path}:{self.line}: image {self.value!r} {self.problem}; pin it as "
            "HOST/REPO/NAME@sha256:…"
        )


def action_problem(value: object) -> str | None:
    """Why a ``uses:`` value is not pinned to a commit, or None if it is.

    ``owner/repo[/path]@<40 lowercase hex>`` is pinned; so is a local ``./path``
    (it is the repository's own commit) and ``docker://IMAGE@sha256:…``.
    """
    if not isinstance(value, str) or not value.strip():
        return "is empty"
    text = value.strip()
    if text.startswith("./"):
        return None
    if text.startswith("docker://"):
        image = pin_problem(text.removeprefix("docker://"))
        return None if image is None else f"is a Docker image that {image}"
    if "${{" in text:
        return "is an expression, not a fixed reference"
    _name, at, ref = text.partition("@")
    if not at or not ref:
        return "names no ref (owner/repo@REF)"
    if COMMIT.match(ref):
        return None
    return f"refers to {ref!r}, which is not a full commit SHA (a tag or branch can be moved)"


def is_image_key(key: object) -> bool:
    return isinstance(key, str) and (
        key.lower() == "image" or key.endswith(("_image", "-image", "Image"))
    )


def is_image_env(entry: object) -> bool:
    """A Kubernetes env entry ``{name: …_IMAGE, value: …}`` (a literal value, not valueFrom)."""
    if not isinstance(entry, dict):
        return False
    name = entry.get("name")
    return (
        isinstance(name, str)
        and "value" in entry
        and (name.upper() == "IMAGE" or name.upper().endswith("_IMAGE"))
    )


def _helm_problem(table: dict[str, Any]) -> str | None:
    digest = table.get("digest")
    if is_digest(digest):
        return None
    tag = table.get("tag")
    return f"uses the tag :{tag} and no digest" if tag else "has no digest"


def _candidates(data: Any) -> Iterator[tuple[str | None, Any, str | None]]:
    """(key, value, helm problem) for every image reference in decoded data."""
    if isinstance(data, dict):
        if is_image_env(data) and not isinstance(data["value"], dict | list):
            yield data["name"], data["value"], pin_problem(data["value"])
        for key, value in data.items():
            if is_image_key(key) and isinstance(value, dict) and "repository" in value:
                yield key, str(value.get("repository")), _helm_problem(value)
                continue
            if is_image_key(key) and not isinstance(value, dict | list):
                yield key, value, pin_problem(value)
            elif key == "images" and isinstance(value, dict):
                for sub, ref in value.items():
                    if not isinstance(ref, dict | list):
                        yield sub, ref, pin_problem(ref)
            elif key == "images" and isinstance(value, list):
                for ref in value:
                    if not isinstance(ref, dict | list):
                        yield None, ref, pin_problem(ref)
            yield from _candidates(value)
    elif isinstance(data, list):
        for item in data:
            yield from _candidates(item)


def _scan_yaml(path: Path, text: str) -> list[Reference]:
    import yaml

    try:
        nodes = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
    except yaml.YAMLError as exc:
        raise BadInput(
            f"{path}: not valid YAML ({str(exc).splitlines()[0]}); fix the file"
        ) from exc
    found: list[Reference] = []

    def walk(node: yaml.Node) -> None:
        if isinstance(node, yaml.MappingNode):
            env_value = _image_env_value(node)
            if env_value is not None:
                add(env_value)
            for key_node, value_node in node.value:
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
                if is_image_key(key) and isinstance(value_node, yaml.MappingNode):
                    table = _construct(value_node)
                    if isinstance(table, dict) and "repository" in table:
                        found.append(
                            Reference(
                                path,
                                value_node.start_mark.line + 1,
                                str(table.get("repository")),
                                _helm_problem(table),
                            )
                        )
                        continue
                if key == "uses" and isinstance(value_node, yaml.ScalarNode):
                    add(value_node, ACTION)
                    continue
                if is_image_key(key) and isinstance(value_node, yaml.ScalarNode):
                    add(value_node)
                elif key == "images" and isinstance(value_node, yaml.MappingNode):
                    for _, ref in value_node.value:
                        if isinstance(ref, yaml.ScalarNode):
                            add(ref)
                elif key == "images" and isinstance(value_node, yaml.SequenceNode):
                    for ref in value_node.value:
                        if isinstance(ref, yaml.ScalarNode):
                            add(ref)
                walk(value_node)
        elif isinstance(node, yaml.SequenceNode):
            for item in node.value:
                walk(item)

    def add(node: yaml.ScalarNode, kind: str = IMAGE) -> None:
        value = _construct(node)
        problem = action_problem(value) if kind == ACTION else pin_problem(value)
        found.append(
            Reference(
                path, node.start_mark.line + 1, "" if value is None else str(value), problem, kind
            )
        )

    for node in nodes:
        if node is not None:
            walk(node)
    return found


def _image_env_value(node: Any) -> Any:
    """The ``value`` node of a mapping node that is an image env entry (``is_image_env``)."""
    import yaml

    scalars = {
        k.value: v
        for k, v in node.value
        if isinstance(k, yaml.ScalarNode) and isinstance(v, yaml.ScalarNode)
    }
    if (
        "name" in scalars
        and "value" in scalars
        and is_image_env({"name": _construct(scalars["name"]), "value": None})
    ):
        return scalars["value"]
    return None


def _construct(node: Any) -> Any:
    import yaml

    return yaml.SafeLoader("").construct_object(node, deep=True)


def _locate(lines: Sequence[str], value: Any, used: set[int]) -> int:
    """The first line not yet used that holds ``value`` as quoted text (1-based), else 1."""
    if isinstance(value, str):
        needles = [json.dumps(value), f"'{value}'", value]
    else:
        needles = [json.dumps(value)]
    for needle in needles:
        for number, line in enumerate(lines, start=1):
            if number not in used and needle in line:
                used.add(number)
                return number
    return 1


def _scan_data(path: Path, text: str, data: Any) -> list[Reference]:
    lines = text.splitlines()
    used: set[int] = set()
    found = []
    for _key, value, problem in _candidates(data):
        line = _locate(lines, value, used)
        found.append(Reference(path, line, "" if value is None else str(value), problem))
    return found


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"{path}: cannot read ({exc}); check the path") from exc


def _parse(path: Path, text: str) -> Any:
    """Decoded JSON or TOML; BadInput naming the file if it does not parse."""
    if path.suffix.lower() == ".json":
        try:
            return json.loads(text)
        except ValueError as exc:
            raise BadInput(f"{path}: not valid JSON ({exc}); fix the file") from exc
    import tomllib

    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise BadInput(f"{path}: not valid TOML ({exc}); fix the file") from exc


def load_data(path: Path) -> Any:
    """A JSON or TOML deployment file, decoded."""
    return _parse(path, _read(path))


def scan_file(path: Path) -> list[Reference]:
    """Every image reference (and, in YAML, action reference) in one file, pinned or not."""
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise BadInput(f"{path}: not a deployment file this checks ({', '.join(SUFFIXES)})")
    text = _read(path)
    if suffix in (".yaml", ".yml"):
        return _scan_yaml(path, text)
    return _scan_data(path, text, _parse(path, text))


def files_under(paths: Iterable[Path]) -> list[Path]:
    """The files named, and the deployment files under the directories named."""
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            out += sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES
            )
        elif path.exists():
            out.append(path)
        else:
            raise BadInput(f"{path}: no such file or directory")
    return out


def check_pins(paths: Iterable[Path]) -> list[Reference]:
    """Every image and action reference under ``paths`` (check ``.problem`` for the bad)."""
    found: list[Reference] = []
    for path in files_under(paths):
        found += scan_file(path)
    return found
