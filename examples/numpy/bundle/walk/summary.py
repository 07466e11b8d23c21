"""Mean final position and mean maximum per parameter set."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def summary(results: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[int, list[Mapping[str, Any]]] = {}
    for record in results:
        groups.setdefault(int(record["params_index"]), []).append(record)
    return [
        {
            "params_index": index,
            "seeds": sorted(r["seed"] for r in groups[index]),
            "mean_final": round(float(np.mean([r["output"]["final"] for r in groups[index]])), 9),
            "mean_max": round(float(np.mean([r["output"]["max"] for r in groups[index]])), 9),
            "numpy": sorted({r["output"]["numpy"] for r in groups[index]}),
        }
        for index in sorted(groups)
    ]
