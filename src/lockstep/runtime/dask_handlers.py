"""What the scheduler's gate knows of Dask (pinned: distributed 2026.8.0): every handler the
scheduler has, which of them are refused to clients, which may be relayed to workers, and the
check that makes a scheduler exit if an upgrade moved any of them.

The gate (``preload_scheduler``) wraps handlers by name; a Dask that renamed, removed or
added one could let a client through unseen, so ``check_hooks`` refuses to guard a
scheduler whose handlers are not exactly these (a test fails on an upgrade that changes them).
"""

from __future__ import annotations

import inspect
from typing import Any

from lockstep.bundles.protocol import STORING_OPS, Op
from lockstep.runtime.identity import HELLO_OP, IDENTITY_OP

REGISTER_OP = "register-worker"
SUBMIT_OP = "update-graph"
MAX_REFUSALS = 100
MAX_CLIENT_ID = 200

# Scheduler rpc handlers refused for every client: each runs client code or reconfigures
# workers/nannies/the scheduler. Name -> the Scheduler method Dask 2026.8.0 binds to it.
REFUSED_OPS: dict[str, str] = {
    "run_function": "run_function",
    "feed": "feed",
    "register_worker_plugin": "register_worker_plugin",
    "unregister_worker_plugin": "unregister_worker_plugin",
    "register_nanny_plugin": "register_nanny_plugin",
    "unregister_nanny_plugin": "unregister_nanny_plugin",
    "register_scheduler_plugin": "register_scheduler_plugin",
    "unregister_scheduler_plugin": "unregister_scheduler_plugin",
    "dump_cluster_state_to_url": "dump_cluster_state_to_url",
}
REFUSED_WHAT = {
    "run_function": "running a function on the scheduler (Client.run_on_scheduler)",
    "feed": "running a function on the scheduler (feed)",
    "register_worker_plugin": "registering a worker plugin (Client.register_plugin)",
    "unregister_worker_plugin": "removing a worker plugin",
    "register_nanny_plugin": "registering a nanny plugin (Client.register_plugin)",
    "unregister_nanny_plugin": "removing a nanny plugin",
    "register_scheduler_plugin": "registering a scheduler plugin (Client.register_plugin)",
    "unregister_scheduler_plugin": "removing a scheduler plugin",
    "dump_cluster_state_to_url": "writing the cluster state to a URL",
}
# Worker ops that broadcast/proxy relay for anyone: pickle-free and read-only.
OPEN_RELAY_OPS = frozenset({IDENTITY_OP, Op.HAS.value, "identity", "versions", "ping"})
# Worker ops relayed only with the token of a hello: they store or import code.
# A bundle's wheels and environment too (``lockstep.bundles.protocol``).
TOKEN_RELAY_OPS = STORING_OPS

# Every scheduler handler of distributed 2026.8.0 (with its default extensions). A handler
# the gate does not know may be a new way to run code: the scheduler refuses to start.
KNOWN_RPC_OPS = frozenset(
    {
        "adaptive_target",
        "add_keys",
        "amm_handler",
        "benchmark_hardware",
        "broadcast",
        "call_stack",
        "check_idle",
        "connection_stream",
        "dump_cluster_state_to_url",
        "dump_state",
        "echo",
        "event_clear",
        "event_is_set",
        "event_set",
        "event_wait",
        "events",
        "feed",
        "gather",
        "get_cluster_state",
        "get_error_cause",
        "get_logs",
        "get_metadata",
        "get_runspec",
        "get_story",
        "get_task_prefix_states",
        "get_task_status",
        "get_task_stream",
        "get_task_stream_index",
        "has_what",
        "heartbeat_worker",
        "identity",
        "log_event",
        "logs",
        "memory_sampler_start",
        "memory_sampler_stop",
        "multi_lock_acquire",
        "multi_lock_release",
        "nbytes",
        "ncores",
        "ncores_running",
        "performance_report",
        "processing",
        "profile",
        "proxy",
        "publish_delete",
        "publish_get",
        "publish_list",
        "publish_put",
        "queue_create",
        "queue_get",
        "queue_put",
        "queue_qsize",
        "rebalance",
        "register-client",
        "register-worker",
        "register_nanny",
        "register_nanny_plugin",
        "register_scheduler_plugin",
        "register_worker_plugin",
        "replicate",
        "restart",
        "restart_workers",
        "retire_workers",
        "retry",
        "run_function",
        "scatter",
        "semaphore_acquire",
        "semaphore_close",
        "semaphore_refresh_leases",
        "semaphore_register",
        "semaphore_release",
        "semaphore_value",
        "set_metadata",
        "set_resources",
        "set_restrictions",
        "shuffle_barrier",
        "shuffle_get",
        "shuffle_get_or_create",
        "shuffle_restrict_task",
        "start_task_metadata",
        "stop_task_metadata",
        "subscribe_worker_status",
        "terminate",
        "unregister",
        "unregister_nanny_plugin",
        "unregister_scheduler_plugin",
        "unregister_worker_plugin",
        "update_data",
        "variable_get",
        "variable_set",
        "versions",
        "who_has",
        "worker_logs",
        "workers_to_close",
    }
)
KNOWN_STREAM_OPS = frozenset(
    {
        "add-keys",
        "cancel-keys",
        "client-desires-keys",
        "client-releases-keys",
        "close-client",
        "heartbeat-client",
        "keep-alive",
        "log-event",
        "long-running",
        "publish_flush_batched_send",
        "queue-future-release",
        "queue_release",
        "release-worker-data",
        "report-key",
        "request-refresh-who-has",
        "reschedule",
        "steal-response",
        "subscribe-topic",
        "task-erred",
        "task-finished",
        "unsubscribe-topic",
        "update-data",
        "update-graph",
        "variable-future-received-confirm",
        "variable_delete",
        "worker-status-change",
    }
)

# The (comm, extra) of the stream connection whose message is being handled: Dask calls
# stream handlers from ``handle_stream`` in the connection's own task, so a context variable
# set around it is what the handler sees.


def check_hook(handler: Any) -> None:
    """Raise ``RuntimeError`` unless ``handler`` is the ``add_worker`` our gate was built for."""
    name = getattr(handler, "__name__", repr(handler))
    if name != "add_worker":
        raise RuntimeError(f"scheduler.handlers[{REGISTER_OP!r}] is {name}, not add_worker")
    params = inspect.signature(handler).parameters
    missing = {"comm", "address", "extra"} - set(params)
    if missing:
        raise RuntimeError(f"Scheduler.add_worker has no parameter(s) {', '.join(sorted(missing))}")
    if next(iter(params)) != "comm":
        raise RuntimeError("Scheduler.add_worker no longer takes the comm first")


def _check_handler(
    table: dict[str, Any], op: str, method: str, params: set[str], where: str = "handlers"
) -> None:
    handler = table.get(op)
    if handler is None:
        raise RuntimeError(f"scheduler.{where} has no {op!r}")
    name = getattr(handler, "__name__", repr(handler))
    if name != method:
        raise RuntimeError(f"scheduler.{where}[{op!r}] is {name}, not {method}")
    missing = params - set(inspect.signature(handler).parameters)
    if missing:
        raise RuntimeError(f"Scheduler.{method} has no parameter(s) {', '.join(sorted(missing))}")


def check_hooks(scheduler: Any) -> None:
    """Raise ``RuntimeError`` unless every Dask handler the gate wraps is as in 2026.8.0."""
    check_hook(scheduler.handlers.get(REGISTER_OP))
    unknown = sorted(set(scheduler.handlers) - KNOWN_RPC_OPS - {IDENTITY_OP, HELLO_OP})
    unknown += sorted(set(scheduler.stream_handlers) - KNOWN_STREAM_OPS)
    if unknown:
        raise RuntimeError(
            f"the scheduler has handler(s) the client gate does not know: {', '.join(unknown)}"
        )
    _check_handler(
        scheduler.stream_handlers, SUBMIT_OP, "update_graph", {"client", "keys"}, "stream_handlers"
    )
    for op, method in REFUSED_OPS.items():
        _check_handler(scheduler.handlers, op, method, set())
    _check_handler(scheduler.handlers, "broadcast", "broadcast", {"msg", "workers", "nanny"})
    _check_handler(scheduler.handlers, "proxy", "proxy", {"msg", "worker"})
    _check_handler(scheduler.handlers, "scatter", "scatter", {"client", "data"})
    if list(inspect.signature(scheduler.handle_stream).parameters)[:2] != ["comm", "extra"]:
        raise RuntimeError("Scheduler.handle_stream no longer takes (comm, extra)")
    source = inspect.getsource(type(scheduler).add_client)
    if 'self.handle_stream(comm=comm, extra={"client": client})' not in source:
        raise RuntimeError(
            "Scheduler.add_client no longer handles a client's stream with "
            "self.handle_stream(comm=comm, extra={'client': client})"
        )
    if not isinstance(getattr(scheduler, "client_comms", None), dict):
        raise RuntimeError("the scheduler has no client_comms dict")
