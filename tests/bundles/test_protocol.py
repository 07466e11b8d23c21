"""The bundle protocol both ends use: every operation has a worker handler and a relay
rule at the scheduler, and failures read back as the exit codes they mean."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lockstep.bundles import handlers
from lockstep.bundles.env import EnvStore
from lockstep.bundles.protocol import Code, Failure, Op, exit_code, read_failures
from lockstep.bundles.ship import EnvFailed
from lockstep.bundles.store import BundleStore
from lockstep.runtime.dask_handlers import OPEN_RELAY_OPS, TOKEN_RELAY_OPS


class _Worker:
    """What ``handlers.install`` touches of a Dask worker: its address and handler table."""

    address = "tcp://127.0.0.1:1"

    def __init__(self) -> None:
        self.handlers: dict[str, Any] = {}


def test_every_operation_has_a_worker_handler_and_a_relay_rule(tmp_path: Path) -> None:
    worker = _Worker()
    envs = EnvStore(tmp_path / "b", "sha256:" + "1" * 64, "sha256:" + "2" * 64)
    handlers.install(worker, BundleStore(tmp_path / "b"), envs)
    assert set(worker.handlers) == {op.value for op in Op}
    assert {op.value for op in Op} <= OPEN_RELAY_OPS | TOKEN_RELAY_OPS
    assert Op.HAS.value in OPEN_RELAY_OPS and Op.HAS.value not in TOKEN_RELAY_OPS


def test_failures_read_back_with_their_exit_code() -> None:
    answers = {
        "w1": Failure("w1: bad lock", Code.BAD_INPUT).to_wire(),
        "w2": {"ok": True},
        "w3": Failure("w3: lacks", missing=("sha256:" + "a" * 64,)).to_wire(),
    }
    failures = read_failures(Op.ENV_MAKE, ["w0", "w1", "w2", "w3"], answers)
    assert [f.error for f in failures] == [
        "worker w0: did not answer lockstep_env_make",
        "w1: bad lock",
        "w3: lacks",
    ]
    assert failures[2].missing == ("sha256:" + "a" * 64,)
    assert exit_code(failures) == 1
    assert exit_code(failures[1:2]) == 2
    assert EnvFailed(failures[1:2]).exit_code == 2
    assert EnvFailed(failures).lines == tuple(f.error for f in failures)
    # An answer from another version without a valid code is a failed check, not a crash.
    assert Failure.from_wire({"ok": False, "error": "x", "code": "?"}).code is Code.CHECK_FAILED
