"""libc's ``rand()``: a C library's global state, carried over between calls in one process.

Nothing here seeds the generator; a fresh process starts from the C library's
default state (as if ``srand(1)``). Like a C++ extension with static state, it
makes results depend on which tasks ran in the same process before.
"""

from __future__ import annotations

import ctypes
from collections.abc import Mapping, Sequence
from typing import Any

_libc = ctypes.CDLL(None)  # the process's own symbols: the C library's rand() among them


def simulate(params: dict[str, Any], seed: int) -> dict[str, Any]:
    draw = int(_libc.rand())
    return {"draw": draw, "value": seed * int(params["scale"]) + draw % int(params["scale"])}


def by_seed(results: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    return {str(r["seed"]): int(r["output"]["value"]) for r in results}
