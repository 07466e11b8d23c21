"""Shipping a bundle's environment as one prebuilt layer, in chunks, through the scheduler.

The runner asks each worker for its environment's state (``Op.ENV_STATUS``: ready,
and the worker's Python cache tag and platform); to the workers whose environment is
not ready it sends the layer of their platform, if its tag is theirs
(``bundles/prebuilt.py``, made once per lock and platform in the runner's cache), in ``CHUNK``
pieces (``Op.ENV_LAYER``), ``WINDOW`` of them in flight at once, each read from the
cache file only when it is sent: the runner, the scheduler and each worker hold at
most a window of pieces. A worker puts them back in order, answers each once it
was fed to the extraction, and extracts while the next ones travel
(``env_receive``); the last piece's answer comes once the worker checked the
digest and put the environment in place. A worker that goes away mid-way fails
its piece (no answer): the transfer ends with that one line; a runner that goes
away sends nothing more, and the worker gives the transfer up after the
runner's timeout. Workers that
run another Python are left to the per-wheel form (``ship.ship_environment``).
"""

from __future__ import annotations

import collections
import logging
import os
import secrets
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from lockstep.bundles.format import Bundle
from lockstep.bundles.lockfile import BundleLock, relock_hint
from lockstep.bundles.prebuilt import env_layer
from lockstep.bundles.protocol import Failure, Op, message, read_failures
from lockstep.core.fetch import fetch_verified
from lockstep.core.store import Cache, default_cache_dir

log = logging.getLogger(__name__)

CHUNK = 4 << 20  # bytes per message: small enough that extraction follows the transfer
WINDOW = 4  # pieces in flight at once (a worker holds at most env_receive.AHEAD early ones)


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
    cache = Cache(default_cache_dir())

    def wheel(w: Any) -> bytes:
        what = f"{bundle.root}: {w.filename}"
        return fetch_verified(cache, w.url, w.sha256, what, relock_hint(bundle.root))

    built: list[str] = []
    sent = 0
    for platform in sorted({str(a.get("platform")) for a in lacking.values()}):
        if lock.on(platform) is None:
            continue  # the worker refuses the lock itself, with its own line
        start = time.monotonic()
        layer = env_layer(lock, wheel, cache, platform=platform)
        made = time.monotonic()
        targets = sorted(
            w
            for w, a in lacking.items()
            if (a.get("tag"), a.get("platform")) == (layer.tag, layer.platform)
        )
        if not targets:
            continue
        answer = send_pieces(ask, targets, cache.blob_path(layer.digest), layer.size,
                             message(Op.ENV_LAYER, digest=bundle.digest, layer=layer.digest,
                                     size=layer.size, transfer=secrets.token_hex(8),
                                     idle=timeout), timeout)  # fmt: skip
        built += [w for w, a in answer.items() if a.get("built")]
        sent += layer.size * len(targets)
        log.info(
            "bundle %s: environment layer %s for %s (%d bytes) sent to %d worker(s) "
            "(layer %.2f s, sent and extracted %.2f s)",
            bundle.digest, layer.digest, platform, layer.size, len(targets),
            made - start, time.monotonic() - made,
        )  # fmt: skip
    return built, sent


def send_pieces(
    ask: Ask, targets: Sequence[str], path: Path, size: int, head: dict[str, Any],
    timeout: float,
) -> dict[str, Any]:  # fmt: skip
    """Send the file at ``path`` (``size`` bytes) to ``targets`` in ``CHUNK`` pieces
    (``head``: the message's other fields), ``WINDOW`` of them in flight, each read
    from the file only when it is sent; the last piece's answers. ``LayerFailed`` with
    the first failures (a worker that refused a piece, or went and did not answer);
    pieces in flight then are let finish, none is sent after."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)

    def send(offset: int) -> dict[str, Any]:
        data = os.pread(fd, CHUNK, offset)
        last = offset + len(data) >= size
        msg = {**head, "offset": offset, "data": data, "last": last}
        return ask(targets, msg, timeout + (600 if last else 0))

    first: list[Failure] = []
    answer: dict[str, Any] = {}
    try:
        with ThreadPoolExecutor(WINDOW, thread_name_prefix="lockstep-layer-send") as pool:
            flight: collections.deque[Future[dict[str, Any]]] = collections.deque()
            offsets = iter(range(0, size, CHUNK))
            while True:
                offset = next(offsets, None) if not first else None
                if offset is not None:
                    flight.append(pool.submit(send, offset))
                if flight and (offset is None or len(flight) >= WINDOW):
                    answer = flight.popleft().result()
                    first = first or read_failures(Op.ENV_LAYER, targets, answer)
                elif offset is None:
                    break
    finally:
        os.close(fd)
    if first:
        raise LayerFailed(first)
    return answer


__all__ = ["CHUNK", "LayerFailed", "ship_layer"]
