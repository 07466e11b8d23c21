"""Shipping a bundle to workers: once each, by digest, pickle-free.

The runner asks each worker whether it holds the digest
(``lockstep_bundle_has``) and sends the files (plain bytes in msgpack, through
the scheduler's ``broadcast``) only to those that do not. A bundle with a lock
then gets its environment (``lockstep.bundles.env``): the runner asks
which wheels each worker lacks (none where the environment is ready), sends
those, one wheel at a time from its verified cache, and has the workers make
the environment. The files sent are the bytes preflight checked
(``Bundle.files``), labelled with their digest; the worker recomputes the
digest and refuses a bundle that differs or is partial. Operations, replies
and exit codes are ``bundles/protocol.py``'s.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lockstep.bundles.format import Bundle
from lockstep.bundles.protocol import Code, Failure, Op, exit_code, message, read_failures
from lockstep.bundles.store import to_wire
from lockstep.core.errors import CheckFailed, ServiceFailed

log = logging.getLogger(__name__)


class ShipFailed(CheckFailed):
    """A worker refused or could not store the bundle (exit 1); one line per worker."""

    def __init__(self, lines: Sequence[str]) -> None:
        self.lines = tuple(lines)
        super().__init__("\n".join(lines))


@dataclass(frozen=True)
class Shipped:
    """Which workers got the bundle now and which had it already; for a bundle with
    dependencies, its environment, the wheels sent (and their bytes) and the workers
    that made the environment now."""

    digest: str
    sent: tuple[str, ...]
    cached: tuple[str, ...]
    env: str | None = None
    wheels_sent: int = 0
    wheel_bytes: int = 0
    env_built: tuple[str, ...] = ()


class EnvFailed(ShipFailed):
    """A worker could not make the bundle's environment; exit 2 when every cause is bad
    input (a bad lock or wheel, a bundle directory it cannot write), else 1."""

    def __init__(self, failures: Sequence[Failure]) -> None:
        super().__init__([f.error for f in failures])
        self.exit_code = exit_code(failures)


def broadcast(
    client: Any, workers: Sequence[str], msg: dict[str, Any], timeout: float
) -> dict[str, Any]:
    """``msg`` to each of ``workers`` through the scheduler; ``{address: answer}``.

    A worker that could not be reached has no answer.
    """
    from lockstep.runtime.cluster import with_token

    try:
        answers = client.sync(
            client.scheduler.broadcast,
            msg=with_token(client, msg),
            workers=list(workers),
            on_error="ignore",
            callback_timeout=timeout,
        )
    except PermissionError as exc:  # the scheduler's client gate (no hello, or it expired)
        raise ShipFailed([str(exc)]) from exc
    except (OSError, TimeoutError) as exc:
        raise ServiceFailed(
            f"scheduler {client.scheduler.address} did not relay {msg['op']} "
            f"({type(exc).__name__}: {exc})"
        ) from exc
    return dict(answers)


def ship_bundle(
    client: Any, bundle: Bundle, workers: Sequence[str], timeout: float = 120.0
) -> Shipped:
    """Make sure every one of ``workers`` holds ``bundle.digest``; ``ShipFailed`` if not.

    A bundle named by a registry reference is pulled by the workers themselves."""
    if bundle.reference is not None:
        return pull_on_workers(client, bundle, workers, timeout)
    start = time.monotonic()
    answers = broadcast(client, workers, message(Op.HAS, digest=bundle.digest), timeout)
    errors = [f"worker {w}: did not answer {Op.HAS}" for w in workers if w not in answers]
    errors += [f"{w}: {a.get('error')}" for w, a in answers.items() if not a.get("ok")]
    cached = tuple(w for w, a in answers.items() if a.get("ok") and a.get("cached"))
    missing = [w for w, a in answers.items() if a.get("ok") and not a.get("cached")]
    if missing and not errors:
        files = to_wire(bundle.files)  # the bytes preflight checked; the worker checks again
        put = broadcast(
            client, missing, message(Op.PUT, digest=bundle.digest, files=files), timeout
        )
        errors += [f.error for f in read_failures(Op.PUT, missing, put)]
    if errors:
        raise ShipFailed(errors)
    log.info(
        "bundle %s: sent to %d worker(s), %d had it (%.2f s)",
        bundle.digest,
        len(missing),
        len(cached),
        time.monotonic() - start,
    )
    shipped = Shipped(bundle.digest, tuple(missing), cached)
    if bundle.lock_data() is not None:
        shipped = ship_environment(client, bundle, list(workers), shipped, timeout)
    return shipped


def pull_on_workers(
    client: Any, bundle: Bundle, workers: Sequence[str], timeout: float = 120.0
) -> Shipped:
    """Have each worker pull ``bundle.reference`` (what it lacks: code, wheels) from the
    registry; the scheduler relays only the reference. Then make its environment."""
    start = time.monotonic()
    msg = message(Op.PULL, reference=bundle.reference)
    answers = broadcast(client, workers, msg, timeout + 600)
    failures = read_failures(Op.PULL, workers, answers)
    failures += [
        Failure(
            f"worker {w}: {bundle.reference} holds bundle {a.get('digest')}, preflight checked "
            f"{bundle.digest}"
        )
        for w, a in answers.items()
        if a.get("ok") and a.get("digest") != bundle.digest
    ]
    if failures:
        raise EnvFailed(failures)
    pulled = tuple(w for w, a in answers.items() if a.get("pulled"))
    cached = tuple(w for w, a in answers.items() if not a.get("pulled"))
    wheels = sum(int(a.get("wheels", 0)) for a in answers.values())
    nbytes = sum(int(a.get("bytes", 0)) for a in answers.values())
    log.info(
        "bundle %s: pulled by %d worker(s) from the registry (%d bytes, %d wheel(s)), "
        "%d had it (%.2f s)",
        bundle.reference,
        len(pulled),
        nbytes,
        wheels,
        len(cached),
        time.monotonic() - start,
    )
    shipped = Shipped(bundle.digest, pulled, cached)
    if bundle.lock_data() is not None:
        shipped = ship_environment(client, bundle, list(workers), shipped, timeout)
        shipped = Shipped(
            shipped.digest, pulled, cached, shipped.env, wheels, nbytes, shipped.env_built
        )
    return shipped


def wheels_lacking(
    client: Any, bundle: Bundle, workers: Sequence[str], timeout: float
) -> tuple[dict[str, list[str]], str | None]:
    """Which wheels each worker lacks for ``bundle``'s environment: ``({worker: [wheel
    digests]}, env key)``; a worker whose environment is ready lacks none.

    A separate step, so that wheels may come from elsewhere (a registry) later.
    """
    answers = broadcast(client, workers, message(Op.ENV_STATUS, digest=bundle.digest), timeout)
    failures = read_failures(Op.ENV_STATUS, workers, answers)
    if failures:
        raise EnvFailed(failures)
    env = next((a.get("env") for a in answers.values() if a.get("env")), None)
    lacking = {w: list(a.get("missing") or []) for w, a in answers.items() if not a.get("ready")}
    return lacking, env


def ship_environment(
    client: Any, bundle: Bundle, workers: list[str], shipped: Shipped, timeout: float
) -> Shipped:
    """Send each worker the wheels it lacks (one wheel at a time, plain bytes, from the
    runner's verified cache) and have it make the bundle's environment."""
    from lockstep.bundles.lockfile import relock_hint
    from lockstep.core.fetch import fetch_verified
    from lockstep.core.store import Cache, default_cache_dir

    lock = bundle.lock()
    if lock is None:
        raise EnvFailed(
            [Failure(f"{bundle.root}: its lock does not read; run preflight", Code.BAD_INPUT)]
        )
    if not lock.wheels:
        return shipped
    start = time.monotonic()
    by_digest = {w.digest: w for w in lock.wheels}
    cache = Cache(default_cache_dir())
    sent = sent_bytes = 0
    built: list[str] = []
    env: str | None = None
    if bundle.prebuilt:  # one layer to the workers that run its Python; wheels to the rest
        from lockstep.bundles.ship_layer import LayerFailed, ship_layer

        def ask(to: Sequence[str], msg: dict[str, Any], seconds: float) -> dict[str, Any]:
            return broadcast(client, to, msg, seconds)

        try:
            built, sent_bytes = ship_layer(ask, bundle, lock, workers, timeout)
        except LayerFailed as exc:
            raise EnvFailed(exc.failures) from None
    for attempt in range(2):  # a wheel found corrupt on a worker is removed there: resend once
        lacking, env = wheels_lacking(client, bundle, workers, timeout)
        if not lacking:
            break
        needed: dict[str, list[str]] = {}
        for worker, digests in lacking.items():
            for digest in digests:
                if digest not in by_digest:
                    raise EnvFailed(
                        [Failure(f"worker {worker} asks for {digest}, not in the lock")]
                    )
                needed.setdefault(digest, []).append(worker)
        if bundle.reference is not None:  # a wheel found corrupt was removed: pull again
            again = broadcast(
                client, sorted({w for t in needed.values() for w in t}),
                message(Op.PULL, reference=bundle.reference), timeout + 600,
            )  # fmt: skip
            bad = [Failure.from_wire(a) for a in again.values() if not a.get("ok")]
            if bad:
                raise EnvFailed(bad)
            needed = {}
        for digest, targets in sorted(needed.items()):
            wheel = by_digest[digest]
            data = fetch_verified(
                cache, wheel.url, wheel.sha256, f"{bundle.root}: {wheel.filename}",
                relock_hint(bundle.root),
            )  # fmt: skip
            put = broadcast(
                client, targets, message(Op.WHEEL_PUT, digest=digest, data=data), timeout
            )
            failures = read_failures(Op.WHEEL_PUT, targets, put)
            if failures:
                raise EnvFailed(failures)
            sent += len(targets)
            sent_bytes += len(data) * len(targets)
        made = broadcast(
            client, list(lacking), message(Op.ENV_MAKE, digest=bundle.digest), timeout + 600
        )
        failures = read_failures(Op.ENV_MAKE, lacking, made)
        retry = [f for f in failures if f.missing]
        failed = [f for f in failures if not f.missing]
        if failed or (retry and attempt):
            raise EnvFailed(failed + retry)
        built += [w for w, a in made.items() if a.get("ok") and a.get("built")]
        if not retry:
            break
    log.info(
        "bundle %s: environment %s: %d wheel(s) sent (%d bytes), made on %d worker(s) (%.2f s)",
        bundle.digest,
        env,
        sent,
        sent_bytes,
        len(built),
        time.monotonic() - start,
    )
    return Shipped(
        shipped.digest, shipped.sent, shipped.cached, env, sent, sent_bytes, tuple(built)
    )


def check_on_worker(
    client: Any, worker: str, digest: str, checks: Sequence[dict[str, Any]], timeout: float
) -> list[dict[str, Any]]:
    """The probe's answers for ``checks``, run by ``worker`` in a fresh process of its image."""
    answers = broadcast(
        client,
        [worker],
        message(Op.CHECK, digest=digest, checks=list(checks), timeout=timeout),
        timeout + 30,
    )
    answer = answers.get(worker)
    if answer is None:
        raise ServiceFailed(f"worker {worker} did not answer {Op.CHECK}")
    if not answer.get("ok"):
        raise ShipFailed([str(answer.get("error"))])
    return list(answer["results"])
