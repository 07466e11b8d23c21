"""What a job's tasks run on a worker: the model or the target, results as JSON text.

Both run in the executor's process with the job's bundle first on
``sys.path`` (``run_task(bundle=…)``). They answer JSON text rather than the
objects the bundle made, so nothing of the bundle's code is needed (or
unpickled) on the runner, and a value that has no JSON form fails here, on
the worker, naming the entry point. Kept light: executor children import it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from lockstep.core import entrypoints


def _json(value: Any, what: str) -> str:
    try:
        return json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"{what} returned a value with no JSON form ({exc}); return plain "
            "numbers, strings, lists and dicts"
        ) from None


def simulate(model: str, params: Mapping[str, Any], seed: int) -> str:
    """``model(params, seed)`` as JSON text; ``TypeError`` unless it returns a mapping."""
    out = entrypoints.resolve(model)(dict(params), seed)
    if not isinstance(out, Mapping):
        raise TypeError(f"model {model} returned a {type(out).__name__}, not a mapping")
    return _json(dict(out), f"model {model}")


def aggregate(target: str, results_json: str) -> str:
    """``target(results)`` as JSON text, ``results`` being the list of simulation records."""
    return _json(entrypoints.resolve(target)(json.loads(results_json)), f"target {target}")
