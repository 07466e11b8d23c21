"""Task functions the runtime tests run on workers (imported by name, in the executor's process)."""

from __future__ import annotations

import os
import time
from pathlib import Path

COUNTER = 0


def pid() -> int:
    return os.getpid()


def bump() -> int:
    """Counts calls in a module global: carried over by ``isolated_warm``, never by ``cold``."""
    global COUNTER
    COUNTER += 1
    return COUNTER


def add(a: int, b: int = 0) -> int:
    return a + b


def sleep_then(seconds: float, value: int) -> int:
    time.sleep(seconds)
    return value


def boom(message: str) -> None:
    raise ValueError(message)


def write_pid_and_sleep(path: str, seconds: float) -> int:
    Path(path).write_text(str(os.getpid()))
    time.sleep(seconds)
    return os.getpid()


def rendezvous(directory: str, me: str, other: str, timeout: float = 30.0) -> bool:
    """Mark ``me`` present, then wait for ``other``: True only if both ran at the same time."""
    import pathlib

    here = pathlib.Path(directory)
    (here / me).touch()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (here / other).exists():
            return True
        time.sleep(0.01)
    return False


def touch(path: str) -> str:
    """Leaves a file behind: proof that a client's function ran (the gate tests)."""
    Path(path).write_text(str(os.getpid()))
    return path
