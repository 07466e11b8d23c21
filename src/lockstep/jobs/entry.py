"""What a job's tasks run on a worker: the model or the target, results as JSON text.

Both run in the executor's process with the job's bundle first on
``sys.path`` (``run_task(bundle=…)``). They answer JSON text rather than the
objects the bundle made, so nothing of the bundle's code is needed (or
unpickled) on the runner, and a value that has no JSON form fails here, on
the worker, naming the entry point. A model may also return named tables:
values with the Arrow PyCapsule stream interface (``__arrow_c_stream__``: a
pyarrow ``Table``, a polars ``DataFrame``…) travel as Arrow IPC stream bytes,
made with pyarrow, which the bundle must then lock. Kept light: executor
children import it, and pyarrow only when a model returns a table.
"""

from __future__ import annotations

import json
import time
import zlib
from collections.abc import Mapping
from typing import Any

from lockstep.core import entrypoints


def _json(value: Any, what: str) -> str:
    try:
        return json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"{what} returned a value with no JSON form ({exc}); return plain "
            "numbers, strings, lists and dicts"
        ) from None


def simulate(model: str, params: Mapping[str, Any], seed: int) -> dict[str, Any]:
    """``model(params, seed)``: ``{"output": JSON text of its values, "tables": {name: Arrow
    IPC bytes}, "seconds": the model's time}``; ``TypeError`` unless it returns a mapping."""
    function = entrypoints.resolve(model)
    started = time.perf_counter()
    out = function(dict(params), seed)
    seconds = time.perf_counter() - started
    if not isinstance(out, Mapping):
        raise TypeError(f"model {model} returned a {type(out).__name__}, not a mapping")
    values = {k: v for k, v in out.items() if not hasattr(v, "__arrow_c_stream__")}
    tables = {str(k): _ipc(v, f"model {model}: {k}") for k, v in out.items() if k not in values}
    return {
        "output": _json(values, f"model {model}"),
        "tables": tables,
        "seconds": round(seconds, 6),
    }


def _ipc(table: Any, what: str) -> bytes:
    """An Arrow table (anything with ``__arrow_c_stream__``) as Arrow IPC stream bytes."""
    try:
        import pyarrow as pa
    except ImportError:
        raise TypeError(
            f"{what} is an Arrow table, which lockstep sends with pyarrow; add pyarrow to "
            "the bundle's requirements (`lockstep bundle lock`)"
        ) from None
    data = pa.table(table)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, data.schema) as writer:
        writer.write_table(data)
    return bytes(sink.getvalue().to_pybytes())


def aggregate(target: str, results_json: str | bytes) -> str:
    """``target(results)`` as JSON text, ``results`` being the list of simulation records:
    JSON text, or (as the runner sends it) zlib-compressed JSON text."""
    text = zlib.decompress(results_json) if isinstance(results_json, bytes) else results_json
    return _json(entrypoints.resolve(target)(json.loads(text)), f"target {target}")
