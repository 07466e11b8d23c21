"""``isolated_warm``: one warm child process, reused across tasks, replaced if it dies.

Task modules are imported in the child and stay imported, so the second task
of a kind pays no import cost; a crash of the child fails only the task that
was running, and the next task gets a fresh child.
"""

from __future__ import annotations

from lockstep.runtime.executors._process import ProcessExecutor


class IsolatedWarmExecutor(ProcessExecutor):
    """Runs tasks one at a time in a long-lived child interpreter."""

    name = "isolated_warm"
    mode = "warm"
