"""Deployment files pinned by digest, rendered from the project's templates.

Templates live in ``images/deploy/`` (Kubernetes objects only, so ``kubectl
apply -f release/<version>/`` applies the directory; the file names' order is
the upgrade order); ``{{ name }}`` placeholders are replaced by the release's
values and the deployment settings (``lockstep.deployment``: namespace,
resources, worker groups; the probes' commands from ``runtime.health``), and
an unknown placeholder is an error naming its file and line. A template whose
name holds ``GROUP`` is rendered once per worker group, ``GROUP`` replaced by
the group's name. A rendered file must parse, hold only Kubernetes objects,
name every image by digest, and set only executors that the build really
contains. The Dask operator's form of the same objects goes to
``operator/`` (``release.operator``).

A signed release also gets ``image-policy.yaml``, made here rather than from a
template: a Sigstore policy-controller ``ClusterImagePolicy`` that admits the
project's image repositories only with a signature by the release's public key.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from lockstep.core import health_probe
from lockstep.core.errors import BadInput
from lockstep.core.settings import EXECUTOR as EXECUTOR_ENV
from lockstep.deployment import DEFAULTS, DeploySettings, Resources, WorkerGroup
from lockstep.release import operator, pins, podsecurity

TEMPLATES_DIR = "images/deploy"
POLICY_FILE = "image-policy.yaml"
POLICY_DIR = "admission"  # cluster-wide, needs the policy-controller: not applied with the rest
GROUP = "GROUP"  # in a template's name: rendered once per worker group
OPERATOR_DIR = "operator"
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


def check_rendered(path: Path, executors: Sequence[str], source: str = "") -> list[Any]:
    """A rendered file parses, holds only Kubernetes objects whose pods pass Pod Security
    "restricted" (``podsecurity``), pins every image, and names only executors of the
    build; its documents. ``source``: the template, for messages."""
    import yaml

    source = source or f"{TEMPLATES_DIR}/{path.name}"
    bad = [ref for ref in pins.scan_file(path) if ref.problem]
    if bad:
        raise BadInput(f"{bad[0]} (from the template {source})")
    if path.suffix in (".yaml", ".yml"):
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    else:
        docs = [pins.load_data(path)]
    for doc in docs:
        if not (
            isinstance(doc, dict)
            and isinstance(doc.get("apiVersion"), str)
            and isinstance(doc.get("kind"), str)
            and isinstance(doc.get("metadata"), dict)
            and doc["metadata"].get("name")
        ):
            raise BadInput(
                f"{source}: a document without apiVersion, kind and metadata.name is not "
                "a Kubernetes object, and `kubectl apply -f release/<version>/` would fail "
                "on it; write it as one (e.g. a ConfigMap) or keep it out of "
                f"{TEMPLATES_DIR}/"
            )
        for where, pod in podsecurity.pod_specs(doc):
            found = podsecurity.problems(pod)
            if found:
                raise BadInput(
                    f"{source}: {where}: {found[0]}"
                    + (f" (and {len(found) - 1} more)" if len(found) > 1 else "")
                    + '; a Pod Security "restricted" namespace would reject the pod: fix '
                    "the template"
                )
    for name in _executor_settings(docs):
        if name not in executors:
            raise BadInput(
                f"{source}: executor {name!r} is not in this "
                f"build (it has {', '.join(executors)}); fix the template"
            )
    return docs


def registry_port(registry: str) -> int:
    """The port of ``HOST[:PORT]/REPO`` (443 without one): what the NetworkPolicies open."""
    host = registry.partition("/")[0]
    _, colon, port = host.rpartition(":")
    return int(port) if colon and port.isdigit() else 443


def _resource_values(prefix: str, resources: Resources) -> dict[str, str]:
    return {
        f"{prefix}cpu_request": resources.cpu_request,
        f"{prefix}cpu_limit": resources.cpu_limit,
        f"{prefix}memory_request": resources.memory_request,
        f"{prefix}memory_limit": resources.memory_limit,
    }


def deploy_values(deploy: DeploySettings, registry: str) -> dict[str, str]:
    """The placeholders the deployment settings and the probes fill in, for every template."""
    return {
        "namespace": deploy.namespace,
        "registry_port": str(registry_port(registry)),
        "probe_ready": health_probe.probe_json("ready"),
        "probe_live": health_probe.probe_json("live"),
        "worker_replicas": str(sum(g.replicas for g in deploy.workers)),
        "worker_groups": ", ".join(
            f"{g.name}: {g.replicas} x {g.executor}" for g in deploy.workers
        ),
        **_resource_values("scheduler_", deploy.scheduler),
        **_resource_values("runner_", deploy.runner),
    }


def group_values(group: WorkerGroup) -> dict[str, str]:
    """The placeholders of one worker group's templates."""
    return {
        "group": group.name,
        "executor": group.executor,
        "replicas": str(group.replicas),
        **_resource_values("", group.resources),
    }


def render(
    root: Path,
    values: Mapping[str, str],
    dest: Path,
    executors: Sequence[str],
    deploy: DeploySettings = DEFAULTS,
) -> list[Path]:
    """Render every template of the project at ``root`` into ``dest``, and the operator's
    form of the same objects into ``dest/operator``; the files written."""
    import yaml

    common = {**deploy_values(deploy, values.get("registry", "")), **values}
    written: list[Path] = []
    documents: list[Any] = []
    for template in templates(root):
        each = [{}] if GROUP not in template.name else [group_values(g) for g in deploy.workers]
        for extra in each:
            text = substitute(template, template.read_text(), {**common, **extra})
            out = dest / template.name.replace(GROUP, extra.get("group", GROUP))
            out.write_text(text)
            documents += check_rendered(out, executors, f"{TEMPLATES_DIR}/{template.name}")
            written.append(out)
    (dest / OPERATOR_DIR).mkdir()
    for name, docs in operator.operator_files(documents, values["short_id"]).items():
        out = dest / OPERATOR_DIR / name
        out.write_text(operator.HEADER + yaml.safe_dump_all(docs, sort_keys=False))
        check_rendered(out, executors, f"{OPERATOR_DIR}/{name}")
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
