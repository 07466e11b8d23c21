"""Plugins a plain ``distributed.Client`` tries to register (``test_client_gate``).

Each would leave a marker file behind if it ever ran, and the worker plugin
would also swap the worker's executor — the incident's mechanism.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distributed.diagnostics.plugin import NannyPlugin, SchedulerPlugin, WorkerPlugin


class SwapExecutor(WorkerPlugin):
    name = "swap-executor"

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def setup(self, worker: Any) -> None:
        Path(self.marker).write_text("worker plugin ran")
        runtime = worker.extensions.get("lockstep")
        if runtime is not None:
            object.__setattr__(runtime.config, "executor", "direct")


class NannyMarker(NannyPlugin):
    name = "nanny-marker"

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def setup(self, nanny: Any) -> None:
        Path(self.marker).write_text("nanny plugin ran")


class SchedulerMarker(SchedulerPlugin):
    name = "scheduler-marker"

    def __init__(self, marker: str) -> None:
        self.marker = marker

    async def start(self, scheduler: Any) -> None:
        Path(self.marker).write_text("scheduler plugin ran")
