"""Issue #26 item 5: a worker whose certificate or CA does not match the cluster's says which
side refused which certificate and stops (exit 3), instead of retrying silently.

Real ``lockstep scheduler`` over mutual TLS (the certificates of ``test_tls``); the worker
is given no ``--death-timeout``: it must not retry for ever.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.procs import start_worker
from tests.runtime.test_tls import Certs, Cluster, certs, cluster

__all__ = ["certs", "cluster"]  # the module's fixtures, shared with test_tls


@pytest.mark.parametrize(
    "case, says",
    [
        ("stranger CA", "this worker refused the scheduler's certificate"),
        ("stranger cert", "the scheduler refused this worker's certificate"),
    ],
)
def test_a_worker_with_the_wrong_certificates_says_who_refused_what(
    cluster: Cluster, certs: Certs, tmp_path: Path, case: str, says: str
) -> None:
    env = certs.env(other=True)
    if case == "stranger cert":  # our CA is the cluster's; our certificate is not
        env["LOCKSTEP_TLS_CA_FILE"] = str(certs.ca)
    worker = start_worker(tmp_path, cluster.address, cluster.a_path, "direct", "w-wrong", env=env)
    try:
        code = worker.wait(90)
    finally:
        worker.stop()
    assert code == 3, worker.text()[-3000:]
    (line,) = [x for x in worker.text().splitlines() if x.startswith("lockstep: error:")]
    assert says in line and cluster.address in line, line
    assert worker.text().count("Waiting to connect") < 3
