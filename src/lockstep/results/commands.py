"""``lockstep results STORE``: what a result store holds, and its Parquet export.

Prints a summary (simulations ok and failed, by build, bundle, executor and
model; corrupt entries; named tables) and writes the tables
(``lockstep.results.tables``) to ``--parquet DIR`` (default ``STORE/parquet``).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

SHOWN = 5  # failures and corrupt entries named


def add_commands(sub: Any) -> None:
    """Add ``results`` to the CLI's subparsers."""
    results = sub.add_parser(
        "results",
        help="summarise a result store (`lockstep run --store`) and export it as Parquet: "
        "a row per simulation, and a file per named table",
    )
    results.add_argument("store", type=Path, metavar="STORE", help="the result store directory")
    results.add_argument(
        "--parquet",
        type=Path,
        metavar="DIR",
        help="where to write simulations.parquet and tables/NAME.parquet (default STORE/parquet)",
    )
    results.set_defaults(func=run_results)


def run_results(args: argparse.Namespace) -> int:
    from lockstep.core.errors import BadInput
    from lockstep.results.store import ResultStore
    from lockstep.results.tables import export

    store = ResultStore.open(args.store, create=False)
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise BadInput(
            "lockstep results writes Parquet with pyarrow, which this python lacks (the "
            "runner image carries it, the worker image does not); run it in the runner "
            "image or where pyarrow is installed (`pip install pyarrow==26.0.1`)"
        ) from None
    out = args.parquet if args.parquet is not None else args.store / "parquet"
    summary = export(store, out)
    total = summary.ok + len(summary.failed)
    lines = [
        f"store {args.store}: {total} simulation(s), {summary.ok} ok, {len(summary.failed)} "
        f"failed; {len(store.segment_names())} segment(s), {len(summary.corrupt)} corrupt "
        "entr(y/ies)"
    ]
    for (build, bundle, executor, model), count in sorted(summary.groups.items()):
        lines.append(f"  {count} ok: build {build} bundle {bundle} executor {executor} {model}")
    for record in summary.failed[:SHOWN]:
        lines.append(f"  failed: {record.get('cause')} (run it again to retry)")
    if len(summary.failed) > SHOWN:
        lines.append(f"  and {len(summary.failed) - SHOWN} more failed")
    for corrupt in summary.corrupt[:SHOWN]:
        lines.append(f"  corrupt, not used: {corrupt}")
    tables = ", ".join(f"{name} ({n})" for name, n in sorted(summary.tables.items()))
    lines.append(
        f"wrote {out / 'simulations.parquet'} ({total} row(s))"
        + (f"; tables in {out / 'tables'}: {tables}" if tables else "")
    )
    print("\n".join(lines))
    return 0
