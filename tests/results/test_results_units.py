"""The result store without a cluster: keys (fixed vectors), lines, segments, corruption,
the directory's layout, the Parquet export, and the bounded task window."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lockstep.core.errors import BadInput
from lockstep.jobs.stream import Call, TaskWindow
from lockstep.results.keys import Inputs, simulation_key
from lockstep.results.store import (
    Corrupt,
    CorruptEntry,
    ResultStore,
    Stored,
    decode_line,
    encode_line,
)
from lockstep.results.tables import export

A, B = "sha256:" + "a" * 64, "sha256:" + "b" * 64
FIELDS = {
    "build_id": A,
    "bundle": B,
    "executor": "cold",
    "model": "m:f",
    "params": {"beta": 0.3, "name": "x"},
    "seed": 7,
}
INPUTS = Inputs(A, B, "cold", "m:f")


def record(seed: int, **extra: Any) -> dict[str, Any]:
    params = {"beta": 0.3, "name": "x"}
    return {
        "key": INPUTS.key(params, seed),
        "status": "ok",
        "build_id": A,
        "bundle": B,
        "executor": "cold",
        "model": "m:f",
        "params": params,
        "seed": seed,
        "output": {"x": seed * 2, "curve": [1, 2, seed]},
        "tables": {},
        "cause": None,
        "worker": "tcp://127.0.0.1:1",
        "pid": 100 + seed,
        "environment": None,
        "seconds": 0.001,
        **extra,
    }


def test_the_key_is_the_sha256_of_the_six_fields_canonical_json() -> None:
    # echo -n '{"build_id":"sha256:aaa…","bundle":"sha256:bbb…","executor":"cold",
    #   "model":"m:f","params":{"beta":0.3,"name":"x"},"seed":7}' | sha256sum
    expected = "1a903202454834d37df8208109d3e37f4e770a15257b91a3c1eea69dc89de2b8"
    assert simulation_key(FIELDS) == expected
    assert simulation_key({**FIELDS, "worker": "elsewhere", "output": 1}) == expected
    assert INPUTS.key(FIELDS["params"], 7) == expected
    for name, other in [
        ("build_id", "sha256:" + "c" * 64),
        ("bundle", A),
        ("executor", "warm"),
        ("model", "m:g"),
        ("params", {"beta": 0.3, "name": "y"}),
        ("seed", 8),
    ]:
        assert simulation_key({**FIELDS, name: other}) != expected, name


def test_the_aggregate_key_is_the_sha256_of_its_five_fields_canonical_json(
    tmp_path: Path,
) -> None:
    # echo -n '{"build_id":"sha256:aaa…","bundle":"sha256:bbb…","executor":"cold",
    #   "results":"sha256:ccc…","target":"m:total"}' | sha256sum
    results = "sha256:" + "c" * 64
    expected = "e6590884b0100919c7446d69fb0df995b41d18c1649f41235cd3f29793b9027d"
    assert INPUTS.aggregate_key("m:total", results) == expected
    assert INPUTS.aggregate_key("m:other", results) != expected
    assert INPUTS.aggregate_key("m:total", "sha256:" + "d" * 64) != expected
    # stored and read back; an edited byte or another key is not used
    store = ResultStore.open(tmp_path / "store")
    answer = {"value": {"n": 3}, "worker": "w", "executor": "cold", "pid": 1, "environment": None}
    store.put_aggregate(expected, answer)
    assert store.aggregate(expected) == {**answer, "key": expected}
    assert store.aggregate("0" * 64) is None
    path = store.root / "aggregates" / f"{expected}.json"
    path.write_bytes(path.read_bytes().replace(b'"n":3', b'"n":4'))
    assert store.aggregate(expected) is None


def test_a_line_carries_its_digest_and_any_change_is_caught() -> None:
    line = encode_line(record(1))
    assert line.endswith(b"\n") and decode_line(line) == record(1)
    with pytest.raises(CorruptEntry, match="sha256 does not match"):
        decode_line(line.replace(b'"x":2', b'"x":3'))
    with pytest.raises(CorruptEntry, match="sha256 does not match"):
        decode_line(line[:-20] + b"\n")
    with pytest.raises(CorruptEntry, match="key is not the hash of its inputs"):
        decode_line(encode_line({**record(1), "seed": 2}))
    with pytest.raises(CorruptEntry, match="lacks a key field"):
        decode_line(encode_line({"key": "x"}))


def test_segments_are_read_back_and_a_torn_or_edited_one_reported(tmp_path: Path) -> None:
    store = ResultStore.open(tmp_path / "store")
    writer = store.writer()
    writer.write([record(1), record(2)])
    writer.write([record(3)])
    writer.write([])  # nothing: no segment
    names = store.segment_names()
    assert len(names) == 2 and all(n.startswith(writer.run) for n in names)
    found = list(store.scan())
    assert [f.record["seed"] for f in found if isinstance(f, Stored)] == [1, 2, 3]
    assert list(store.scan(run="0-0")) == []
    # a torn write (the runner killed mid-line) and an edited line
    first = store.segments_dir / names[0]
    data = first.read_bytes()
    first.write_bytes(data.replace(b'"x":4', b'"x":5') + encode_line(record(9))[:30])
    found = list(store.scan())
    assert [f.record["seed"] for f in found if isinstance(f, Stored)] == [1, 3]
    assert [str(f) for f in found if isinstance(f, Corrupt)] == [
        f"{names[0]} line 3: cut short",
        f"{names[0]} line 2: its sha256 does not match its content",
    ]


def test_a_table_blob_is_checked_by_its_digest(tmp_path: Path) -> None:
    store = ResultStore.open(tmp_path / "store")
    digest = store.put_blob(b"arrow bytes")
    assert store.read_blob(digest) == b"arrow bytes"
    store.writer().write([record(1, tables={"curve": digest})])
    (store.blobs_dir / digest.removeprefix("sha256:")).write_bytes(b"arrow bytez")
    [bad] = list(store.scan())
    assert isinstance(bad, Corrupt) and "does not match its digest" in bad.why


def test_the_store_refuses_a_directory_that_is_not_one(tmp_path: Path) -> None:
    busy = tmp_path / "home"
    busy.mkdir()
    (busy / "thesis.tex").write_text("")
    with pytest.raises(BadInput, match=r"not a result store .* and not an empty directory"):
        ResultStore.open(busy)
    other = tmp_path / "other"
    other.mkdir()
    (other / "STORE.json").write_text('{"schema": "lockstep.store/v0"}')
    with pytest.raises(BadInput, match=r"not a lockstep\.store/v1 result store"):
        ResultStore.open(other)
    with pytest.raises(BadInput, match="no result store there"):
        ResultStore.open(tmp_path / "missing", create=False)
    (tmp_path / "a-file").write_text("")
    with pytest.raises(BadInput, match=r"a-file/store: cannot use it as the result store \("):
        ResultStore.open(tmp_path / "a-file" / "store")  # as on a read-only mount: OSError
    made = ResultStore.open(tmp_path / "new")
    assert json.loads((made.root / "STORE.json").read_text()) == {"schema": "lockstep.store/v1"}
    assert ResultStore.open(made.root).segment_names() == []  # opens again


def test_the_export_has_a_row_per_simulation_ok_winning_over_failed(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    store = ResultStore.open(tmp_path / "store")
    failed = record(2, status="failed", output=None, cause="simulation failed: ValueError: x")
    store.writer().write([record(1), failed, record(3, status="failed", output=None, cause="c")])
    store.writer().write([record(2), record(1)])  # 2 computed later; 1 twice
    summary = export(store, tmp_path / "out")
    rows = pq.read_table(tmp_path / "out" / "simulations.parquet").to_pylist()
    assert [(r["seed"], r["status"]) for r in rows] == [(1, "ok"), (2, "ok"), (3, "failed")]
    assert rows[0]["output"] == {"x": 2, "curve": [1, 2, 1]} and rows[2]["output"] is None
    assert rows[0]["params"] == {"beta": 0.3, "name": "x"} and rows[2]["cause"] == "c"
    assert (summary.ok, [r["seed"] for r in summary.failed]) == (2, [3])
    assert list((tmp_path / "out").iterdir()) == [tmp_path / "out" / "simulations.parquet"]


class FakeFuture:
    def __init__(self, key: str) -> None:
        self.key = key
        self.status = "pending"
        self.callbacks: list[Any] = []

    def add_done_callback(self, fn: Any) -> None:
        self.callbacks.append(fn)

    def finish(self) -> None:
        self.status = "finished"
        for fn in self.callbacks:
            fn(self)

    def cancel(self) -> None:
        self.status = "cancelled"


def test_the_window_never_has_more_than_its_size_in_flight() -> None:
    sent: list[FakeFuture] = []
    batches: list[int] = []

    def submit(calls: Any, keys: Any) -> list[FakeFuture]:
        batches.append(len(calls))
        futures = [FakeFuture(k) for k in keys]
        sent.extend(futures)
        return futures

    window = TaskWindow(submit, lambda fs, _seconds: [{"value": f.key} for f in fs], size=700)
    calls = iter(Call(i, f"call {i}", "m:f", (i,)) for i in range(2000))
    assert window.fill(calls) == 700 and len(window) == 700 and batches == [500, 200]
    assert window.done(0.01) == []
    for future in sent[:450]:
        future.finish()
    done = window.done(0.01)
    assert [o.call.tag for o in done] == list(range(450)) and len(window) == 250
    assert window.fill(calls) == 450 and len(window) == 700
    total = 450
    while len(window):
        for future in [f for f in sent if f.status == "pending"]:
            future.finish()
        total += len(window.done(0.01))
        window.fill(calls)
        assert len(window) <= 700
    assert total == 2000 and max(batches) == 500


def test_lockstep_results_without_pyarrow_says_what_to_do(tmp_path: Path) -> None:
    import subprocess
    import sys

    store = ResultStore.open(tmp_path / "store")
    store.writer().write([record(1)])
    code = (
        "import sys; sys.modules['pyarrow'] = None; from lockstep.cli import main; "
        f"sys.exit(main(['results', {str(store.root)!r}]))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(
        "lockstep: error: lockstep results writes Parquet with pyarrow, which this python lacks"
    )
    assert not (store.root / "parquet").exists()


def test_lockstep_results_prints_a_summary_and_writes_parquet(tmp_path: Path) -> None:
    import subprocess
    import sys

    store = ResultStore.open(tmp_path / "store")
    store.writer().write([record(1), record(2, status="failed", output=None, cause="it broke")])
    proc = subprocess.run(
        [sys.executable, "-m", "lockstep", "results", str(store.root)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        f"store {store.root}: 2 simulation(s), 1 ok, 1 failed; 1 segment(s), 0 corrupt entr(y/ies)",
        f"  1 ok: build {A} bundle {B} executor cold m:f",
        "  failed: it broke (run it again to retry)",
        f"wrote {store.root / 'parquet' / 'simulations.parquet'} (2 row(s))",
    ]
    missing = subprocess.run(
        [sys.executable, "-m", "lockstep", "results", str(tmp_path / "nothing")],
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 2 and "no result store there" in missing.stderr


def test_answers_not_read_in_time_stay_in_flight_and_a_lost_one_is_followed() -> None:
    """A batch whose answers are not read within the bound is read again with twice the
    time; an answer lost with its worker (Dask makes its future pending again) stays in
    flight for the runner to move, and is answered when it finishes anew (issue 26)."""
    sent: list[FakeFuture] = []
    slow = [True]
    bounds: list[float] = []

    def submit(calls: Any, keys: Any) -> list[FakeFuture]:
        sent.extend(FakeFuture(k) for k in keys)
        return sent[-len(keys) :]

    def gather(futures: list[Any], seconds: float) -> list[Any]:
        bounds.append(seconds)
        if slow[0]:
            raise TimeoutError
        return [{"value": f.key} for f in futures]

    window = TaskWindow(submit, gather)
    window.fill(iter(Call(i, f"call {i}", "m:f", (i,)) for i in range(3)))
    for future in sent:
        future.finish()
    assert window.done(0.01) == [] and len(window) == 3  # not read: nothing lost
    sent[2].status = "lost"  # its worker died before the answer was read
    slow[0] = False
    done = window.done(0.01)
    assert [o.call.tag for o in done] == [0, 1] and len(window) == 1
    assert bounds == [1.0, 2.0] and window.read_bound == 1.0
    sent[2].finish()  # run again (the runner moved it) and answered
    assert [o.call.tag for o in window.done(0.01)] == [2] and len(window) == 0


def test_a_task_cancelled_by_the_cluster_is_the_clusters_failure() -> None:
    from lockstep.jobs.stream import cluster_failure
    from lockstep.runtime.executors import TaskError

    sent: list[FakeFuture] = []

    def submit(calls: Any, keys: Any) -> list[FakeFuture]:
        sent.extend(FakeFuture(k) for k in keys)
        return sent[-len(keys) :]

    window = TaskWindow(submit, lambda fs, _seconds: [])
    window.fill(iter([Call(0, "call 0", "m:f", ())]))
    sent[0].status = "cancelled"  # the scheduler went: Dask cancels every future
    for fn in sent[0].callbacks:
        fn(sent[0])
    [outcome] = window.done(0.01)
    assert outcome.error is not None and cluster_failure(outcome.error)
    assert not cluster_failure(TaskError("OSError: boom", executor="cold", pid=1))
