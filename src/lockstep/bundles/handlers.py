"""The worker's side of the bundle protocol: its Dask handlers, pickle-free.

``install(worker, bundles, envs)`` registers one handler per ``protocol.Op``;
each runs its work in a thread and answers ``protocol.ok(...)`` or a
``protocol.Failure`` (error, exit code, missing wheels). The work itself is
``store`` (the code), ``env`` (the environment) and ``pull`` (a registry).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

from lockstep.bundles.artifact import ArtifactRefused
from lockstep.bundles.env import EnvRefused, EnvStore, WheelRefused, WheelsMissing
from lockstep.bundles.env_layer import LayerRefused, LayerSink, host_platform, host_tag
from lockstep.bundles.env_receive import receiver
from lockstep.bundles.probe import DEFAULT_TIMEOUT, run_probe
from lockstep.bundles.protocol import Code, Failure, Op, ok
from lockstep.bundles.pull import Puller
from lockstep.bundles.store import BundleMissing, BundleRefused, BundleStore, from_wire
from lockstep.core.digests import hex_of
from lockstep.core.errors import LockstepError
from lockstep.core.settings import BUNDLE_DIR
from lockstep.oci.reference import ReferenceRefused

log = logging.getLogger("lockstep.bundles")


def install(worker: Any, bundles: BundleStore, envs: EnvStore) -> None:
    """Register every bundle handler on a Dask ``worker``."""
    install_store(worker, bundles, envs)
    install_env(worker, bundles, envs)
    install_pull(worker, bundles, envs)


def install_store(worker: Any, store: BundleStore, envs: EnvStore | None = None) -> None:
    """``Op.HAS``, ``Op.PUT`` and ``Op.CHECK``: the bundle's code (pickle-free: plain data).

    ``envs``: the worker's environments; the import check of a bundle that locks
    dependencies runs in its environment."""

    async def has(digest: str) -> dict[str, Any]:
        try:
            path = await asyncio.to_thread(store.has, digest)
        except BundleRefused as exc:
            return Failure(str(exc)).to_wire()
        return ok(cached=path is not None, path=str(path or ""))

    async def put(digest: str, files: Any) -> dict[str, Any]:
        try:
            path = await asyncio.to_thread(store.put, digest, from_wire(files))
        except BundleRefused as exc:
            log.error("lockstep refused a bundle on %s: %s", worker.address, exc)
            return Failure(f"worker {worker.address}: {exc}").to_wire()
        except OSError as exc:
            return Failure(
                f"worker {worker.address} cannot cache bundle {digest} under {store.root}: {exc}"
            ).to_wire()
        return ok(path=str(path))

    async def check(digest: str, checks: Any, timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
        try:
            path = await asyncio.to_thread(store.path, digest, f"worker {worker.address}")
            env = await asyncio.to_thread(envs.for_bundle, path) if envs is not None else None
        except (BundleRefused, BundleMissing, EnvRefused, WheelsMissing) as exc:
            return Failure(f"worker {worker.address}: {exc}").to_wire()
        rows = [
            {"role": str(c["role"]), "ref": str(c["ref"]), "args": list(c["args"])} for c in checks
        ]
        paths = [str(env.site), str(path)] if env is not None else [str(path)]
        results = await asyncio.to_thread(run_probe, paths, rows, float(timeout))
        return ok(results=results, path=str(path))

    worker.handlers[Op.HAS.value] = has
    worker.handlers[Op.PUT.value] = put
    worker.handlers[Op.CHECK.value] = check


def install_env(worker: Any, bundles: BundleStore, envs: EnvStore) -> None:
    """``Op.ENV_STATUS``, ``Op.WHEEL_PUT`` and ``Op.ENV_MAKE``: a bundle's environment.

    - ``ENV_STATUS(digest)`` → ``env``, ``ready``, ``missing``: for the stored bundle
      ``digest``, whether its environment is ready here and, if not, which of its
      wheels (``sha256:`` digests) this worker lacks;
    - ``WHEEL_PUT(digest, data)``: one wheel, as bytes;
    - ``ENV_MAKE(digest)`` → ``env``, ``built``, ``seconds``.

    A failure's code is ``BAD_INPUT`` for a lock this worker cannot use or a bundle
    directory it cannot write, else ``CHECK_FAILED`` (a wheel whose bytes or files are
    not what they claim), with ``missing`` if wheels are lacking.
    """
    where = f"worker {worker.address}"

    def failure(exc: Exception) -> dict[str, Any]:
        if isinstance(exc, WheelsMissing):
            return Failure(f"{where}: {exc}", missing=exc.digests).to_wire()
        if isinstance(exc, WheelRefused):  # bytes or files not what they claim: a failed check
            return Failure(f"{where}: {exc}").to_wire()
        if isinstance(exc, EnvRefused):  # a lock this worker cannot use: bad input
            return Failure(f"{where}: {exc}", Code.BAD_INPUT).to_wire()
        if isinstance(exc, OSError):
            return Failure(
                f"{where} cannot make the environment under {BUNDLE_DIR}={envs.root} "
                f"({exc.strerror or exc}); give the worker a writable {BUNDLE_DIR}",
                Code.BAD_INPUT,
            ).to_wire()
        return Failure(f"{where}: {exc}").to_wire()

    async def status(digest: str) -> dict[str, Any]:
        try:
            path = await asyncio.to_thread(bundles.path, digest, where)
            found = await asyncio.to_thread(envs.status, path)
        except (ValueError, RuntimeError, OSError) as exc:
            return failure(exc)
        return ok(**found, tag=host_tag(), platform=host_platform())

    async def put(digest: str, data: Any) -> dict[str, Any]:
        if not isinstance(digest, str) or not isinstance(data, bytes | bytearray | memoryview):
            return Failure(
                f"{where}: a wheel is sent as digest and bytes", Code.BAD_INPUT
            ).to_wire()
        try:
            await asyncio.to_thread(envs.put_wheel, hex_of(digest) and digest, bytes(data))
        except (ValueError, OSError) as exc:
            log.error("lockstep refused a wheel on %s: %s", worker.address, exc)
            return failure(exc)
        return ok()

    async def make(digest: str) -> dict[str, Any]:
        try:
            path = await asyncio.to_thread(bundles.path, digest, where)
            env = await asyncio.to_thread(envs.ensure, path)
        except (ValueError, RuntimeError, OSError) as exc:
            if not isinstance(exc, WheelsMissing):
                log.error("lockstep environment for bundle %s on %s: %s", digest, where, exc)
            return failure(exc)
        if env is None:
            return ok(env=None, built=False, seconds=0.0)
        return ok(env=env.key, built=env.built, seconds=round(env.seconds, 3))

    worker.handlers[Op.ENV_STATUS.value] = status
    worker.handlers[Op.WHEEL_PUT.value] = put
    worker.handlers[Op.ENV_MAKE.value] = make
    worker.handlers[Op.ENV_LAYER.value] = layer_handler(where, bundles, envs, failure)


def layer_handler(
    where: str, bundles: BundleStore, envs: EnvStore, failure: Callable[[Exception], Any]
) -> Callable[..., Awaitable[dict[str, Any]]]:
    """``Op.ENV_LAYER(digest, layer, size, offset, data, last, transfer, idle)``: a piece
    of the prebuilt environment layer ``layer`` of the stored bundle ``digest``, from
    the sender ``transfer``; pieces may come out of order and are fed in order
    (``env_receive``), extracted as they come (``env_layer.LayerSink``). Each piece is
    answered once its bytes were fed (``received``); the last one once the layer is
    verified and in place (``env``, ``built``, ``seconds``)."""

    def sink(digest: str, layer: str, size: int) -> LayerSink:
        return envs.layer_sink(bundles.path(digest, where), layer, size)

    receive = receiver(sink)

    async def layer(
        digest: str, layer: str, size: int, offset: int, data: Any, last: bool = False,
        transfer: str = "", idle: float = 120.0,
    ) -> dict[str, Any]:  # fmt: skip
        try:
            if not isinstance(data, bytes | bytearray | memoryview):
                raise LayerRefused(f"environment layer {layer}: a piece is sent as bytes")
            done, got = await receive(digest, layer, size, offset, data, last, transfer, idle)
            if done is None:
                return ok(received=offset + len(data))
            env = await asyncio.to_thread(envs.adopt, done)
        except (ValueError, RuntimeError, OSError) as exc:
            log.error("lockstep environment layer %s on %s: %s", layer, where, exc)
            return cast(dict[str, Any], failure(exc))
        seconds = time.monotonic() - got.started
        return ok(env=env.key, built=env.built, seconds=round(seconds, 3))

    return layer


def install_pull(worker: Any, bundles: BundleStore, envs: EnvStore) -> None:
    """``Op.PULL(reference)`` → ``digest``, ``pulled``, ``wheels``, ``bytes``, ``seconds``:
    the worker pulls what it lacks of a bundle from its registry."""
    where = f"worker {worker.address}"
    puller = Puller(bundles, envs, where)

    async def pull(reference: str) -> dict[str, Any]:
        try:
            done = await asyncio.to_thread(puller.pull, str(reference))
        except LockstepError as exc:
            log.error("lockstep could not pull %s: %s", reference, exc.message)
            return Failure(f"{where}: {exc.message}", Code(exc.exit_code)).to_wire()
        except (ArtifactRefused, ReferenceRefused, BundleRefused, WheelRefused) as exc:
            log.error("lockstep refused bundle %s: %s", reference, exc)
            code = Code.BAD_INPUT if isinstance(exc, ReferenceRefused) else Code.CHECK_FAILED
            return Failure(f"{where}: {reference}: {exc}; refused", code).to_wire()
        except EnvRefused as exc:
            return Failure(f"{where}: {exc}", Code.BAD_INPUT).to_wire()
        except OSError as exc:
            return Failure(
                f"{where} cannot cache bundle {reference} under {bundles.root} "
                f"({exc.strerror or exc}); give the worker a writable {BUNDLE_DIR}",
                Code.BAD_INPUT,
            ).to_wire()
        return ok(
            digest=done.digest,
            pulled=done.pulled,
            wheels=done.wheels,
            bytes=done.bytes,
            seconds=round(done.seconds, 3),
        )

    worker.handlers[Op.PULL.value] = pull
