"""Ending a process and everything it started (Linux ``/proc``), for the executors.

A task may fork, daemonize (double fork and ``setsid``, leaving its process
group), ignore SIGTERM, or fork while we look. So a tree is frozen first
(SIGSTOP, again and again until no new descendant shows up: a stopped process
cannot fork), then killed with SIGKILL. The executors' child processes make
themselves *subreapers* (``PR_SET_CHILD_SUBREAPER``), so an orphan of a task
is re-parented to them instead of init, and stays a descendant we can find.

Kept free of Dask and other heavy imports: executor children import it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys

PR_SET_CHILD_SUBREAPER = 36
_ROUNDS = 200


def set_subreaper() -> bool:
    """Make this process the reaper of its orphaned descendants (Linux); False if it cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def _parents() -> dict[int, int]:
    """pid -> parent pid of every process visible in ``/proc``."""
    found: dict[int, int] = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return found
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:  # gone meanwhile
            continue
        # "pid (comm) state ppid …": comm may hold spaces and parentheses
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) >= 2:
            found[int(name)] = int(fields[1])
    return found


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (children, their children, …), from ``/proc``."""
    children: dict[int, list[int]] = {}
    for child, parent in _parents().items():
        children.setdefault(parent, []).append(child)
    found: set[int] = set()
    todo = list(children.get(pid, ()))
    while todo:
        p = todo.pop()
        if p not in found:
            found.add(p)
            todo.extend(children.get(p, ()))
    return found


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def kill_tree(root: int, *, include_root: bool = True) -> set[int]:
    """Freeze ``root`` and its descendants, then SIGKILL them all; the pids it killed.

    ``root`` must be a child of this process not yet reaped (or this process
    itself with ``include_root=False``), so its pid cannot name another process.
    """
    me = os.getpid()
    stopped: set[int] = set()
    if include_root and root != me:
        _signal(root, signal.SIGSTOP)
        stopped.add(root)
    for _ in range(_ROUNDS):
        new = descendants(root) - stopped - {me}
        if not new:
            break
        for pid in new:
            _signal(pid, signal.SIGSTOP)
        stopped |= new
    for pid in stopped:
        _signal(pid, signal.SIGKILL)
    if include_root and root != me:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(root, signal.SIGKILL)  # a group leader's group, if it still has one
    return stopped


def reap() -> None:
    """Collect every exited child of this process (orphans included), without waiting."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def end_descendants() -> None:
    """Kill everything below this process (left over by tasks) and reap it."""
    for _ in range(_ROUNDS):
        left = descendants(os.getpid())
        if not left:
            break
        kill_tree(os.getpid(), include_root=False)
        reap()
    reap()
