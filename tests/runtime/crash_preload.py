"""A preload that kills its worker during start-up, as a crashing extension would."""

from __future__ import annotations

import os


def dask_setup(worker: object) -> None:
    os._exit(7)
