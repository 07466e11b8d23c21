"""Ending a process and everything it started (Linux ``/proc``): the executors' tasks, and
the build's long-running tools (``python -m lockstep.core.reap -- COMMAND…``).

A task may fork, daemonize (double fork and ``setsid``, leaving its process
group), ignore SIGTERM, or fork while we look. So a tree is frozen first
(SIGSTOP, again and again until no new descendant shows up: a stopped process
cannot fork), then killed with SIGKILL. The executors' child processes make
themselves *subreapers* (``PR_SET_CHILD_SUBREAPER``), so an orphan of a task
is re-parented to them instead of init, and stays a descendant we can find.

As a program it *supervises* one command: it makes itself a subreaper, asks the
kernel to signal it when its parent dies (``PR_SET_PDEATHSIG``), runs the
command, and on its own end, a signal, or its parent's death kills every
process below it. So a build killed mid-way (``kill -9``) leaves no ``pex3``
or ``pip`` running behind it.

Standard library only: executor children import it and builds run it as a script.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
_ROUNDS = 200


def _prctl(option: int, value: int) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(option, value, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def set_subreaper() -> bool:
    """Make this process the reaper of its orphaned descendants (Linux); False if it cannot."""
    return _prctl(PR_SET_CHILD_SUBREAPER, 1)


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


def supervise(argv: list[str]) -> int:
    """Run ``argv`` and leave nothing of it behind; its exit code (128 + N for signal N).

    Ends everything below this process when the command exits, when this
    process gets SIGTERM, SIGINT or SIGHUP, and when its parent dies (the
    kernel sends SIGTERM then; the parent *thread* that started us must be the
    one that stays, as it is for the build).
    """
    parent = os.getppid()
    set_subreaper()
    _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before we asked to be told
        return 128 + signal.SIGTERM
    import subprocess

    child = subprocess.Popen(argv)

    def stop(signum: int, _frame: object) -> None:
        kill_tree(child.pid)
        end_descendants()
        os._exit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, stop)
    code = child.wait()
    end_descendants()
    return code if code >= 0 else 128 - code


def supervised(argv: list[str]) -> list[str]:
    """``argv`` run under ``supervise`` by this python (what the build runs tools with)."""
    return [sys.executable, "-m", "lockstep.core.reap", "--", *argv]


def main(args: list[str]) -> int:
    if not args or args[0] != "--" or len(args) < 2:
        print("usage: python -m lockstep.core.reap -- COMMAND [ARG...]", file=sys.stderr)
        return 2
    return supervise(args[1:])


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
