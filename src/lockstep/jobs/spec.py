"""Job specs: the TOML file that names a bundle, its model and target, and what to run.

```toml
name = "sir-incidence"                    # optional; default: the file's stem
bundle = "bundle"                         # a directory relative to this file, or HOST/REPO@sha256:…
model = "sir.model:simulate"              # model(params, seed) -> mapping (JSON values)
target = "targets.incidence:incidence"    # target(results) -> aggregate (JSON values)
executor = "cold"                         # the executor the workers must run
seeds = [1, 2, 3]                         # every parameter set runs once per seed
task_timeout = 600                        # optional: seconds one task may run
run_deadline = 3600                       # optional: seconds the whole run may take
max_failures = 0                          # optional: failed simulations a run tolerates

[[params]]                                # one table per parameter set
beta = 0.3
gamma = 0.1
```

Reading a spec never stops at the first problem: ``read_spec`` returns every
field it could validate and a ``Problem`` for each one it could not, so
preflight can report them all at once.
"""

from __future__ import annotations

import datetime
import math
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lockstep.bundles.artifact import parse_bundle_reference
from lockstep.core.bounded import SPEC_MAX, read_regular
from lockstep.core.errors import BadInput, CheckFailed
from lockstep.core.limits import MAX_SECONDS, seconds_value
from lockstep.oci.reference import ReferenceRefused, looks_like_reference

if sys.version_info >= (3, 11):  # noqa: UP036 - tomli is the fallback for older Pythons
    import tomllib
else:  # pragma: no cover - Python < 3.11
    import tomli as tomllib

SCHEMA = "lockstep.job/v1"
KEYS = (
    "schema",
    "name",
    "bundle",
    "model",
    "target",
    "executor",
    "seeds",
    "params",
    "task_timeout",
    "run_deadline",
    "max_failures",
)
REQUIRED = ("bundle", "model", "target", "executor", "seeds", "params")
_ENTRY = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
MAX_SEED = 2**63 - 1


@dataclass(frozen=True)
class Problem:
    """One thing preflight found wrong: the file it is in, the name it is about, what to do.

    ``exit_code`` is 2 for bad input (a malformed job spec, bad runner
    configuration), 1 for a check that failed on well-formed input, 3 when an
    outside service failed (the check could not run).
    """

    file: str
    name: str
    message: str
    exit_code: int = 1

    def __str__(self) -> str:
        return f"{self.file}: {self.name}: {self.message}"


class PreflightFailed(CheckFailed):
    """Preflight found problems, one line each. Exit 2 if any is bad input (fix the spec
    first), else 1 if a check failed, else 3 (only outside services failed)."""

    def __init__(self, spec: Path, problems: list[Problem], submitted: str = "nothing") -> None:
        self.problems = tuple(problems)
        codes = {p.exit_code for p in problems}
        self.exit_code = next((c for c in (2, 1, 3) if c in codes), 1)
        lines = [
            f"preflight of {spec} found {len(problems)} problem(s); {submitted} was submitted",
            *(str(p) for p in problems),
        ]
        super().__init__("\n".join(lines))


@dataclass(frozen=True)
class JobSpec:
    """A validated job spec; ``bundle`` is absolute (resolved against the spec's directory)."""

    path: Path
    name: str
    bundle: Path | str  # a directory, or HOST/REPO@sha256:… in a registry
    model: str
    target: str
    executor: str
    seeds: tuple[int, ...]
    params: tuple[dict[str, Any], ...] = field(default_factory=tuple)
    task_timeout: float | None = None  # None: the workers' LOCKSTEP_TASK_TIMEOUT
    run_deadline: float | None = None  # None: no deadline for the whole run
    max_failures: int = 0  # failed simulations a run tolerates

    def runs(self) -> list[tuple[int, dict[str, Any], int]]:
        """Every simulation, in spec order: ``(params index, params, seed)``."""
        return [(i, p, s) for i, p in enumerate(self.params) for s in self.seeds]

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "spec": str(self.path),
            "name": self.name,
            "bundle": str(self.bundle),
            "model": self.model,
            "target": self.target,
            "executor": self.executor,
            "seeds": list(self.seeds),
            "params": [dict(p) for p in self.params],
            "task_timeout": self.task_timeout,
            "run_deadline": self.run_deadline,
            "max_failures": self.max_failures,
        }


def read_spec(path: Path, executors: Mapping[str, str]) -> tuple[dict[str, Any], list[Problem]]:
    """The fields of ``path`` that are valid, and a ``Problem`` for each one that is not.

    ``executors`` is the executor registry (name -> entry point) a job may name.
    ``BadInput`` only if the file cannot be read at all.
    """
    where = str(path)
    try:
        raw = read_regular(path, SPEC_MAX)
    except OSError as exc:
        raise BadInput(
            f"{path}: cannot read the job spec ({exc.strerror}); check the path"
        ) from exc
    try:
        data = tomllib.loads(raw.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        return {}, [Problem(where, "(file)", f"not valid TOML ({exc}); fix the file", 2)]
    fields: dict[str, Any] = {}
    problems: list[Problem] = []

    def bad(name: str, message: str) -> None:  # the spec itself is malformed: exit 2
        problems.append(Problem(where, name, message, 2))

    for key in sorted(set(data) - set(KEYS)):
        bad(key, f"unknown key; a job spec has only: {', '.join(KEYS)}")
    for key in REQUIRED:
        if key not in data:
            bad(key, "missing (it is required)")
    schema = data.get("schema", SCHEMA)
    if schema != SCHEMA:
        bad("schema", f"{schema!r} is not {SCHEMA!r}, the only job spec schema this lockstep reads")
    name = data.get("name", path.stem)
    if isinstance(name, str) and name:
        fields["name"] = name
    else:
        bad("name", "must be a non-empty string")
    if "bundle" in data:
        bundle = data["bundle"]
        if isinstance(bundle, str) and bundle and looks_like_reference(bundle):
            try:
                fields["bundle"] = str(parse_bundle_reference(bundle))
            except ReferenceRefused as exc:
                bad("bundle", str(exc))
        elif isinstance(bundle, str) and bundle:
            fields["bundle"] = (path.parent / bundle).resolve()
        else:
            bad(
                "bundle",
                "must be the bundle directory, relative to the job spec, or "
                "HOST/REPO@sha256:… (`lockstep bundle push` prints it)",
            )
    for key, call in (("model", "model(params, seed)"), ("target", "target(results)")):
        if key not in data:
            continue
        value = data[key]
        if isinstance(value, str) and _ENTRY.match(value):
            fields[key] = value
        else:
            bad(
                key, f"{value!r} must read 'module:callable', the function lockstep calls as {call}"
            )
    if "executor" in data:
        executor = data["executor"]
        if isinstance(executor, str) and executor in executors:
            fields["executor"] = executor
        elif isinstance(executor, str):  # well-formed, but not an executor of this build
            problems.append(
                Problem(
                    where,
                    "executor",
                    f"{executor!r} is not a lockstep executor; valid values: "
                    f"{', '.join(sorted(executors))}",
                )
            )
        else:
            bad("executor", f"{executor!r} must be the name of an executor (a string)")
    if "seeds" in data:
        seeds = data["seeds"]
        if (
            isinstance(seeds, list)
            and seeds
            and all(
                isinstance(s, int) and not isinstance(s, bool) and 0 <= s <= MAX_SEED for s in seeds
            )
        ):
            if len(set(seeds)) == len(seeds):
                fields["seeds"] = tuple(seeds)
            else:
                bad("seeds", "lists a seed twice; each seed runs once per parameter set")
        else:
            bad("seeds", f"must be a non-empty list of integers from 0 to {MAX_SEED}")
    for key, meaning in (
        ("task_timeout", "one task may run"),
        ("run_deadline", "the whole run may take"),
    ):
        if key in data:
            seconds = seconds_value(data[key])
            if seconds is None:
                bad(
                    key,
                    f"{data[key]!r} must be the number of seconds {meaning}: a number > 0 "
                    f"and at most {MAX_SECONDS:g}, written without quotes",
                )
            else:
                fields[key] = seconds
    if "max_failures" in data:
        tolerated = data["max_failures"]
        if isinstance(tolerated, int) and not isinstance(tolerated, bool) and tolerated >= 0:
            fields["max_failures"] = tolerated
        else:
            bad(
                "max_failures",
                f"{tolerated!r} must be the number of failed simulations a run tolerates: "
                "a whole number >= 0 (default 0)",
            )
    if "params" in data:
        params = data["params"]
        if isinstance(params, list) and params and all(isinstance(p, dict) for p in params):
            found = [
                (f"params[{i}]{sub}", msg)
                for i, p in enumerate(params)
                for sub, msg in _non_json(p)
            ]
            for name_, msg in found:
                bad(name_, msg)
            if not found:
                fields["params"] = tuple(params)
        else:
            bad("params", "must be one or more [[params]] tables (one per parameter set)")
    return fields, problems


def spec_from_fields(path: Path, fields: Mapping[str, Any]) -> JobSpec:
    """The ``JobSpec`` of fully valid ``fields`` (from ``read_spec`` without problems)."""
    return JobSpec(
        path=path.resolve(),
        name=fields["name"],
        bundle=fields["bundle"],
        model=fields["model"],
        target=fields["target"],
        executor=fields["executor"],
        seeds=fields["seeds"],
        params=fields["params"],
        task_timeout=fields.get("task_timeout"),
        run_deadline=fields.get("run_deadline"),
        max_failures=fields.get("max_failures", 0),
    )


def load_spec(path: Path, executors: Mapping[str, str]) -> JobSpec:
    """Read a valid spec; ``PreflightFailed`` listing every schema problem."""
    fields, problems = read_spec(path, executors)
    if problems:
        raise PreflightFailed(path, problems)
    return spec_from_fields(path, fields)


def _non_json(value: Any, at: str = "") -> list[tuple[str, str]]:
    """``(key path, message)`` for every value a JSON result could not hold."""
    if isinstance(value, dict):
        return [hit for k, v in value.items() for hit in _non_json(v, f"{at}.{k}")]
    if isinstance(value, list):
        return [hit for i, v in enumerate(value) for hit in _non_json(v, f"{at}[{i}]")]
    if isinstance(value, float) and not math.isfinite(value):
        return [(at, f"{value} has no JSON form; use a finite number")]
    if isinstance(value, datetime.date | datetime.time):
        return [(at, "a TOML date or time has no JSON form; write it as a string")]
    return []
