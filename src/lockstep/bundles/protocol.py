"""The bundle protocol between runner and worker: operations, replies, exit codes.

Both ends use this module: the worker's handlers (``bundles/handlers.py``)
answer with ``ok(...)`` or ``Failure(...).to_wire()``, and the runner
(``bundles/ship.py``) reads every answer back with ``read_failures``. Replies
cross Dask's ``broadcast`` as plain msgpack data, never as pickles:

- ``{"ok": True, ...fields}``: the operation's fields (see each ``Op``);
- ``{"ok": False, "error": str, "code": int[, "missing": [digest, …]]}``:
  ``code`` is the exit code the failure means for the runner (``Code``), and
  ``missing`` names the wheels a worker lacks for an environment.

Standard library only: the running worker imports it.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any


class Op(enum.StrEnum):
    """A worker operation's handler name (what ``broadcast`` sends as ``op``)."""

    HAS = "lockstep_bundle_has"  # (digest) → cached, path
    PUT = "lockstep_bundle_put"  # (digest, files=[[path, executable, data], …]) → path
    CHECK = "lockstep_bundle_check"  # (digest, checks, timeout) → results, path
    PULL = "lockstep_bundle_pull"  # (reference) → digest, pulled, wheels, bytes, seconds
    ENV_STATUS = "lockstep_env_status"  # (digest) → env, ready, missing
    WHEEL_PUT = "lockstep_wheel_put"  # (digest, data) → nothing
    ENV_MAKE = "lockstep_env_make"  # (digest) → env, built, seconds
    # (digest, layer, size, offset, data, last) → received | env, built, seconds
    ENV_LAYER = "lockstep_env_layer"


# Operations that store or import code: the scheduler relays them only with the token of
# a client's hello. ``HAS`` only reads.
STORING_OPS = frozenset(op.value for op in Op if op is not Op.HAS)


class Code(enum.IntEnum):
    """What a failed operation means for the runner's exit (``core/errors.py``)."""

    CHECK_FAILED = 1  # a check failed: bytes or files not what they claim, no answer
    BAD_INPUT = 2  # a lock this worker cannot use, a directory it cannot write, a bad reference
    SERVICE_FAILED = 3  # an outside service (the registry) failed


@dataclass(frozen=True)
class Failure:
    """One worker's failed answer (or its silence)."""

    error: str
    code: Code = Code.CHECK_FAILED
    missing: tuple[str, ...] = ()

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ok": False, "error": self.error, "code": int(self.code)}
        if self.missing:
            out["missing"] = list(self.missing)
        return out

    @classmethod
    def from_wire(cls, answer: Mapping[str, Any]) -> Failure:
        try:
            code = Code(int(answer.get("code", Code.CHECK_FAILED)))
        except (TypeError, ValueError):
            code = Code.CHECK_FAILED
        return cls(str(answer.get("error")), code, tuple(answer.get("missing") or ()))


def ok(**fields: Any) -> dict[str, Any]:
    """A successful answer with ``fields``."""
    return {"ok": True, **fields}


def message(op: Op, **fields: Any) -> dict[str, Any]:
    """The message that asks a worker for ``op``."""
    return {"op": op.value, **fields}


def read_failures(
    op: Op, workers: Iterable[str], answers: Mapping[str, Mapping[str, Any]]
) -> list[Failure]:
    """The failures among ``answers`` to ``op``: a worker of ``workers`` that did not
    answer first, then each answer that is not ok."""
    silent = [
        Failure(f"worker {w}: did not answer {op.value}") for w in workers if w not in answers
    ]
    return silent + [Failure.from_wire(a) for a in answers.values() if not a.get("ok")]


def exit_code(failures: Sequence[Failure]) -> int:
    """2 when every failure is bad input, else 1 (a failed check)."""
    if failures and all(f.code is Code.BAD_INPUT for f in failures):
        return int(Code.BAD_INPUT)
    return int(Code.CHECK_FAILED)
