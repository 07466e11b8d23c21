"""A run with nothing to compute is answered from the store, without a cluster.

``lockstep run`` reads the store before it contacts the scheduler (``read_first``).
When the store holds every simulation of the job and the target's answer over
exactly those results (``answer``), the run is that answer: no preflight on
the cluster, no connection, no task. Both are input-addressed, so this is
the answer a run would compute: the simulations by build, bundle, executor,
model, parameter set and seed (``results.keys``); the aggregate by build,
bundle, executor, target and the sha256 of the results it was given, so a
changed or corrupt result, another target or another bundle runs the target
again. A spec with problems, a bundle from a registry (its digest is known
only there), no store, or anything missing leaves the run to the cluster,
which then uses this read of the store rather than reading it again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lockstep.bundles.format import Bundle, load_bundle
from lockstep.core.entrypoints import registered
from lockstep.core.errors import BadInput
from lockstep.jobs.result import STORED, Ran, result_head
from lockstep.jobs.spec import read_spec, spec_from_fields
from lockstep.jobs.study import Study, Tally
from lockstep.manifest import BuildManifest, load_manifest
from lockstep.results.keys import Inputs
from lockstep.results.store import ResultStore


@dataclass(frozen=True)
class Early:
    """The store as read before any cluster was contacted, for one build and bundle."""

    inputs: Inputs
    study: Study
    tally: Tally
    bundle: Bundle
    manifest: BuildManifest


def read_first(spec_path: Path, store: Path, manifest: BuildManifest | None) -> Early | None:
    """The job's stored results, read with the runner's own build and the bundle's
    digest; None if the spec, the bundle, the manifest or the store is not plainly there
    (the full run reports what is wrong)."""
    fields, problems = read_spec(spec_path, registered())
    if problems or not isinstance(fields.get("bundle"), Path):
        return None
    bundle, found = load_bundle(fields["bundle"])
    if bundle is None or found:
        return None
    try:
        own = manifest or load_manifest()
        results = ResultStore.open(store, create=False)
    except BadInput:
        return None
    spec = spec_from_fields(spec_path, fields)
    inputs = Inputs(own.build_id, bundle.digest, spec.executor, spec.model)
    study = Study(spec, inputs, results)
    return Early(inputs, study, study.read(), bundle, own)


def answer(
    early: Early, address: str, started: float, progress: Callable[[str], None]
) -> Ran | None:
    """The run, if every simulation and the aggregate over them are stored; else None."""
    study = early.study
    if study.done < study.total:
        return None
    key = early.inputs.aggregate_key(study.spec.target, study.results_digest())
    stored = study.store.aggregate(key)
    if stored is None or any(k not in stored for k in STORED):
        return None
    if (line := early.tally.corrupt_line(study.store)) is not None:
        progress(line)
    progress(
        f"all {study.total} simulation(s) and the aggregate by {study.spec.target} over "
        f"them are stored in {study.store.root} (build {early.inputs.build_id}, bundle "
        f"{early.inputs.bundle}): nothing to run, the cluster at {address} was not contacted"
    )
    head = result_head(
        study,
        version=early.manifest.version,
        bundle_reference=None,
        environment=stored["environment"],
        address=address,
        store=study.store.root,
        reused=early.tally.reused,
        computed=0,
        failures=[],
        aggregate=stored,
        aggregate_reused=True,
        started=started,
    )
    return Ran(head, study)
