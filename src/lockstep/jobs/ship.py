"""Shipping a bundle to workers: once each, by digest, pickle-free.

The runner asks each worker whether it holds the digest
(``lockstep_bundle_has``) and sends the files (plain bytes in msgpack, through
the scheduler's ``broadcast``) only to those that do not. The files are read
from disk when they are sent and labelled with the digest that preflight
checked; the worker recomputes the digest and refuses the bundle if it
differs, so a bundle changed after preflight never runs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lockstep.errors import CheckFailed, ServiceFailed
from lockstep.jobs.bundle import Bundle
from lockstep.runtime.bundles import CHECK_OP, HAS_OP, PUT_OP, read_tree, to_wire

log = logging.getLogger(__name__)


class ShipFailed(CheckFailed):
    """A worker refused or could not store the bundle (exit 1); one line per worker."""

    def __init__(self, lines: Sequence[str]) -> None:
        self.lines = tuple(lines)
        super().__init__("\n".join(lines))


@dataclass(frozen=True)
class Shipped:
    """Which workers got the bundle now and which had it already."""

    digest: str
    sent: tuple[str, ...]
    cached: tuple[str, ...]


def broadcast(
    client: Any, workers: Sequence[str], msg: dict[str, Any], timeout: float
) -> dict[str, Any]:
    """``msg`` to each of ``workers`` through the scheduler; ``{address: answer}``.

    A worker that could not be reached has no answer.
    """
    try:
        answers = client.sync(
            client.scheduler.broadcast,
            msg=msg,
            workers=list(workers),
            on_error="ignore",
            callback_timeout=timeout,
        )
    except (OSError, TimeoutError) as exc:
        raise ServiceFailed(
            f"scheduler {client.scheduler.address} did not relay {msg['op']} "
            f"({type(exc).__name__}: {exc})"
        ) from exc
    return dict(answers)


def ship_bundle(
    client: Any, bundle: Bundle, workers: Sequence[str], timeout: float = 120.0
) -> Shipped:
    """Make sure every one of ``workers`` holds ``bundle.digest``; ``ShipFailed`` if not."""
    start = time.monotonic()
    answers = broadcast(client, workers, {"op": HAS_OP, "digest": bundle.digest}, timeout)
    errors = [f"worker {w}: did not answer {HAS_OP}" for w in workers if w not in answers]
    errors += [f"{w}: {a.get('error')}" for w, a in answers.items() if not a.get("ok")]
    cached = tuple(w for w, a in answers.items() if a.get("ok") and a.get("cached"))
    missing = [w for w, a in answers.items() if a.get("ok") and not a.get("cached")]
    if missing and not errors:
        files, _odd = read_tree(bundle.root)  # as it is now: the worker checks the digest
        put = broadcast(
            client,
            missing,
            {"op": PUT_OP, "digest": bundle.digest, "files": to_wire(files)},
            timeout,
        )
        errors += [f"worker {w}: did not answer {PUT_OP}" for w in missing if w not in put]
        errors += [str(a.get("error")) for a in put.values() if not a.get("ok")]
    if errors:
        raise ShipFailed(errors)
    log.info(
        "bundle %s: sent to %d worker(s), %d had it (%.2f s)",
        bundle.digest,
        len(missing),
        len(cached),
        time.monotonic() - start,
    )
    return Shipped(bundle.digest, tuple(missing), cached)


def check_on_worker(
    client: Any, worker: str, digest: str, checks: Sequence[dict[str, Any]], timeout: float
) -> list[dict[str, Any]]:
    """The probe's answers for ``checks``, run by ``worker`` in a fresh process of its image."""
    answers = broadcast(
        client,
        [worker],
        {"op": CHECK_OP, "digest": digest, "checks": list(checks), "timeout": timeout},
        timeout + 30,
    )
    answer = answers.get(worker)
    if answer is None:
        raise ServiceFailed(f"worker {worker} did not answer {CHECK_OP}")
    if not answer.get("ok"):
        raise ShipFailed([str(answer.get("error"))])
    return list(answer["results"])
