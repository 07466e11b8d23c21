"""Task functions the runtime tests run on workers (imported by name, in the executor's process)."""

from __future__ import annotations

import os
import signal
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


# --- hostile tasks: each must fail alone, and leave the worker serving the next task -------


def exit_with(how: str) -> None:
    """Leave the way ``how`` says: raise a BaseException, or end the process."""
    if how == "SystemExit":
        raise SystemExit(3)
    if how == "sys.exit":
        import sys

        sys.exit("bye")
    if how == "KeyboardInterrupt":
        raise KeyboardInterrupt
    if how == "GeneratorExit":
        raise GeneratorExit
    if how == "os._exit":
        os._exit(5)
    if how == "SIGKILL":
        os.kill(os.getpid(), signal.SIGKILL)
    if how == "SIGTERM":
        os.kill(os.getpid(), signal.SIGTERM)
    raise AssertionError(how)


def hang(pid_file: str, ignore_term: bool = True) -> None:
    """Write this pid, ignore SIGTERM and never return."""
    if ignore_term:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    Path(pid_file).write_text(str(os.getpid()))
    while True:
        time.sleep(0.5)


def busy() -> None:
    """Loop for ever in C calls that hold the GIL (starving the worker's event loop)."""
    while True:
        sum(range(10**7))


def _daemon(pid_file: str, detach: bool) -> None:
    """Fork a child (``detach``: double fork and setsid, a real daemon) that sleeps for
    ever ignoring SIGTERM and writes its pid; wait until the pid is written."""
    path = Path(pid_file)
    first = os.fork()
    if first == 0:
        try:
            if detach:
                os.setsid()
                if os.fork() != 0:
                    os._exit(0)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(str(os.getpid()))
            tmp.rename(path)
            while True:
                time.sleep(0.5)
        finally:
            os._exit(0)
    if detach:
        os.waitpid(first, 0)
    while not path.exists():
        time.sleep(0.01)


def fork_daemon_and_return(pid_file: str, detach: bool = True) -> int:
    _daemon(pid_file, detach)
    return 7


def fork_daemon_and_hang(pid_file: str, hang_file: str) -> None:
    _daemon(pid_file, True)
    hang(hang_file)


def huge_output(megabytes: int) -> int:
    """Write ``megabytes`` MiB to fd 1 and fd 2, then close both."""
    block = b"x" * (1 << 20)
    for _ in range(megabytes):
        os.write(1, block)
        os.write(2, block)
    os.close(1)
    os.close(2)
    print("after closing stdout")
    return megabytes


def huge_result(megabytes: int) -> bytes:
    return b"x" * (megabytes << 20)


class Evil:
    """Runs ``command`` when unpickled: the worker must never do that."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (self.command,))


def evil_result(marker: str) -> object:
    return {"ok": [1, 2, Evil(f"touch {marker}")]}


class EvilError(Exception):
    """An exception that runs ``command`` when unpickled."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (str(self.args[0]),))


def raise_evil(marker: str) -> None:
    raise EvilError(f"touch {marker}")


def close_pipes() -> int:
    """Close every descriptor above 2 (the executor's pipes among them)."""
    os.closerange(3, 1 << 16)
    return 1
