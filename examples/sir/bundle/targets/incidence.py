"""Incidence: mean daily new cases per parameter set, with its peak and attack rate."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def incidence(results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Aggregate simulation records (``params_index``, ``params``, ``seed``, ``output``)."""
    groups: dict[int, list[Mapping[str, Any]]] = {}
    for record in results:
        groups.setdefault(int(record["params_index"]), []).append(record)
    summary = []
    for index in sorted(groups):
        records = groups[index]
        curves = [r["output"]["new_cases"] for r in records]
        days = len(curves[0])
        mean = [round(sum(c[d] for c in curves) / len(curves), 6) for d in range(days)]
        peak_day = max(range(days), key=lambda d: mean[d])
        population = int(records[0]["params"]["population"])
        cases = [sum(c) for c in curves]
        summary.append({
            "params_index": index,
            "name": records[0]["params"].get("name", str(index)),
            "seeds": [r["seed"] for r in records],
            "mean_daily_incidence": mean,
            "peak_day": peak_day,
            "peak_incidence": mean[peak_day],
            "attack_rate": round(sum(cases) / (len(cases) * population), 6),
        })
    return {"parameter_sets": summary}
