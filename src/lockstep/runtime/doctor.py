"""``lockstep doctor --scheduler ADDR``: the live cluster as one table, and is it one build?

The reference is the scheduler's own build. The doctor asks, with the same
pickle-free calls and checks as ``connect`` (``lockstep.runtime.cluster``):

- the scheduler's ``lockstep_identity``: its manifest, its image, the
  manifest each admitted worker announced, and the workers its gate refused
  (it keeps the last 100);
- every worker's own ``lockstep_identity`` (through the scheduler's
  ``broadcast``): its manifest, executor, image, pid and task count.

It needs no manifest of its own, so it runs anywhere (a runner image, a
laptop). The cluster is all one build when the scheduler runs the lockstep
gate and every worker it lists, and every worker it refused, has the
scheduler's build id; a refusal counts because a process of another build
is trying to join (a stale Deployment, say) even though the gate keeps it
out. Restarting the scheduler forgets old refusals.

The scheduler's client gate (``lockstep.runtime.preload_scheduler``) also
records the clients it refused (the last 100): a client that submitted
without the handshake, said hello with another build, or tried to run a
function or register a plugin. Each such client is one row (role
``client``, its address, ``refused client request: <op> (client <id>, N
refusal(s)) <time>``, the build it claimed if it said hello with one), and it
makes the doctor exit 1 like a refused worker: something is using the cluster
outside the handshake (a runner of another build, a notebook's plain
``Client``), even though the gate kept it from running anything.

The platform column is the platform each process's own manifest names
(``linux/amd64``, ``linux/arm64``; ``-`` for a refused process or one without a
manifest): one build on several platforms is one build, and the table says
which process runs which.

The image column is the ``LOCKSTEP_IMAGE`` variable of each process's
environment (``-`` if the deployment does not set it, or the process does not
answer it): the reference its deployment pulled, e.g.
``registry/sim/worker@sha256:…``. Each process answers it in its own
``lockstep_identity`` (a plain string, nothing pickled); a plain Dask
scheduler has no such handler, so its image is ``-``.
"""

from __future__ import annotations

import datetime
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from lockstep.core.errors import BadInput
from lockstep.manifest import BuildManifest
from lockstep.runtime.cluster_view import (
    ask_workers,
    call,
    listed_member,
    open_client,
    scheduler_member,
    worker_member,
)
from lockstep.runtime.identity import IDENTITY_OP, Member, Refusal, read_announced

REFUSED = "refused at registration"
REFUSED_CLIENT = "refused client request"
_COLUMNS = ("address", "role", "version", "build id", "platform", "executor", "image", "status")


@dataclass(frozen=True)
class Row:
    """One process of the cluster as the doctor saw it."""

    address: str
    role: str  # "scheduler" or "worker"
    version: str
    build_id: str
    executor: str
    image: str  # LOCKSTEP_IMAGE of the process (its lockstep_identity), "-" if unknown
    status: str  # "ok", or what is wrong with it
    pid: int | None = None
    tasks: int | None = None  # tasks the worker has run since it started
    platform: str = "-"  # the platform its manifest names (linux/arm64), "-" if none

    @classmethod
    def of(
        cls,
        member: Member,
        image: str = "-",
        pid: int | None = None,
        tasks: int | None = None,
        platform: str = "-",
    ) -> Row:
        return cls(
            member.address,
            member.role,
            member.version,
            member.build_id,
            member.executor,
            image,
            member.status,
            pid,
            tasks,
            platform,
        )


@dataclass(frozen=True)
class Diagnosis:
    """The cluster behind one scheduler: ``rows`` and the build they are compared with."""

    scheduler: str
    build_id: str | None  # the scheduler's build; None if it has no lockstep gate
    version: str | None
    rows: tuple[Row, ...]

    @property
    def problems(self) -> tuple[Row, ...]:
        """Rows that break "all one build" (a worker that is only starting is not one)."""
        return tuple(
            r
            for r in self.rows
            if self.build_id is None
            or r.build_id != self.build_id
            or r.status.startswith((REFUSED, REFUSED_CLIENT))
        )

    @property
    def ok(self) -> bool:
        return not self.problems

    def table(self) -> str:
        """Plain text: address, role, version, build id, platform, executor, image, status
        (a mixed cluster of one build shows linux/amd64 and linux/arm64 side by side)."""
        rows = [_COLUMNS] + [
            (r.address, r.role, r.version, r.build_id, r.platform, r.executor, r.image, r.status)
            for r in self.rows
        ]
        widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
        return "\n".join(
            "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
        )

    def summary(self) -> str:
        """One line: all one build, or what is not."""
        workers = sum(r.role == "worker" and not r.status.startswith(REFUSED) for r in self.rows)
        if self.ok:
            return (
                f"ok: scheduler {self.scheduler} and {workers} worker(s) are all build "
                f"{self.build_id} version {self.version}"
            )
        if self.build_id is None:
            return (
                f"cluster at {self.scheduler} is not guarded: scheduler "
                f"{self.rows[0].status}; start it with `lockstep scheduler` from the "
                "workers' image"
            )
        named = "; ".join(
            f"{r.role} {r.address}: {r.status} (build {r.build_id} version {r.version})"
            for r in self.problems
            if r.role != "client"
        )
        clients = [r for r in self.problems if r.role == "client"]
        if clients:
            named += ("; " if named else "") + (
                f"{len(clients)} client(s) refused by the client gate (not handshaken, another "
                f"build, or running functions/plugins), last: {clients[-1].address} "
                f"{clients[-1].status}"
            )
        return (
            f"cluster at {self.scheduler} is not all build {self.build_id} version "
            f"{self.version}: {named}; start every process from the scheduler's images"
            + (
                "; use lockstep.runtime.connect() (`lockstep run`) from the scheduler's "
                "build to submit"
                if clients
                else ""
            )
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "scheduler": self.scheduler,
            "build_id": self.build_id,
            "version": self.version,
            "ok": self.ok,
            "members": [asdict(r) for r in self.rows],
        }


def diagnose(address: str, timeout: float = 30.0) -> Diagnosis:
    """Inspect the live cluster at ``address``; ``ServiceFailed`` (exit 3) if it is unreachable."""
    if timeout <= 0:
        raise BadInput(f"--timeout must be > 0, not {timeout:g}")
    deadline = time.monotonic() + timeout
    client = open_client(address, timeout)
    try:
        info = call(client, getattr(client.scheduler, IDENTITY_OP), deadline, address)
        gated = isinstance(info, dict) and "manifest" in info
        if gated:
            listed = [dict(w) for w in info.get("workers", [])]
        else:  # a plain Dask scheduler: list its workers the Dask way
            scheduler_info = client.scheduler_info()
            listed = [
                {"address": a, "manifest": None, "executor": "-", "status": "running"}
                for a in scheduler_info.get("workers", {})
            ]
        addresses = [str(w["address"]) for w in listed]
        answers: Mapping[str, Any] = {}
        if addresses:
            answers = ask_workers(client, addresses, deadline, address)
    finally:
        client.close()

    reference, scheduler = _scheduler(address, info if gated else None, answers)
    pid = info.get("pid") if isinstance(info, dict) else None
    rows = [
        Row.of(
            scheduler,
            _image(info),
            pid if isinstance(pid, int) else None,
            platform=_platform(info if gated else None),
        )
    ]
    for entry in listed:
        answer = answers.get(str(entry["address"]))
        rows.append(_worker_row(entry, answer, reference, _image(answer)))
    refused = info.get("refused", []) if gated else []
    rows += _refused_rows(refused, [r.address for r in rows])
    rows += _refused_client_rows(info.get("refused_clients", []) if gated else [])
    build = reference.build_id if scheduler.ok and reference is not None else None
    version = reference.version if scheduler.ok and reference is not None else None
    return Diagnosis(address, build, version, tuple(rows))


def _scheduler(
    address: str, info: Mapping[str, Any] | None, answers: Mapping[str, Any]
) -> tuple[BuildManifest | None, Member]:
    """The build to compare with, and the scheduler's row.

    The scheduler's own build; without a gate (or with a bad manifest), the
    most common build among the workers, so they are compared with each other.
    """
    if info is not None:
        try:
            own = read_announced(info["manifest"], f"scheduler {address}")
        except BadInput as exc:
            return _majority(answers), Member.unknown(
                address, "scheduler", f"bad manifest: {exc.message}"
            )
        return own, scheduler_member(address, info, own)
    return _majority(answers), Member.unknown(
        address, "scheduler", "no lockstep gate (not started with `lockstep scheduler`)"
    )


def _majority(answers: Mapping[str, Any]) -> BuildManifest | None:
    found: dict[str, BuildManifest] = {}
    counts: Counter[str] = Counter()
    for answer in answers.values():
        if isinstance(answer, dict):
            try:
                manifest = read_announced(answer.get("manifest"), "worker")
            except BadInput:
                continue
            found.setdefault(manifest.build_id, manifest)
            counts[manifest.build_id] += 1
    return found[counts.most_common(1)[0][0]] if counts else None


def _worker_row(
    entry: Mapping[str, Any], answer: Any, reference: BuildManifest | None, image: str
) -> Row:
    address = str(entry["address"])
    if reference is None:
        return Row.of(
            Member.unknown(address, "worker", "no manifest", str(entry["executor"])), image
        )
    member = listed_member(entry, reference)
    if (
        isinstance(answer, dict)
        and "manifest" in answer
        and (member.ok or entry.get("manifest") is None)
    ):
        member = worker_member(member, answer, reference)
    pid = answer.get("pid") if isinstance(answer, dict) else None
    tasks = answer.get("tasks") if isinstance(answer, dict) else None
    return Row.of(
        member,
        image,
        pid if isinstance(pid, int) else None,
        tasks if isinstance(tasks, int) else None,
        _platform(answer),
    )


def _platform(answer: Any) -> str:
    """The platform a process's own manifest names (its identity answer), else "-"."""
    if not isinstance(answer, dict):
        return "-"
    try:
        return read_announced(answer.get("manifest"), "member").platform or "-"
    except BadInput:
        return "-"


def _refused_rows(refused: Sequence[Any], seen: Sequence[str]) -> list[Row]:
    """One row per worker address the gate refused (its last refusal), oldest first."""
    last: dict[str, Mapping[str, Any]] = {}
    for entry in refused:
        if isinstance(entry, dict) and entry.get("address") not in seen:
            last.pop(str(entry.get("address")), None)
            last[str(entry.get("address"))] = entry
    rows = []
    for address, entry in last.items():
        build, version = _claimed(entry) or ("?", "?")
        when = entry.get("time")
        status = REFUSED
        if isinstance(when, int | float):
            stamp = datetime.datetime.fromtimestamp(when, datetime.UTC)
            status += stamp.strftime(" %Y-%m-%dT%H:%M:%SZ")
        rows.append(
            Row(address, "worker", version, build, str(entry.get("executor", "-")), "-", status)
        )
    return rows


def _refused_client_rows(refused: Sequence[Any]) -> list[Row]:
    """One row per client the gate refused (its last refusal, and how many), oldest first."""
    last: dict[str, Mapping[str, Any]] = {}
    claimed: dict[str, tuple[str, str]] = {}  # the build a client's hello named, if any
    counts: Counter[str] = Counter()
    for entry in refused:
        if not isinstance(entry, dict):
            continue
        client = str(entry.get("client") or "-")
        # Dask's rpc calls carry no client id: group those by the caller's host.
        key = client if client != "-" else f"@{str(entry.get('address')).rsplit(':', 1)[0]}"
        counts[key] += 1
        last.pop(key, None)
        last[key] = entry
        found = _claimed(entry)
        if found:
            claimed[key] = found
    rows = []
    for key, entry in last.items():
        build, version = claimed.get(key, ("?", "?"))
        status = (
            f"{REFUSED_CLIENT}: {entry.get('op', '?')} (client {entry.get('client', '-')}"
            f", {counts[key]} refusal(s))"
        )
        when = entry.get("time")
        if isinstance(when, int | float):
            status += datetime.datetime.fromtimestamp(when, datetime.UTC).strftime(
                " %Y-%m-%dT%H:%M:%SZ"
            )
        rows.append(Row(str(entry.get("address", "?")), "client", version, build, "-", "-", status))
    return rows


def _claimed(entry: Mapping[str, Any]) -> tuple[str, str] | None:
    """The build id and version a refused process announced (the gate's ``Refusal``), if any."""
    refusal = Refusal.from_wire(entry.get("refusal"))
    if refusal is None or refusal.build_id == "?":
        return None
    return refusal.build_id, refusal.version


def _image(answer: Any) -> str:
    """The ``image`` of a ``lockstep_identity`` answer (``LOCKSTEP_IMAGE``); ``-`` if none."""
    image = answer.get("image") if isinstance(answer, dict) else None
    return image if isinstance(image, str) and image else "-"
