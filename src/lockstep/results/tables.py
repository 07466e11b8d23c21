"""The store as tables: one Parquet file with a row per simulation, and one per named table.

``export(store, out)`` writes ``out/simulations.parquet``: a row per
simulation (``key``, ``status``, ``build_id``, ``bundle``, ``executor``,
``model``, ``params`` and ``output`` as structs of their JSON values,
``seed``, ``worker``, ``pid``, ``environment``, ``seconds``, ``cause``,
``tables``: the names of its tables), and for each table name a model
returned, ``out/tables/<name>.parquet``: every simulation's table, its rows
prefixed by the simulation's ``key`` and ``seed``. A simulation stored twice
(two runs computed it) is one row, its first ``ok`` record; a failed one is a
row only if no run computed it since. Rows go out in batches, so memory is
bounded by a batch and the set of keys seen. pyarrow is imported here only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lockstep.core.atomic import open_atomic
from lockstep.core.errors import BadInput
from lockstep.results.store import Corrupt, ResultStore

BATCH = 10_000  # rows per Parquet row group
COLUMNS = (
    "key",
    "status",
    "build_id",
    "bundle",
    "executor",
    "model",
    "params",
    "seed",
    "output",
    "worker",
    "pid",
    "environment",
    "seconds",
    "cause",
)


@dataclass
class Summary:
    """What a store holds, as ``export`` and ``lockstep results`` report it."""

    ok: int = 0
    failed: list[dict[str, Any]] = field(default_factory=list)
    corrupt: list[Corrupt] = field(default_factory=list)
    groups: dict[tuple[str, str, str, str], int] = field(default_factory=dict)
    tables: dict[str, int] = field(default_factory=dict)  # name -> simulations with it


def latest(store: ResultStore, summary: Summary) -> Iterator[dict[str, Any]]:
    """Each simulation's record once: ok ones as found, then the failed ones no run has
    computed since. Counts into ``summary``."""
    seen: set[str] = set()
    failed: dict[str, dict[str, Any]] = {}
    for found in store.scan():
        if isinstance(found, Corrupt):
            summary.corrupt.append(found)
            continue
        record = found.record
        key = record["key"]
        if record.get("status") == "ok":
            if key in seen:
                continue
            seen.add(key)
            failed.pop(key, None)
            summary.ok += 1
            group = (record["build_id"], record["bundle"], record["executor"], record["model"])
            summary.groups[group] = summary.groups.get(group, 0) + 1
            for name in record.get("tables") or {}:
                summary.tables[name] = summary.tables.get(name, 0) + 1
            yield record
        elif key not in seen:
            failed[key] = record
    summary.failed = list(failed.values())
    yield from summary.failed


def row(record: Mapping[str, Any]) -> dict[str, Any]:
    """A record as a row of ``simulations.parquet``."""
    values = {name: record.get(name) for name in COLUMNS}
    values["tables"] = sorted(record.get("tables") or {})
    return values


def export(store: ResultStore, out: Path) -> Summary:
    """Write the store's tables under ``out`` (see the module); what it holds. Each file
    is written under a temporary name and renamed when complete."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    summary = Summary()
    out.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as files:
        tables = _TableFiles(files, out)
        sink = files.enter_context(open_atomic(out / "simulations.parquet"))
        writer = None
        batch: list[dict[str, Any]] = []
        for record in latest(store, summary):
            batch.append(row(record))
            for name, digest in sorted((record.get("tables") or {}).items()):
                tables.add(name, pa.ipc.open_stream(store.read_blob(digest)).read_all(), record)
            if len(batch) >= BATCH:
                writer = _write(pa, pq, writer, sink, batch)
                batch = []
        if batch or writer is None:
            writer = _write(pa, pq, writer, sink, batch)
        writer.close()
    return summary


def _write(pa: Any, pq: Any, writer: Any, sink: Any, batch: list[dict[str, Any]]) -> Any:
    if writer is None:
        table = pa.Table.from_pylist(batch) if batch else _empty(pa)
        writer = pq.ParquetWriter(sink, table.schema)
    else:
        try:
            table = pa.Table.from_pylist(batch, schema=writer.schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError, KeyError) as exc:
            raise BadInput(
                f"the stored outputs or parameters do not share one shape ({exc}); export "
                "one job's store at a time, or give its simulations the same keys and types"
            ) from None
    writer.write_table(table, row_group_size=BATCH)
    return writer


def _empty(pa: Any) -> Any:
    return pa.table({name: pa.array([], pa.null()) for name in (*COLUMNS, "tables")})


class _TableFiles:
    """``tables/<name>.parquet`` writers, opened as names appear, closed with ``files``."""

    def __init__(self, files: contextlib.ExitStack, out: Path) -> None:
        self.files = files
        self.out = out
        self.writers: dict[str, Any] = {}

    def add(self, name: str, data: Any, record: Mapping[str, Any]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        n = data.num_rows
        data = data.add_column(0, "seed", pa.array([record["seed"]] * n, pa.int64()))
        data = data.add_column(0, "key", pa.array([record["key"]] * n, pa.string()))
        if name not in self.writers:
            if not name or "/" in name or name.startswith("."):
                raise BadInput(f"table name {name!r} cannot be a file name; name tables plainly")
            sink = self.files.enter_context(open_atomic(self.out / "tables" / f"{name}.parquet"))
            writer = pq.ParquetWriter(sink, data.schema)
            self.files.callback(writer.close)  # before its file is renamed
            self.writers[name] = writer
        writer = self.writers[name]
        try:
            writer.write_table(data.cast(writer.schema))
        except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError) as exc:
            raise BadInput(
                f"table {name!r} of simulation {record['key']} has other columns than the "
                f"first one stored ({exc}); give every simulation's {name!r} the same columns"
            ) from None
