"""The result document of a run (``lockstep.result/v1``): its head, built once for a run
that computed and for one answered from the store, and its text, streamed.

The head names the job, build, bundle, executor and store, how many simulations
were reused and computed, the failures tolerated, the processes that made the
stored results and the aggregate; the simulations follow, read one at a time
from the study's spool (``document_chunks``), never all in memory.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lockstep.jobs.study import Failure, Study

RESULT_SCHEMA = "lockstep.result/v1"
BY = ("worker", "executor", "pid")  # who aggregated
STORED = (*BY, "value", "environment")  # what the store keeps of the target's answer


@dataclass(frozen=True)
class Ran:
    """A finished run: the result document but its simulations, which ``study`` streams."""

    head: dict[str, Any]
    study: Study


def default_store(spec_path: Path) -> Path:
    """Where a job's results are stored unless told: ``<spec's stem>.results`` beside it."""
    return spec_path.parent / f"{spec_path.stem}.results"


def result_head(
    study: Study,
    *,
    version: str,
    bundle_reference: str | None,
    environment: str | None,
    address: str | None,
    store: Path,
    reused: int,
    computed: int,
    failures: Sequence[Failure],
    aggregate: Mapping[str, Any],
    aggregate_reused: bool,
    started: float,
) -> dict[str, Any]:
    """The result document but its simulations (``aggregate``: the target's answer, its
    value decoded)."""
    inputs = study.inputs
    workers, pairs = study.processes()
    workers.add(str(aggregate["worker"]))
    pairs.add((str(aggregate["worker"]), int(aggregate["pid"])))
    return {
        "schema": RESULT_SCHEMA,
        "job": study.spec.to_dict(),
        "build_id": inputs.build_id,
        "version": version,
        "bundle": inputs.bundle,
        "bundle_reference": bundle_reference,
        "environment": environment,
        "executor": inputs.executor,
        "scheduler": address,
        "store": str(store),
        "reused": reused,
        "computed": computed,
        "failed": [
            {
                "params_index": f.simulation.params_index,
                "seed": f.simulation.seed,
                "key": f.simulation.key,
                "cause": f.cause,
            }
            for f in failures
        ],
        "workers": sorted(workers),
        "processes": [{"worker": w, "pid": p} for w, p in sorted(pairs)],
        "aggregate": aggregate["value"],
        "aggregated_by": {k: aggregate[k] for k in BY},
        "aggregate_reused": aggregate_reused,
        "elapsed_seconds": round(time.monotonic() - started, 3),
    }


def document_chunks(ran: Ran) -> Iterator[str]:
    """The result document as JSON text, in pieces: its simulations are read from the
    store's spool one at a time, never all in memory."""
    head = json.dumps(ran.head, indent=2)
    yield head[: -len("\n}")] + ',\n  "simulations": ['
    sep = "\n    "
    for text in ran.study.simulations():
        yield sep + text
        sep = ",\n    "
    yield ("\n  ]" if sep != "\n    " else "]") + "\n}\n"


def describe_processes(found: Iterable[Mapping[str, Any]]) -> str:
    """``processes`` for a progress line: ``N process(es) on W worker(s): ADDR pids 1, 2; …``."""
    by_worker: dict[str, list[int]] = {}
    for p in found:
        by_worker.setdefault(str(p["worker"]), []).append(int(p["pid"]))
    count = sum(len(pids) for pids in by_worker.values())
    named = "; ".join(
        f"{worker} pid{'s' if len(pids) > 1 else ''} {', '.join(map(str, pids))}"
        for worker, pids in sorted(by_worker.items())
    )
    return f"{count} process(es) on {len(by_worker)} worker(s): {named}"
