"""The process side of ``isolated_warm`` and ``cold``: ``python -m … MODE RFD WFD LFD [SITE]``.

``MODE`` is ``warm`` or ``template``.
``SITE``, if given, is a bundle environment's site directory
(``lockstep.bundles.env``): the process serves that environment only,
with it on ``sys.path``; a ``PING`` is answered ``READY`` (a health check before
the worker reuses the process). A process started without one, that has run no call
yet, can be given one instead (``SERVE``): the worker keeps such a process spare, so
a task in a new environment does not wait for an interpreter to start.

``warm`` runs every call itself, so imports and module state carry over from
task to task. ``template`` never runs a call: it forks one child per call,
and the child imports the task's modules, runs it, reports and exits, so
nothing carries over and each task has its own PID.

Containment: the worker starts this process in a session of its own, and it
makes itself the subreaper of its descendants (``_reap``). A ``cold`` task's
process calls ``setsid()``: its process group is the task; when the task has
answered, died, or the worker asks (``KILL``, its deadline passed), the
template kills that group and then every other process the task left behind
(orphans come back to it), before it answers the worker. Both modes end, with
everything below them, when the worker closes their pipes or dies: the
template sees it on its request pipe, a warm child on its lifeline pipe
(``LFD``), watched by a thread since a warm task runs in the main thread.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import threading
import time

from lockstep.core import reap as _reap
from lockstep.runtime.executors import _wire


def _describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exited with code {os.waitstatus_to_exitcode(status)} without a result"


def _exit_status(pid: int, grace: float = 1.0) -> int | None:
    """``pid``'s wait status if it exits within ``grace`` seconds (without reaping it)."""
    deadline = time.monotonic() + grace
    while True:
        found = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        if found is not None:
            code = found.si_status
            if found.si_code == os.CLD_EXITED:
                return code << 8
            return code  # killed (or dumped core) by signal ``code``
        if time.monotonic() > deadline:
            return None
        time.sleep(0.01)


def _task_process(payload: bytes, result_w: int) -> None:
    """In the forked child: a session of its own, run the call, answer, exit. Never returns."""
    code = 0
    try:
        os.setsid()
        kind, data = _wire.execute(payload)
        _wire.write_frame(result_w, kind, os.getpid(), data)
    except BaseException:  # never return into the template's loop
        code = 70
    finally:
        os._exit(code)


def _fork_one(payload: bytes, rfd: int, wfd: int, lfd: int) -> tuple[bytes, int, bytes] | None:
    """Run ``payload`` in a forked child; the frame to send back to the worker.

    None if the worker went away meanwhile (the task and its leftovers are killed).
    """
    max_payload = _wire.payload_limit(payload) + 64 * 1024  # the value, or an error report
    result_r, result_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the task's own process
        os.close(result_r)
        for fd in (rfd, wfd, lfd):
            with contextlib.suppress(OSError):
                os.close(fd)
        _task_process(payload, result_w)
    os.close(result_w)
    _wire.write_frame(wfd, _wire.STARTED, pid)
    reader = _wire.FrameReader(result_r, max_payload)
    frame: tuple[bytes, int, bytes] | None = None
    problem = ""
    worker_gone = killed = False
    try:
        while frame is None and not reader.eof and not problem:
            readable, _, _ = select.select([result_r, rfd], [], [])
            if rfd in readable:
                try:
                    kind, _, _ = _wire.read_frame(rfd)
                except EOFError:
                    worker_gone = True
                    break
                if kind == _wire.KILL:
                    killed = True
                    break
            if result_r in readable:
                reader.feed()
                try:
                    frame = reader.frame()
                except _wire.FrameTooLarge as exc:
                    problem = (
                        f"sent an answer of {exc.length} bytes, over the limit of "
                        f"{max_payload} (LOCKSTEP_RESULT_MAX_BYTES and an error report)"
                    )
    finally:
        os.close(result_r)
        ended = frame is None and not (killed or worker_gone or problem)
        status = _exit_status(pid) if ended else None  # before we kill it
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)  # the task's group: done, or to be stopped
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)  # in case it never made its group
        os.waitpid(pid, 0)
        _reap.end_descendants()  # what the task left outside its group
    if worker_gone:
        return None
    if killed:
        return _wire.CRASHED, pid, b"killed (the worker asked: deadline)"
    if problem:
        return _wire.CRASHED, pid, problem.encode()
    if frame is None:
        described = (
            _describe_status(status)
            if status is not None
            else "closed its answer pipe without answering (killed)"
        )
        return _wire.CRASHED, pid, described.encode()
    if frame[0] not in _wire.ANSWERS:
        return _wire.CRASHED, pid, f"sent a malformed answer ({frame[0]!r})".encode()
    return frame[0], pid, frame[2]


def _watch_lifeline(lfd: int) -> None:
    """Warm child: when the worker closes the lifeline (or dies), end everything here."""
    with contextlib.suppress(OSError):
        while os.read(lfd, 1):
            pass
    _reap.end_descendants()
    os._exit(0)


def main(argv: list[str]) -> int:
    mode, rfd, wfd, lfd = argv[0], int(argv[1]), int(argv[2]), int(argv[3])
    served = len(argv) > 4 and bool(argv[4])  # serves an environment (never a second one)
    if served:
        sys.path.insert(0, argv[4])  # the environment's site: ahead of the image's packages
    called = False
    if mode not in ("warm", "template"):
        print(f"lockstep executor child: unknown mode {mode!r}", file=sys.stderr)
        return 2
    _reap.set_subreaper()
    if mode == "warm":
        threading.Thread(
            target=_watch_lifeline, args=(lfd,), daemon=True, name="lockstep-lifeline"
        ).start()
    _wire.write_frame(wfd, _wire.READY, os.getpid())
    while True:
        try:
            kind, _, payload = _wire.read_frame(rfd)
        except EOFError:
            _reap.end_descendants()
            return 0
        if kind == _wire.KILL:  # a deadline passed just as the last task answered
            continue
        if kind == _wire.PING:
            _wire.write_frame(wfd, _wire.READY, os.getpid())
            continue
        if kind == _wire.SERVE:
            if served or called:  # modules or state of another environment, or of a task
                print("lockstep executor child: SERVE after a call or a site", file=sys.stderr)
                return 2
            sys.path.insert(0, os.fsdecode(payload))
            served = True
            _wire.write_frame(wfd, _wire.READY, os.getpid())
            continue
        if kind != _wire.CALL:
            print(f"lockstep executor child: unexpected frame {kind!r}", file=sys.stderr)
            return 2
        called = True
        if mode == "warm":
            out_kind, data = _wire.execute(payload)
            _wire.write_frame(wfd, out_kind, os.getpid(), data)
        else:
            answer = _fork_one(payload, rfd, wfd, lfd)
            if answer is None:
                return 0
            _wire.write_frame(wfd, *answer)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
