"""The Dask operator's form of a release: ``DaskCluster`` and ``DaskWorkerGroup`` objects.

Derived from the rendered plain objects (pure: the same documents give the
same output), so a pod is written once, in ``images/deploy/``: the
scheduler Deployment's pod becomes the ``DaskCluster``'s scheduler, its
Service's spec the scheduler service, and each worker group's Deployment one
``DaskWorkerGroup`` (``kubernetes.dask.org/v1``) with the same pod: image by
digest, security, resources, TLS, probes. The cluster's own default worker
group is kept at 0 replicas (the operator requires one); every group the
release deploys is a ``DaskWorkerGroup``. The NetworkPolicies,
PodDisruptionBudgets, workspace and runner are kept, pointed at the
operator's scheduler service ``<cluster>-scheduler``.

The cluster is named after the build (``lockstep-<short id>``), so an upgrade
is a second cluster beside the first, never one cluster of two builds.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

API_VERSION = "kubernetes.dask.org/v1"
CLUSTER_FILE = "dask-cluster.yaml"
KEPT_FILE = "lockstep.yaml"
HEADER = (
    "# Rendered by `lockstep release` from the plain files beside this directory: the\n"
    "# same pods as a Dask operator DaskCluster (apply one set or the other).\n"
)
# Labels the plain objects carry that the operator's own objects must not (it sets
# component and group labels of its own on the pods; ours go on the pod templates).
_POD_ONLY = ("app.kubernetes.io/component", "lockstep.dev/worker-group")


def cluster_name(short_id: str) -> str:
    return f"lockstep-{short_id}"


def _retarget(value: Any, old: str, new: str) -> Any:
    """``value`` with every ``://old:`` in its strings made ``://new:``."""
    if isinstance(value, dict):
        return {k: _retarget(v, old, new) for k, v in value.items()}
    if isinstance(value, list):
        return [_retarget(v, old, new) for v in value]
    if isinstance(value, str):
        return value.replace(f"://{old}:", f"://{new}:")
    return value


def _pod(deployment: dict[str, Any], replicas: int | None = None) -> dict[str, Any]:
    template = deployment["spec"]["template"]
    out: dict[str, Any] = {}
    if replicas is not None:
        out["replicas"] = replicas
    out["metadata"] = copy.deepcopy(template.get("metadata", {}))
    out["spec"] = copy.deepcopy(template["spec"])
    return out


def _meta(source: dict[str, Any], name: str) -> dict[str, Any]:
    meta = source["metadata"]
    labels = {k: v for k, v in meta.get("labels", {}).items() if k not in _POD_ONLY}
    out: dict[str, Any] = {"name": name}
    if "namespace" in meta:
        out["namespace"] = meta["namespace"]
    out["labels"] = labels
    if meta.get("annotations"):
        out["annotations"] = dict(meta["annotations"])
    return out


def operator_files(documents: Sequence[Any], short_id: str) -> dict[str, list[Any]]:
    """The operator set, by file name, from the plain set's ``documents``."""
    cluster = cluster_name(short_id)
    deployments = [d for d in documents if d["kind"] == "Deployment"]
    services = [d for d in documents if d["kind"] == "Service"]
    schedulers = [
        d
        for d in deployments
        if d["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component")
        == "scheduler"
    ]
    workers = [d for d in deployments if d not in schedulers]
    if len(schedulers) != 1 or len(services) != 1 or not workers:
        raise ValueError(
            "the operator form needs one scheduler Deployment, one Service and at least "
            f"one worker Deployment; the templates give {len(schedulers)}, {len(services)} "
            f"and {len(workers)}"
        )
    (scheduler,) = schedulers
    (service,) = services
    old = service["metadata"]["name"]
    new = f"{cluster}-scheduler"
    service_spec = copy.deepcopy(service["spec"])
    service_spec["selector"] = {
        **service_spec.get("selector", {}),
        "dask.org/cluster-name": cluster,
        "dask.org/component": "scheduler",
    }
    default_worker = _pod(workers[0], replicas=0)
    objects: list[Any] = [
        {
            "apiVersion": API_VERSION,
            "kind": "DaskCluster",
            "metadata": _meta(scheduler, cluster),
            "spec": {
                "idleTimeout": 0,
                "scheduler": {**_pod(scheduler), "service": service_spec},
                "worker": default_worker,  # unused: each group is a DaskWorkerGroup
            },
        }
    ]
    for worker in workers:
        group = worker["spec"]["template"]["metadata"]["labels"].get(
            "lockstep.dev/worker-group", worker["metadata"]["name"]
        )
        objects.append(
            {
                "apiVersion": API_VERSION,
                "kind": "DaskWorkerGroup",
                "metadata": _meta(worker, f"{cluster}-{group}"),
                "spec": {
                    "cluster": cluster,
                    "worker": _pod(worker, replicas=int(worker["spec"].get("replicas", 1))),
                },
            }
        )
    kept = [d for d in documents if d["kind"] not in ("Deployment", "Service")]
    return {
        CLUSTER_FILE: _retarget(objects, old, new),
        KEPT_FILE: _retarget(kept, old, new),
    }
