"""The deployment settings: ``[tool.lockstep.deploy]`` of ``pyproject.toml``.

Where a release runs and how large its pods are: the namespace, CPU and
memory requests and limits for the scheduler and the runner, and the worker
groups (one per kind of worker: a name, an executor, replicas and
resources). Kubernetes quantities are checked here, before anything is built
(docs/design.md §4.10): a negative value, a memory size without a unit, a
request above its limit or a missing limit is one line naming the key.

Defaults (no table at all): namespace ``lockstep``; scheduler 250m/1 CPU and
512Mi/1Gi; runner 250m/1 CPU and 256Mi/512Mi; one worker group ``warm``
(``isolated_warm``, 4 replicas, 1 CPU, 2Gi requested = limit).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from lockstep.core.errors import BadInput

# Kubernetes quantities: a decimal number and a suffix (resource.Quantity's grammar,
# without exponents). Memory needs a unit here: "512" bytes is nearly always a typo.
_QUANTITY = re.compile(r"^([+-]?[0-9]+(?:\.[0-9]*)?|[+-]?\.[0-9]+)([A-Za-z]*)$")
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18}
_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
MAX_REPLICAS = 10_000


@dataclass(frozen=True)
class Resources:
    """Requests and limits of one container, as written (Kubernetes quantities)."""

    cpu_request: str
    cpu_limit: str
    memory_request: str
    memory_limit: str

    @property
    def memory_limit_bytes(self) -> int:
        return memory_bytes(self.memory_limit, "memory_limit")

    @property
    def cpu_limit_millis(self) -> int:
        return cpu_millis(self.cpu_limit, "cpu_limit")


@dataclass(frozen=True)
class WorkerGroup:
    """One kind of worker: a Deployment (or a ``DaskWorkerGroup``) of its own."""

    name: str  # a DNS label: part of object names
    executor: str
    replicas: int
    resources: Resources


@dataclass(frozen=True)
class DeploySettings:
    namespace: str
    scheduler: Resources
    runner: Resources
    workers: tuple[WorkerGroup, ...]


DEFAULTS = DeploySettings(
    namespace="lockstep",
    scheduler=Resources("250m", "1", "512Mi", "1Gi"),
    runner=Resources("250m", "1", "256Mi", "512Mi"),
    workers=(WorkerGroup("warm", "isolated_warm", 4, Resources("1", "1", "2Gi", "2Gi")),),
)


def _number(text: str, key: str, where: str) -> tuple[Decimal, str]:
    match = _QUANTITY.match(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise BadInput(
            f"{where}: {key} = {text!r} is not a Kubernetes quantity; write e.g. "
            + ('"500m" or "2"' if "cpu" in key else '"512Mi" or "4Gi"')
        )
    try:
        number = Decimal(match.group(1))
    except InvalidOperation as exc:  # pragma: no cover - the pattern admits only decimals
        raise BadInput(f"{where}: {key} = {text!r} is not a number") from exc
    if number <= 0:
        raise BadInput(f"{where}: {key} = {text!r} must be greater than zero")
    return number, match.group(2)


def cpu_millis(text: str, key: str = "cpu", where: str = "cpu") -> int:
    """A CPU quantity (``"500m"``, ``"2"``, ``"1.5"``) in millicores; BadInput if bad."""
    number, unit = _number(text, key, where)
    if unit not in ("", "m"):
        raise BadInput(
            f'{where}: {key} = {text!r} has the unit {unit!r}; CPU is cores ("2") or '
            'millicores ("500m")'
        )
    millis = number if unit == "m" else number * 1000
    if millis != millis.to_integral_value() or millis < 1:
        raise BadInput(f"{where}: {key} = {text!r} is finer than 1m; round it")
    return int(millis)


def memory_bytes(text: str, key: str = "memory", where: str = "memory") -> int:
    """A memory quantity with a unit (``"512Mi"``, ``"4G"``) in bytes; BadInput if bad."""
    number, unit = _number(text, key, where)
    scale = _BINARY.get(unit) or _DECIMAL.get(unit)
    if scale is None:
        raise BadInput(
            f"{where}: {key} = {text!r} "
            + ("has no unit" if not unit else f"has the unknown unit {unit!r}")
            + '; write it with Ki, Mi, Gi (or k, M, G), e.g. "512Mi"'
        )
    value = number * scale
    if value != value.to_integral_value():
        raise BadInput(f"{where}: {key} = {text!r} is not a whole number of bytes")
    return int(value)


def _resources(table: Any, where: str, default: Resources) -> Resources:
    if table is None:
        return default
    if not isinstance(table, dict):
        raise BadInput(f"{where}: must be a table with requests and limits")
    unknown = sorted(set(table) - {"requests", "limits", "executor", "replicas"})
    if unknown:
        raise BadInput(f"{where}: unknown key {unknown[0]!r}; the keys are requests and limits")
    values: dict[str, str] = {}
    for part in ("requests", "limits"):
        sub = table.get(part)
        if sub is None:
            raise BadInput(
                f'{where}: {part} is missing; write {part} = {{cpu = "1", memory = "2Gi"}}'
            )
        if not isinstance(sub, dict) or set(sub) - {"cpu", "memory"}:
            raise BadInput(f"{where}: {part} must be a table of cpu and memory")
        for kind in ("cpu", "memory"):
            value = sub.get(kind)
            if not isinstance(value, str):
                raise BadInput(
                    f"{where}: {part}.{kind} is "
                    + ("missing" if value is None else f"{value!r}, not a string")
                    + f"; write it as a quoted quantity, e.g. {kind} = "
                    + ('"1"' if kind == "cpu" else '"2Gi"')
                )
            values[f"{kind}_{part[:-1]}"] = value.strip()
    cpu = {k: cpu_millis(values[f"cpu_{k}"], f"{k}s.cpu", where) for k in ("request", "limit")}
    mem = {
        k: memory_bytes(values[f"memory_{k}"], f"{k}s.memory", where) for k in ("request", "limit")
    }
    for kind, got in (("cpu", cpu), ("memory", mem)):
        if got["request"] > got["limit"]:
            raise BadInput(
                f"{where}: requests.{kind} = {values[kind + '_request']!r} is above "
                f"limits.{kind} = {values[kind + '_limit']!r}; a request may not exceed its limit"
            )
    return Resources(
        values["cpu_request"], values["cpu_limit"], values["memory_request"], values["memory_limit"]
    )


def _workers(table: Any, where: str, executors: Mapping[str, str]) -> tuple[WorkerGroup, ...]:
    if table is None:
        return DEFAULTS.workers
    if not isinstance(table, dict) or not table:
        raise BadInput(f"{where}: must hold at least one [..workers.NAME] table")
    groups = []
    for name, spec in sorted(table.items()):
        gwhere = f"{where}.{name}"
        if not _DNS_LABEL.match(name) or len(name) > 30:
            raise BadInput(
                f"{gwhere}: the group name must be lower-case letters, digits and '-' "
                "(at most 30; it is part of Kubernetes names)"
            )
        if not isinstance(spec, dict):
            raise BadInput(f"{gwhere}: must be a table (executor, replicas, requests, limits)")
        executor = spec.get("executor")
        if not isinstance(executor, str) or executor not in executors:
            raise BadInput(
                f"{gwhere}: executor = {executor!r} is not one of this project's executors "
                f"({', '.join(sorted(executors))})"
            )
        replicas = spec.get("replicas", 1)
        if isinstance(replicas, bool) or not isinstance(replicas, int):
            raise BadInput(f"{gwhere}: replicas = {replicas!r} must be a whole number")
        if not 0 <= replicas <= MAX_REPLICAS:
            raise BadInput(f"{gwhere}: replicas = {replicas} must be from 0 to {MAX_REPLICAS}")
        resources = _resources(spec, gwhere, DEFAULTS.workers[0].resources)
        groups.append(WorkerGroup(name, executor, replicas, resources))
    return tuple(groups)


def load(table: Any, where: str, executors: Mapping[str, str]) -> DeploySettings:
    """``[tool.lockstep.deploy]`` (``table``; None: the defaults) checked; BadInput naming the
    key on the first problem. ``where`` names the table in messages."""
    if table is None:
        return DEFAULTS
    if not isinstance(table, dict):
        raise BadInput(f"{where}: must be a table")
    unknown = sorted(set(table) - {"namespace", "scheduler", "runner", "workers"})
    if unknown:
        raise BadInput(
            f"{where}: unknown key {unknown[0]!r}; the keys are namespace, scheduler, runner "
            "and workers"
        )
    namespace = table.get("namespace", DEFAULTS.namespace)
    if not isinstance(namespace, str) or not _DNS_LABEL.match(namespace) or len(namespace) > 63:
        raise BadInput(
            f"{where}: namespace = {namespace!r} is not a Kubernetes namespace name "
            "(lower-case letters, digits and '-')"
        )
    for part in ("scheduler", "runner"):
        if isinstance(table.get(part), dict) and {"executor", "replicas"} & set(table[part]):
            raise BadInput(f"{where}.{part}: only requests and limits belong here")
    return DeploySettings(
        namespace=namespace,
        scheduler=_resources(table.get("scheduler"), f"{where}.scheduler", DEFAULTS.scheduler),
        runner=_resources(table.get("runner"), f"{where}.runner", DEFAULTS.runner),
        workers=_workers(table.get("workers"), f"{where}.workers", executors),
    )
