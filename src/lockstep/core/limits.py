"""Numbers from users (options, job specs, settings), checked the same way everywhere.

A number of seconds is finite, > 0 and at most ``MAX_SECONDS`` (anything
longer is a typo); a count is a whole number in its range. Booleans and
strings are not numbers here, whatever Python thinks. ``seconds_option`` and
``count_option`` are the same checks as argparse types for the commands' options.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from lockstep.core.errors import BadInput

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


def seconds_option(flag: str) -> Callable[[str], float]:
    """An argparse ``type`` for ``flag``: seconds > 0; one clear line (exit 2) otherwise."""

    def parse(text: str) -> float:
        value = parse_seconds(text)
        if value is None:
            raise BadInput(
                f"{flag} {text!r}: not a number of seconds > 0 and at most "
                f"{MAX_SECONDS:g}; give e.g. {flag} 30"
            )
        return value

    return parse


def count_option(flag: str, minimum: int = 1) -> Callable[[str], int]:
    """An argparse ``type`` for ``flag``: a whole number >= ``minimum``."""

    def parse(text: str) -> int:
        value = parse_count(text, minimum)
        if value is None:
            raise BadInput(f"{flag} {text!r}: not a whole number from {minimum} to {MAX_COUNT}")
        return value

    return parse
