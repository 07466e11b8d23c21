"""Dask nanny preload (``--preload-nanny lockstep.runtime.preload_nanny``): note a lost
scheduler in the nanny's process.

Under a nanny the worker runs in a child process; when it loses its scheduler it
asks the nanny to close gracefully, giving Dask's reason. The nanny's process is
the one ``lockstep worker`` runs in, so this wraps the nanny's ``close_gracefully``
handler to record (``worker.LOST``) a scheduler-loss reason: ``lockstep worker``
then exits ``EXIT_SCHEDULER_LOST`` (3), nanny or not, not 0.
"""

from __future__ import annotations

import logging
from typing import Any

from lockstep.runtime.worker import LOST, SCHEDULER_LOST_REASONS

log = logging.getLogger("lockstep.runtime.worker")
CLOSE_OP = "close_gracefully"


async def dask_setup(nanny: Any) -> None:
    original = nanny.handlers[CLOSE_OP]

    def close_gracefully(reason: str = "nanny-close-gracefully") -> Any:
        if reason in SCHEDULER_LOST_REASONS and not LOST:
            LOST.append(reason)
        return original(reason=reason)

    nanny.handlers[CLOSE_OP] = close_gracefully
