"""Numbers from users (options, job specs, settings), checked the same way everywhere.

A number of seconds is finite, > 0 and at most ``MAX_SECONDS`` (anything
longer is a typo); a count is a whole number in its range. Booleans and
strings are not numbers here, whatever Python thinks.
"""

from __future__ import annotations

import math
from typing import Any

MAX_SECONDS = 1e7  # 115 days: any longer is a typo
MAX_COUNT = 100_000


def seconds_value(value: Any) -> float | None:
    """``value`` as seconds if it is a finite number > 0 and at most ``MAX_SECONDS``
    (not a bool, not a string); None otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not math.isfinite(value) or not 0 < value <= MAX_SECONDS:
        return None
    return float(value)


def parse_seconds(text: str) -> float | None:
    """``text`` (an option's or a variable's value) as seconds, or None."""
    try:
        return seconds_value(float(text))
    except (ValueError, OverflowError):
        return None


def parse_count(text: str, minimum: int = 1, maximum: int = MAX_COUNT) -> int | None:
    """``text`` as a whole number from ``minimum`` to ``maximum``, or None."""
    try:
        value = int(text.strip(), 10)
    except ValueError:
        return None
    return value if minimum <= value <= maximum else None
