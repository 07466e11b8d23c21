"""Unpacking a lock's wheels into one site directory: every check first, then both cores.

Everything a wheel's directory tells is checked before a byte is written
(``core.wheels.plan_wheel``): safe member paths, the ``RECORD``, the budget,
no two wheels writing one file, nothing shadowing the standard library. Then
the members are written by a few threads at once (inflating, hashing and
writing release the GIL; on a 2-core worker this takes scipy + numpy from
1.5 s to 1.0 s), each checked against its ``RECORD`` hash as it is read. A
failure stops every thread and the caller discards the directory.

Files are created read-only (0444, 0555 if executable) and exclusively
(``O_EXCL | O_NOFOLLOW``); what was written, with its sha256, size and mtime,
is returned for the environment's ``ENV.json`` (no second read of the files).
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from lockstep.core.wheels import WheelPlan, WheelRejected, plan_wheel, read_members

MAX_ENV_BYTES = 4 << 30  # everything unpacked into one environment
MAX_MEMBERS = 200_000  # files in one environment
THREADS = max(2, min(4, os.cpu_count() or 2))


class EnvRefused(ValueError):
    """The lock or a wheel cannot make an environment here (a bad input: exit 2 on the runner)."""


class WheelRefused(EnvRefused):
    """A wheel's bytes are not what the lock says, or it is not a safe, honest wheel."""


@dataclass(frozen=True)
class Written:
    """One installed file: its path under the site directory, sha256 (hex), size, mtime."""

    target: str
    sha256: str
    size: int
    mtime_ns: int


def plan_all(wheels: Sequence[tuple[bytes, str, str]]) -> list[tuple[str, WheelPlan]]:
    """``(filename, plan)`` for each ``(data, filename, project)``; ``WheelRefused`` naming
    the wheel if one is dishonest or unsafe, the whole is too big, two wheels write one
    file, or a wheel would shadow the standard library."""
    plans = []
    total = files = 0
    owner: dict[str, str] = {}
    for data, filename, project in wheels:
        try:
            plan = plan_wheel(data, project)
        except WheelRejected as exc:
            raise _refuse(filename, str(exc)) from None
        total += plan.unpacked_size
        files += len(plan.files)
        if total > MAX_ENV_BYTES or files > MAX_MEMBERS:
            raise _refuse(
                filename,
                f"the environment would hold more than {MAX_ENV_BYTES} bytes or "
                f"{MAX_MEMBERS} files",
            )
        for target in plan.targets:
            if target is None:
                continue
            if target in owner:
                raise _refuse(filename, f"{target} is installed already (by {owner[target]})")
            owner[target] = filename
        plans.append((filename, plan))
    dirs = {t.rsplit("/", 1)[0] for t in owner if "/" in t}
    dirs |= {d.rsplit("/", i)[0] for d in dirs for i in range(1, d.count("/") + 1)}
    clash = sorted(dirs & owner.keys())
    if clash:
        raise _refuse(owner[clash[0]], f"{clash[0]} is a file and another wheel's directory")
    shadowing = sorted(
        top
        for top in {t.split("/")[0] for t in owner}
        if top.split(".")[0] in sys.stdlib_module_names and not top.endswith((".dist-info", ".pth"))
    )
    if shadowing:
        raise WheelRefused(
            f"the lock's wheels install {', '.join(shadowing)}, which would shadow "
            "the standard library; remove that requirement"
        )
    return plans


def install_all(plans: Sequence[tuple[str, WheelPlan]], site: Path) -> list[Written]:
    """Write every member of ``plans`` under ``site`` (which exists, empty), checked, with
    ``THREADS`` threads; ``WheelRefused`` (and some files written) if a member's bytes are
    not what its ``RECORD`` says."""
    dirs = sorted(
        {t.rsplit("/", 1)[0] for _f, p in plans for t in p.targets if t is not None and "/" in t}
    )
    for d in dirs:  # parents before children: sorted
        (site / d).mkdir(parents=True, exist_ok=True)
    # the members, largest first, dealt to the thread with the least so far
    work: list[tuple[int, int, int]] = sorted(
        ((-info.compress_size, w, i) for w, (_f, plan) in enumerate(plans)
         for i, info in enumerate(plan.files)),
    )  # fmt: skip
    shares: list[dict[int, list[int]]] = [{} for _ in range(THREADS)]
    loads = [0] * THREADS
    for neg_size, w, i in work:
        k = loads.index(min(loads))
        shares[k].setdefault(w, []).append(i)
        loads[k] -= neg_size
    stop = threading.Event()

    def run(share: dict[int, list[int]]) -> list[Written]:
        out: list[Written] = []
        for w, indexes in share.items():
            filename, plan = plans[w]
            try:
                for member in read_members(plan, sorted(indexes)):
                    if stop.is_set():
                        return out
                    out.append(_write(site, member.target, member.content,
                                      member.executable, member.sha256, filename))  # fmt: skip
            except WheelRejected as exc:
                raise _refuse(filename, str(exc)) from None
        return out

    with ThreadPoolExecutor(THREADS, thread_name_prefix="lockstep-unpack") as pool:
        futures = [pool.submit(run, share) for share in shares if share]
        wait(futures, return_when=FIRST_EXCEPTION)
        stop.set()  # a refusal stops the other threads at their next member
    errors = [f.exception() for f in futures if f.exception() is not None]
    if errors:
        raise errors[0]  # type: ignore[misc]
    return [w for f in futures for w in f.result()]


def _write(site: Path, target: str, content: bytes, executable: bool, sha256: str,
           filename: str) -> Written:  # fmt: skip
    dest = site / target
    mode = 0o555 if executable else 0o444
    try:
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    except FileExistsError:
        raise _refuse(filename, f"{target} is installed already (by another wheel)") from None
    except (NotADirectoryError, FileNotFoundError):
        raise _refuse(filename, f"{target} is below a file of the same name") from None
    try:
        view = memoryview(content)
        while view:
            view = view[os.write(fd, view) :]
        st = os.fstat(fd)
    finally:
        os.close(fd)
    return Written(target, sha256, st.st_size, st.st_mtime_ns)


def _refuse(filename: str, what: str) -> WheelRefused:
    return WheelRefused(f"wheel {filename}: {what}; refused, the environment is not made")
