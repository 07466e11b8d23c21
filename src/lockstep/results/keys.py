"""The input address of a simulation: what determines its result, hashed.

A simulation's result is determined by the build that ran it, the bundle
(its code and locked dependencies), the executor, the model, the parameter
set and the seed; its key is ``sha256`` of the canonical JSON of exactly
those six (docs/design.md §4.11). Two runs that agree on all six may share a
result; a result of another build or bundle has another key and is never
reused. The target's answer over a job's results is addressed the same way
(``Inputs.aggregate_key``): the build, bundle, executor, the target, and the
digest of exactly the results it was given. Pure functions, fixed test vectors
(``tests/results``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lockstep.core.digests import canonical_json

KEY_FIELDS = ("build_id", "bundle", "executor", "model", "params", "seed")


@dataclass(frozen=True)
class Inputs:
    """What is the same for every simulation of one job on one build."""

    build_id: str
    bundle: str
    executor: str
    model: str

    def key(self, params: Mapping[str, Any], seed: int) -> str:
        """The simulation's key: 64 hex digits."""
        return simulation_key(
            {
                "build_id": self.build_id,
                "bundle": self.bundle,
                "executor": self.executor,
                "model": self.model,
                "params": params,
                "seed": seed,
            }
        )

    def aggregate_key(self, target: str, results: str) -> str:
        """The key of ``target``'s answer over the results whose digest is ``results``
        (``sha256:`` of the JSON text the target was given): 64 hex digits."""
        fields = {
            "build_id": self.build_id,
            "bundle": self.bundle,
            "executor": self.executor,
            "target": target,
            "results": results,
        }
        return hashlib.sha256(canonical_json(fields)).hexdigest()

    def matches(self, record: Mapping[str, Any]) -> bool:
        """Whether ``record`` was made by this build, bundle, executor and model."""
        return (
            record.get("build_id") == self.build_id
            and record.get("bundle") == self.bundle
            and record.get("executor") == self.executor
            and record.get("model") == self.model
        )


def simulation_key(fields: Mapping[str, Any]) -> str:
    """``sha256`` hex of the canonical JSON of ``fields``' six key fields (``KEY_FIELDS``);
    ``KeyError`` if one is missing. Other fields (worker, pid, output…) do not count."""
    return hashlib.sha256(canonical_json({k: fields[k] for k in KEY_FIELDS})).hexdigest()
