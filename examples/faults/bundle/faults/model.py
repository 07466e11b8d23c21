"""A model that misbehaves on one seed as its parameter set says (``fault``, ``seed``):
loops for ever, exits, or sleeps; every other simulation answers at once."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any


def simulate(params: Mapping[str, Any], seed: int) -> dict[str, Any]:
    if seed == params.get("seed"):
        fault = params["fault"]
        if fault == "loop":
            while True:  # never returns: the task timeout ends it
                pass
        if fault == "exit":
            raise SystemExit("giving up")
    if params.get("fault") == "sleep":
        time.sleep(params["seconds"])  # every simulation: the run deadline ends them
    return {"seed": seed, "value": seed * 10}


def total(results: Sequence[Mapping[str, Any]]) -> int:
    return sum(int(r["output"]["value"]) for r in results)


class Simulation:
    """Not a model: calling a class only constructs it (preflight refuses it)."""

    def __init__(self, params: Mapping[str, Any], seed: int) -> None:
        self.params, self.seed = params, seed
