"""Who is who in a cluster, and the rules that decide who may work together.

Pure values and functions: no Dask, no I/O. Identities travel as canonical
JSON strings (never pickles, docs/design.md §5), so a process of another version
cannot smuggle in a stale object; every reader re-validates the manifest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

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
    platform: str = "-"  # the platform its manifest names (linux/arm64), "-" if none

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
        return cls(
            address,
            role,
            manifest.version,
            manifest.build_id,
            executor,
            status,
            manifest.platform or "-",
        )

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


UNREADABLE = "unreadable manifest"  # Refusal.reason: nothing usable was announced
OTHER_BUILD = "other build"  # Refusal.reason: another build id
ALTERED = "altered manifest"  # Refusal.reason: this build id with other executors


@dataclass(frozen=True)
class Refusal:
    """Why the gate refused a worker or a client: one field per fact, rendered once (``text``).

    ``who`` is "worker" (``subject`` is its address) or "client" (its client id).
    ``build_id``, ``version`` and ``executors`` are what it announced ("?" and
    ``()`` when ``reason`` is ``UNREADABLE``; ``problem`` then says why). It
    crosses the wire as plain fields (``to_wire``/``from_wire``), never prose.
    """

    who: str
    subject: str
    reason: str
    scheduler_build_id: str
    scheduler_version: str
    scheduler_executors: tuple[str, ...]
    build_id: str = "?"
    version: str = "?"
    executors: tuple[str, ...] = ()
    problem: str = ""

    @property
    def text(self) -> str:
        """The one line the scheduler logs and the refused process shows."""
        scheduler = (
            f"the scheduler is build {self.scheduler_build_id} version {self.scheduler_version}"
        )
        head = f"lockstep refused {self.who} {self.subject}"
        if self.who == "client":
            if self.reason == UNREADABLE:
                return (
                    f"{head}: {self.problem}; {scheduler}. Connect with "
                    "lockstep.runtime.connect() from the scheduler's build"
                )
            return (
                f"{head}: it is build {self.build_id} version {self.version} but {scheduler}. "
                "Run the runner from the scheduler's build"
            )
        if self.reason == UNREADABLE:
            return (
                f"{head}: {self.problem}; {scheduler}. "
                "Start workers from the scheduler's image with `lockstep worker`"
            )
        if self.reason == ALTERED:
            return (
                f"{head}: its manifest names build {self.build_id} but lists executors "
                f"{', '.join(self.executors) or 'none'}, while that build has "
                f"{', '.join(self.scheduler_executors)}; the manifest was altered. Start "
                "workers from the scheduler's image"
            )
        return (
            f"{head}: it is build {self.build_id} version {self.version} but {scheduler}. "
            "Start workers from the scheduler's image"
        )

    def to_wire(self) -> dict[str, Any]:
        """Plain msgpack-able fields (lists for tuples)."""
        fields = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in fields.items()}

    @classmethod
    def from_wire(cls, data: object) -> Refusal | None:
        """The value ``to_wire`` sent; None if ``data`` is not one (absent, or another shape)."""
        if not isinstance(data, dict) or set(data) != {f.name for f in fields(cls)}:
            return None
        values: dict[str, Any] = {}
        for f in fields(cls):
            value = data[f.name]
            if f.name.endswith("executors"):
                if not isinstance(value, list | tuple) or any(
                    not isinstance(v, str) for v in value
                ):
                    return None
                value = tuple(value)
            elif not isinstance(value, str):
                return None
            values[f.name] = value
        return cls(**values)


def _refusal(
    own: BuildManifest, who: str, subject: str, announced: object
) -> tuple[Refusal, BuildManifest | None]:
    """A refusal template (``OTHER_BUILD``) and what was announced; ``UNREADABLE`` if nothing."""
    base = Refusal(who, subject, OTHER_BUILD, own.build_id, own.version, own.executors)
    try:
        theirs = read_announced(announced, f"{who} {subject}")
    except BadInput as exc:
        return replace(base, reason=UNREADABLE, problem=exc.message), None
    return replace(
        base, build_id=theirs.build_id, version=theirs.version, executors=theirs.executors
    ), theirs


def admission_refusal(own: BuildManifest, address: str, announced: object) -> Refusal | None:
    """Why the scheduler of build ``own`` must refuse the worker at ``address``; None to admit."""
    refusal, theirs = _refusal(own, "worker", address, announced)
    if theirs is None or theirs.build_id != own.build_id:
        return refusal
    if theirs.executors != own.executors:  # same inputs, other claims: not this build's
        return replace(refusal, reason=ALTERED)
    return None


def hello_refusal(own: BuildManifest, client: str, announced: object) -> Refusal | None:
    """Why the scheduler of build ``own`` must refuse the hello of ``client``; None to admit."""
    refusal, theirs = _refusal(own, "client", client, announced)
    if theirs is None or theirs.build_id != own.build_id:
        return refusal
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
