"""What runs inside the images: worker config, executors, the Dask handshake.

The package stays light on import: the CLI and the ``cold`` executor's
template process import parts of it, and neither should load Dask. The public
names are loaded on first use:

- :class:`~lockstep.runtime.config.RuntimeConfig` (``RuntimeConfig.from_env()``)
- :func:`~lockstep.runtime.cluster.connect` and
  :class:`~lockstep.runtime.identity.IncompatibleClusterError`
- :func:`~lockstep.runtime.tasks.run_task` and :func:`~lockstep.runtime.tasks.submit_task`
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "RuntimeConfig": "lockstep.runtime.config",
    "SETTINGS": "lockstep.core.settings",
    "IncompatibleClusterError": "lockstep.runtime.identity",
    "ClusterReport": "lockstep.runtime.identity",
    "Member": "lockstep.runtime.identity",
    "connect": "lockstep.runtime.cluster",
    "check_cluster": "lockstep.runtime.cluster",
    "run_task": "lockstep.runtime.tasks",
    "submit_task": "lockstep.runtime.tasks",
    "TaskError": "lockstep.runtime.executors",
    "TaskFailed": "lockstep.runtime.executors",
    "TaskCrashed": "lockstep.runtime.executors",
    "TaskTimedOut": "lockstep.runtime.executors",
    "TaskResultRefused": "lockstep.runtime.executors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'lockstep.runtime' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
