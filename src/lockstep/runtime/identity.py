"""Who is who in a cluster, and the rules that decide who may work together.

Pure values and functions: no Dask, no I/O. Identities travel as canonical
JSON strings (never pickles, docs/design.md §5), so a process of another version
cannot smuggle in a stale object; every reader re-validates the manifest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from lockstep.core.errors import BadInput, CheckFailed, ServiceFailed
from lockstep.manifest import BuildManifest

ANNOUNCE_KEY = "lockstep"  # worker.startup_information key: the manifest's canonical JSON
EXECUTOR_KEY = "lockstep_executor"  # worker.startup_information key: the executor type
IDENTITY_OP = "lockstep_identity"  # handler name on the scheduler and on every worker
HELLO_OP = "lockstep_hello"  # scheduler handler: a client announces its build (the client gate)
TOKEN_KEY = "lockstep_token"  # broadcast field: the token the scheduler answered to a hello
MAX_ANNOUNCED_BYTES = 64 * 1024  # a manifest is ~1 KiB; anything far larger is refused unread


@dataclass(frozen=True)
class Member:
    """One process of a cluster as the handshake saw it."""

    address: str
    role: str  # "runner", "scheduler" or "worker"
    version: str
    build_id: str
    executor: str = "-"
    status: str = "ok"  # "ok", or what is wrong with it

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @classmethod
    def of(
        cls,
        address: str,
        role: str,
        manifest: BuildManifest,
        executor: str = "-",
        status: str = "ok",
    ) -> Member:
        return cls(address, role, manifest.version, manifest.build_id, executor, status)

    @classmethod
    def unknown(cls, address: str, role: str, status: str, executor: str = "-") -> Member:
        return cls(address, role, "?", "?", executor, status)


def format_table(members: Sequence[Member]) -> str:
    """A plain-text table: address, role, version, build id, executor, status."""
    header = ("address", "role", "version", "build id", "executor", "status")
    rows = [header] + [
        (m.address, m.role, m.version, m.build_id, m.executor, m.status) for m in members
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


@dataclass(frozen=True)
class ClusterReport:
    """What ``connect`` found: the runner, the scheduler and the workers, all of one build."""

    members: tuple[Member, ...]

    @property
    def workers(self) -> tuple[Member, ...]:
        return tuple(m for m in self.members if m.role == "worker")

    def table(self) -> str:
        return format_table(self.members)


class IncompatibleClusterError(CheckFailed):
    """Runner, scheduler and workers are not all of one build (exit 1).

    ``members`` holds every process seen; the message ends with their table.
    """

    def __init__(self, summary: str, members: Sequence[Member] = ()) -> None:
        text = summary if not members else f"{summary}\n{format_table(members)}"
        super().__init__(text)
        self.summary = summary
        self.members = tuple(members)

    def __reduce__(self) -> tuple[type[IncompatibleClusterError], tuple[str, tuple[Member, ...]]]:
        return (type(self), (self.summary, self.members))


def read_announced(announced: object, where: str) -> BuildManifest:
    """The manifest a process announced (canonical JSON); ``BadInput`` if absent or bad."""
    if announced is None:
        raise BadInput(
            f"{where} announced no lockstep manifest (not started with "
            "`lockstep worker`, or its manifest could not be read)"
        )
    if not isinstance(announced, str):
        raise BadInput(
            f"{where} announced a manifest that is not a JSON string ({type(announced).__name__})"
        )
    if len(announced) > MAX_ANNOUNCED_BYTES:
        raise BadInput(
            f"{where} announced a manifest of {len(announced)} characters, more "
            f"than the {MAX_ANNOUNCED_BYTES} a manifest may have"
        )
    return BuildManifest.from_json(announced, f"manifest announced by {where}")


REFUSED_WORKER = "lockstep refused worker"  # starts every refusal; ``lockstep worker`` finds it


def admission_refusal(own: BuildManifest, address: str, announced: object) -> str | None:
    """Why the scheduler of build ``own`` must refuse the worker at ``address``; None to admit."""
    scheduler = f"the scheduler is build {own.build_id} version {own.version}"
    try:
        theirs = read_announced(announced, f"worker {address}")
    except BadInput as exc:
        return (
            f"{REFUSED_WORKER} {address}: {exc.message}; {scheduler}. "
            "Start workers from the scheduler's image with `lockstep worker`"
        )
    if theirs.build_id != own.build_id:
        return (
            f"{REFUSED_WORKER} {address}: it is build {theirs.build_id} version "
            f"{theirs.version} but {scheduler}. Start workers from the scheduler's image"
        )
    if theirs.executors != own.executors:  # same inputs, other claims: not this build's
        return (
            f"{REFUSED_WORKER} {address}: its manifest names build {theirs.build_id} but lists "
            f"executors {', '.join(theirs.executors) or 'none'}, while that build has "
            f"{', '.join(own.executors)}; the manifest was altered. Start workers from the "
            "scheduler's image"
        )
    return None


def hello_refusal(own: BuildManifest, client: str, announced: object) -> str | None:
    """Why the scheduler of build ``own`` must refuse the hello of ``client``; None to admit."""
    scheduler = f"the scheduler is build {own.build_id} version {own.version}"
    try:
        theirs = read_announced(announced, f"client {client}")
    except BadInput as exc:
        return (
            f"lockstep refused client {client}: {exc.message}; {scheduler}. Connect "
            "with lockstep.runtime.connect() from the scheduler's build"
        )
    if theirs.build_id != own.build_id:
        return (
            f"lockstep refused client {client}: it is build {theirs.build_id} version "
            f"{theirs.version} but {scheduler}. Run the runner from the scheduler's build"
        )
    return None


class ClusterNotReady(ServiceFailed):
    """Fewer compatible workers than required became ready in time (exit 3).

    ``members`` holds every process seen; the message names the workers not
    ready and any the scheduler refused, then ends with the table.
    """

    def __init__(self, summary: str, members: Sequence[Member] = ()) -> None:
        text = summary if not members else f"{summary}\n{format_table(members)}"
        super().__init__(text)
        self.summary = summary
        self.members = tuple(members)

    def __reduce__(self) -> tuple[type[ClusterNotReady], tuple[str, tuple[Member, ...]]]:
        return (type(self), (self.summary, self.members))
