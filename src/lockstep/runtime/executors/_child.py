"""The process side of ``isolated_warm`` and ``cold``: ``python -m … warm|template RFD WFD``.

``warm`` runs every call itself, so imports and module state carry over from
task to task. ``template`` never runs a call: it forks one child per call,
and the child imports the task's modules, runs it, reports and exits, so
nothing carries over and each task has its own PID. Both exit when the
worker closes their request pipe (also when the worker dies).
"""

from __future__ import annotations

import os
import sys

from lockstep.runtime.executors import _wire


def _describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exited with code {os.waitstatus_to_exitcode(status)} without a result"


def _fork_one(payload: bytes, rfd: int, wfd: int) -> tuple[bytes, int, bytes]:
    """Run ``payload`` in a forked child; the frame to send back to the worker."""
    result_r, result_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the task's own process
        code = 0
        try:
            os.close(result_r)
            os.close(rfd)
            os.close(wfd)
            kind, data = _wire.execute(payload)
            _wire.write_frame(result_w, kind, os.getpid(), data)
        except BaseException:  # never return into the template's loop
            code = 70
        finally:
            os._exit(code)
    os.close(result_w)
    try:
        frame: tuple[bytes, int, bytes] | None = _wire.read_frame(result_r)
    except EOFError:
        frame = None
    finally:
        os.close(result_r)
    _, status = os.waitpid(pid, 0)
    if frame is None:
        return _wire.CRASHED, pid, _describe_status(status).encode()
    return frame


def main(argv: list[str]) -> int:
    mode, rfd, wfd = argv[0], int(argv[1]), int(argv[2])
    if mode not in ("warm", "template"):
        print(f"lockstep executor child: unknown mode {mode!r}", file=sys.stderr)
        return 2
    _wire.write_frame(wfd, _wire.READY, os.getpid())
    while True:
        try:
            kind, _, payload = _wire.read_frame(rfd)
        except EOFError:
            return 0
        if kind != _wire.CALL:
            print(f"lockstep executor child: unexpected frame {kind!r}", file=sys.stderr)
            return 2
        if mode == "warm":
            out_kind, data = _wire.execute(payload)
            _wire.write_frame(wfd, out_kind, os.getpid(), data)
        else:
            _wire.write_frame(wfd, *_fork_one(payload, rfd, wfd))


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
