"""The cold build's schedule: which of its jobs run beside which, and in what order their
results are taken.

A cold build is a few large jobs that do not depend on each other: the wheel downloads,
each platform's Debian base, each third-party layer (unpack and check its wheels,
compile their ``.pyc`` with the image's python, tar, compress, hash), the package
inventories (one job for every platform: the licence parser is not thread-safe). One at
a time they leave a core idle (tar writing, unpacking and hashing run on one core;
``.pyc`` compilation and deflate, which use both, wait for them). So the downloads run
in the ``background`` from the start (while the base is made), and the layers run
``WIDTH`` at a time (``submit``), the largest first, so that one layer's single-core
steps overlap another's compilation or compression. Each platform's base starts ``first``,
side by side (fetching and unpacking its ``.deb``s needs no compiler); the layer jobs do
not wait for the compiler's base to start either: they unpack and check their wheels, and
wait for its python only to compile. Memory stays bounded: at most ``WIDTH`` layers, one
base per platform (and ``FETCH_WORKERS`` downloads) are in memory.

Nothing depends on the order the jobs finish in. The caller takes the results in the
order a one-at-a-time build would make them, so what is written is the same bytes, and
a failing job raises the error that build would have met first. A failure ends the
schedule (``__exit__``): the jobs not started are cancelled, the running ones finish
(each writes only whole, content-addressed entries to the cache), the background
downloads stop between wheels (``stop``); nothing waits for work whose result is no
longer wanted beyond that.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

T = TypeVar("T")
P = ParamSpec("P")

# Jobs at once: two keep two cores busy (each job's compilation and deflate use every core
# in their turn); more would hold more layers in memory for little more overlap.
WIDTH = max(2, min(3, os.cpu_count() or 1))


BASES = 4  # jobs started at once by ``first`` (one per platform)


def done(value: T) -> Future[T]:
    """A job's result known already (a cached layer), as a future like the others."""
    future: Future[T] = Future()
    future.set_result(value)
    return future


class Schedule:
    """The jobs of one build: ``WIDTH`` at a time, the ones every platform's base is (started
    ``first``, at once), and one background job (the downloads)."""

    def __init__(self, width: int = WIDTH) -> None:
        self._pool = ThreadPoolExecutor(width, thread_name_prefix="layer")
        self._background = ThreadPoolExecutor(1, thread_name_prefix="download")
        self._first = ThreadPoolExecutor(BASES, thread_name_prefix="base")
        self.stop = threading.Event()  # set when the build fails: background work ends early
        self._awaited: list[Future[Any]] = []

    def submit(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        """Run ``fn`` as one of the ``WIDTH`` jobs at a time (in the order submitted)."""
        return self._pool.submit(fn, *args, **kwargs)

    def first(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        """Run ``fn`` now, beside the jobs: what the others wait for (each platform's base:
        the layer jobs unpack their wheels meanwhile, then wait for its python)."""
        return self._first.submit(fn, *args, **kwargs)

    def cancel_on_failure(self, awaited: Future[Any]) -> None:
        """Cancel ``awaited`` (a result some jobs wait for: the compiler a base job makes)
        if the schedule fails: the jobs still waiting for it end, rather than the failure
        waiting for them; the job that would give it finishes, and its result is dropped."""
        self._awaited.append(awaited)

    def background(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        """Run ``fn`` beside the jobs (it waits on the network, not on the cores)."""
        return self._background.submit(fn, *args, **kwargs)

    def __enter__(self) -> Schedule:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if kind is not None:
            self.stop.set()
            for awaited in self._awaited:
                awaited.cancel()
        for pool in (self._pool, self._first, self._background):
            pool.shutdown(wait=True, cancel_futures=kind is not None)
