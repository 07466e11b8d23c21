"""Running a job's missing simulations into the result store, under its failure policy.

Each batch of finished tasks becomes records (``results.store``) written as
one segment before the window is topped up again. A simulation that fails is
recorded with its one-line cause (``status: failed``: it runs again on the
next run); the spec's ``max_failures`` (default 0) says how many a run
tolerates: one more stops the run (``JobFailed``, exit 1), with every result
so far kept. A task that reports another build, executor or bundle than the
job's is refused and never stored.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from lockstep.core import malloc
from lockstep.core.errors import CheckFailed
from lockstep.jobs.stream import Call, Outcome, TaskWindow
from lockstep.jobs.study import Failure, Study
from lockstep.results.store import SegmentWriter

SIMULATE = "lockstep.jobs.entry:simulate"
SHOWN = 5  # failures named in the summary line


class JobFailed(CheckFailed):
    """A simulation or the target failed, or ran somewhere it must not have, or the run
    deadline passed (exit 1)."""


class Tasks(Protocol):
    def window(self) -> TaskWindow: ...

    def stream(self, window: TaskWindow, calls: Iterator[Call]) -> Iterator[list[Outcome]]: ...


def failure_line(error: BaseException, what: str) -> str:
    """One line: what failed, the cause, and the process it failed in."""
    from lockstep.runtime.executors import TaskError

    if isinstance(error, TaskError):
        process = (
            f"{error.executor} process {error.pid}"
            if error.pid is not None
            else f"{error.executor} executor"
        )
        return f"{what} failed: {error.cause} ({process} on worker {error.worker or '?'})"
    cause = " ".join(f"{type(error).__name__}: {error}".split())
    return f"{what} failed: {cause}"


def check_ran_right(expected: dict[str, str], answer: dict[str, Any], what: str) -> None:
    """Refuse a result from another build, executor or bundle than ``expected``."""
    wrong = [
        f"{k} {answer.get(k)} (expected {v})" for k, v in expected.items() if answer.get(k) != v
    ]
    if wrong:
        raise JobFailed(
            f"{what} ran on worker {answer.get('worker')} with "
            + ", ".join(wrong)
            + "; refusing its result"
        )


def simulate_missing(
    tasks: Tasks,
    study: Study,
    writer: SegmentWriter,
    tolerate: int,
    progress: Callable[[str], None],
    kept: Callable[[], str],
) -> list[Failure]:
    """Run every simulation ``study`` lacks, storing each batch as it arrives; the failures
    (at most ``tolerate``, else ``JobFailed``)."""
    inputs, spec = study.inputs, study.spec
    expected = {"build_id": inputs.build_id, "executor": inputs.executor, "bundle": inputs.bundle}

    def calls() -> Iterator[Call]:
        for position in study.missing():
            sim = study.simulation(position)
            yield Call(
                sim,
                f"simulation {sim.what} ({spec.model})",
                SIMULATE,
                (spec.model, sim.params, sim.seed),
            )

    failures: list[Failure] = []
    shown = study.done * 10 // max(study.total, 1)
    untrimmed = 0  # results stored since the C heap was last trimmed
    for outcomes in tasks.stream(tasks.window(), calls()):
        records = []
        for outcome in outcomes:
            sim = outcome.call.tag
            if outcome.error is not None:
                cause = failure_line(outcome.error, outcome.call.what)
                failures.append(Failure(sim, cause))
                records.append(_record(study, sim, None, cause, _where(outcome.error)))
                continue
            answer = outcome.answer
            assert answer is not None
            check_ran_right(expected, answer, outcome.call.what)
            records.append(_record(study, sim, answer, None, answer))
        writer.write(records)
        untrimmed += len(records)
        if untrimmed >= malloc.TRIM_EVERY:  # batches' buffers freed: hand the pages back
            untrimmed = 0
            malloc.trim()
        for record, outcome in zip(records, outcomes, strict=True):
            found = outcome.call.tag.position
            if record["status"] == "ok":
                study.take_new(found, record)
            else:
                study.mark_failed(found)
        if len(failures) > tolerate:
            first = failures[tolerate].cause
            allowed = (
                f"; {len(failures)} simulation(s) failed, the job tolerates {tolerate} "
                "(max_failures)"
                if tolerate
                else ""
            )
            raise JobFailed(f"{first}{allowed}; {kept()}")
        step = study.done * 10 // max(study.total, 1)
        if step != shown:
            shown = step
            progress(f"simulations {study.done}/{study.total} done")
    return failures


def _where(error: BaseException) -> dict[str, Any]:
    return {
        "worker": getattr(error, "worker", None),
        "pid": getattr(error, "pid", None),
        "environment": None,
    }


def _record(
    study: Study,
    sim: Any,
    answer: dict[str, Any] | None,
    cause: str | None,
    where: dict[str, Any],
) -> dict[str, Any]:
    inputs = study.inputs
    value = answer["value"] if answer is not None else {}
    tables = {
        name: study.store.put_blob(data) for name, data in sorted(value.get("tables", {}).items())
    }
    return {
        "key": sim.key,
        "status": "ok" if answer is not None else "failed",
        "build_id": inputs.build_id,
        "bundle": inputs.bundle,
        "executor": inputs.executor,
        "model": inputs.model,
        "params": sim.params,
        "seed": sim.seed,
        "output": json.loads(value["output"]) if answer is not None else None,
        "tables": tables,
        "cause": cause,
        "worker": where.get("worker"),
        "pid": where.get("pid"),
        "environment": where.get("environment"),
        "seconds": value.get("seconds"),
    }
