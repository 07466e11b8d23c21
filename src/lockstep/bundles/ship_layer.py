"""Shipping a bundle's environment as one prebuilt layer, in chunks, through the scheduler.

The runner asks each worker for its environment's state (``Op.ENV_STATUS``: ready,
and the worker's Python cache tag and platform); to each worker whose environment is
not ready and whose tag and platform are the layer's, it sends the layer
(``bundles/prebuilt.py``, made once per lock in the runner's cache) in ``CHUNK``
pieces (``Op.ENV_LAYER``), one after another: a worker queues each piece and
answers, and extracts while the next one travels. The last piece's answer comes
once the worker checked the digest and put the environment in place. Workers that
run another Python are left to the per-wheel form (``ship.ship_environment``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from lockstep.bundles.format import Bundle
from lockstep.bundles.lockfile import BundleLock, relock_hint
from lockstep.bundles.prebuilt import env_layer
from lockstep.bundles.protocol import Failure, Op, message, read_failures
from lockstep.core.fetch import fetch_verified
from lockstep.core.store import Cache, default_cache_dir

log = logging.getLogger(__name__)

CHUNK = 4 << 20  # bytes per message: small enough that extraction follows the transfer


class LayerFailed(RuntimeError):
    """Workers refused the layer, or did not answer (``ship`` makes it ``EnvFailed``)."""

    def __init__(self, failures: Sequence[Failure]) -> None:
        self.failures = tuple(failures)
        super().__init__("; ".join(f.error for f in failures))


Ask = Callable[[Sequence[str], dict[str, Any], float], dict[str, Any]]


def ship_layer(
    ask: Ask, bundle: Bundle, lock: BundleLock, workers: Sequence[str], timeout: float
) -> tuple[list[str], int]:
    """Send the prebuilt environment layer of ``bundle`` to those of ``workers`` that lack
    the environment and run its Python (``ask``: a message to workers through the
    scheduler, their answers); ``(workers that made it, bytes sent)``. ``LayerFailed`` if
    a worker refused it."""
    answers = ask(workers, message(Op.ENV_STATUS, digest=bundle.digest), timeout)
    failures = read_failures(Op.ENV_STATUS, workers, answers)
    if failures:
        raise LayerFailed(failures)
    lacking = {w: a for w, a in answers.items() if not a.get("ready")}
    if not lacking:
        return [], 0
    start = time.monotonic()
    cache = Cache(default_cache_dir())

    def wheel(w: Any) -> bytes:
        what = f"{bundle.root}: {w.filename}"
        return fetch_verified(cache, w.url, w.sha256, what, relock_hint(bundle.root))

    layer = env_layer(lock, wheel, cache)
    made = time.monotonic()
    targets = sorted(
        w
        for w, a in lacking.items()
        if (a.get("tag"), a.get("platform")) == (layer.tag, layer.platform)
    )
    if not targets:
        return [], 0
    blob = cache.blob_path(layer.digest).read_bytes()
    answer: dict[str, Any] = {}
    for offset in range(0, len(blob), CHUNK):
        last = offset + CHUNK >= len(blob)
        msg = message(Op.ENV_LAYER, digest=bundle.digest, layer=layer.digest, size=len(blob),
                      offset=offset, data=blob[offset : offset + CHUNK], last=last)  # fmt: skip
        answer = ask(targets, msg, timeout + (600 if last else 0))
        failures = read_failures(Op.ENV_LAYER, targets, answer)
        if failures:
            raise LayerFailed(failures)
    built = [w for w, a in answer.items() if a.get("built")]
    log.info(
        "bundle %s: environment layer %s (%d bytes) sent to %d worker(s), made on %d "
        "(layer %.2f s, sent and extracted %.2f s)",
        bundle.digest, layer.digest, len(blob), len(targets), len(built),
        made - start, time.monotonic() - made,
    )  # fmt: skip
    return built, len(blob) * len(targets)


__all__ = ["CHUNK", "LayerFailed", "ship_layer"]
