"""``cold``: a fresh process for every task, forked from a clean template.

The template is an interpreter started once by the worker that imports only
lockstep's small child module and never a task's: it forks one child per task,
the child imports the task's modules, runs it, reports and exits. So each task
has its own PID and no module state carries over (for C++ extensions that keep
global state), while the cost per task is near a fork, not an interpreter start.
"""

from __future__ import annotations

from lockstep.runtime.executors._process import ProcessExecutor


class ColdExecutor(ProcessExecutor):
    """Runs each task in its own forked process; the template is replaced if it dies."""

    name = "cold"
    mode = "template"
