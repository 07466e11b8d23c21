"""Make lockstep's log lines visible in Dask's processes.

A worker under a nanny runs in a process that Dask spawned and whose logging
Dask configured for its own loggers only; without a handler, our INFO lines
(settings, the ready line) would be dropped.
"""

from __future__ import annotations

import logging
import sys


def ensure_visible() -> None:
    """Give the ``lockstep`` logger a stderr handler at INFO unless logging is set up already."""
    ours = logging.getLogger("lockstep")
    if ours.handlers or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s - %(name)s - %(levelname)s - %(message)s"))
    ours.addHandler(handler)
    ours.setLevel(logging.INFO)
    ours.propagate = False
