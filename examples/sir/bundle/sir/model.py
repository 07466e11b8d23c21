"""Chain-binomial SIR: deterministic given (params, seed), pure Python, fast.

Each day every susceptible person is infected with probability
``1 - exp(-beta * I / N)`` and every infected person recovers with
probability ``1 - exp(-gamma)``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from typing import Any


def _binomial(rng: random.Random, n: int, p: float) -> int:
    return sum(1 for _ in range(n) if rng.random() < p)


def simulate(params: Mapping[str, Any], seed: int) -> dict[str, Any]:
    """One epidemic: daily new cases and compartment sizes for ``params["days"]`` days."""
    population = int(params["population"])
    infected = int(params["initial_infected"])
    beta, gamma, days = float(params["beta"]), float(params["gamma"]), int(params["days"])
    rng = random.Random(seed)
    susceptible, recovered = population - infected, 0
    new_cases, infectious = [], []
    p_recover = 1.0 - math.exp(-gamma)
    for _ in range(days):
        p_infect = 1.0 - math.exp(-beta * infected / population)
        cases = _binomial(rng, susceptible, p_infect)
        recoveries = _binomial(rng, infected, p_recover)
        susceptible -= cases
        infected += cases - recoveries
        recovered += recoveries
        new_cases.append(cases)
        infectious.append(infected)
    return {"new_cases": new_cases, "infectious": infectious,
            "final_susceptible": susceptible, "final_recovered": recovered}
