"""One random walk per seed: numpy's generator, seeded by the task only."""

from __future__ import annotations

from typing import Any

import numpy as np


def simulate(params: dict[str, Any], seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    steps = rng.normal(float(params["drift"]), float(params["sigma"]), size=int(params["steps"]))
    path = np.cumsum(steps)
    return {
        "final": round(float(path[-1]), 9),
        "max": round(float(path.max()), 9),
        "numpy": np.__version__,
        "numpy_file": np.__file__,
    }
