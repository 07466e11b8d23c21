"""Progress reporting: what long steps say while they run.

Library code takes a ``Progress`` callable and defaults to ``quiet``; only the
CLI passes ``to_stderr``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

Progress = Callable[[str], None]


def quiet(_: str) -> None:
    """Say nothing (the default for library calls)."""


def to_stderr(message: str) -> None:
    """One progress line on stderr: what every command shows on long steps."""
    print(f"lockstep: {message}", file=sys.stderr, flush=True)
