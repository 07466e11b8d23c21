"""A prebuilt environment layer received in pieces through the scheduler: put back in
order, held within a bound, given up when its sender goes quiet.

The runner keeps a few pieces in flight at once (``ship_layer.WINDOW``); each crosses
the scheduler on a connection of its own, so pieces may arrive out of order. A
``Transfer`` holds those that came early (at most ``AHEAD`` of them, each at most
``MAX_PIECE`` bytes: more is refused, never buffered), feeds the sink
(``env_layer.LayerSink``) in offset order, one feeder at a time, and answers each
piece once its bytes were fed — so a slow extraction slows the sender instead of
filling the worker's memory. The last piece's answer comes once the layer is
verified and in place.

A transfer whose sender went (killed, its connection lost) sends nothing more: when
no piece arrived for ``idle`` seconds (the sender's own per-piece timeout, carried in
each piece), the transfer is aborted, its temporary directory removed and one line
logged; pieces still waiting are answered with that line. A new transfer of the same
layer (another sender, a retry) replaces an unfinished one the same way.

Worker's side; runs on the worker's event loop, file work in threads.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from lockstep.bundles.env_layer import LayerRefused, LayerSink

log = logging.getLogger("lockstep.bundles")

AHEAD = 8  # pieces held that came before their turn (the runner's window is smaller)
MAX_PIECE = 16 << 20  # bytes in one piece
MAX_IDLE = 3600.0  # seconds a transfer may wait for its next piece, at most


class Transfer:
    """One layer's pieces from one sender (``transfer``: the sender's random id)."""

    def __init__(
        self,
        name: str,
        transfer: str,
        size: int,
        make_sink: Callable[[], LayerSink],
        idle: float,
    ) -> None:
        self.name, self.transfer, self.size = name, transfer, size
        self.started = time.monotonic()
        self._make_sink = make_sink
        self._sink: LayerSink | None = None
        self._next = 0  # the offset fed next
        self._early: dict[int, bytes] = {}
        self._feeding = asyncio.Lock()
        self._moved = asyncio.Condition()
        self.failed: str | None = None
        self._idle = min(max(float(idle), 1.0), MAX_IDLE)
        self._timer: asyncio.TimerHandle | None = None
        self._giving_up: asyncio.Task[None] | None = None
        self._touch()

    async def piece(self, offset: int, data: bytes, last: bool) -> LayerSink | None:
        """Take the piece at ``offset``; return once it was fed (the sink, if this was the
        last piece and every byte is in; else None). ``LayerRefused`` if it cannot be."""
        self._check(offset, data, last)
        self._early[offset] = data
        self._touch()
        async with self._feeding:  # one feeder: whoever holds this feeds what is in order
            try:
                if self._sink is None and self.failed is None:
                    sink = await asyncio.to_thread(self._make_sink)
                    if self.failed is not None:  # given up meanwhile
                        await asyncio.to_thread(sink.abort)
                    self._sink = sink
                while self.failed is None and self._next in self._early:
                    chunk = self._early.pop(self._next)
                    assert self._sink is not None
                    await asyncio.to_thread(self._sink.feed, chunk)
                    self._next += len(chunk)
                    self._touch()  # progress: a slow extraction is not a sender gone
            except (ValueError, RuntimeError, OSError) as exc:
                await self.give_up(str(exc), log_it=False)
                raise
            finally:
                async with self._moved:
                    self._moved.notify_all()
        async with self._moved:
            await self._moved.wait_for(lambda: self.failed is not None or self._next > offset)
        if self.failed is not None:
            raise LayerRefused(self.failed)
        return self._sink if last and self._next == self.size else None

    def _check(self, offset: int, data: bytes, last: bool) -> None:
        if self.failed is not None:
            raise LayerRefused(self.failed)
        what = f"environment layer {self.name.split()[-1]}"
        if len(data) > MAX_PIECE or not data:
            problem = f"a piece of {len(data)} bytes (1 to {MAX_PIECE})"
        elif offset < self._next or offset in self._early:
            problem = f"the piece at offset {offset} twice"
        elif offset + len(data) > self.size or last != (offset + len(data) == self.size):
            problem = f"a piece at offset {offset} that does not fit its {self.size} bytes"
        elif len(self._early) >= AHEAD:
            problem = f"more than {AHEAD} pieces ahead of offset {self._next}"
        else:
            return
        raise LayerRefused(f"{what}: the sender sent {problem}; refused, nothing of it is used")

    def _touch(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(self._idle, self._quiet)

    def _quiet(self) -> None:
        why = (
            f"environment layer {self.name.split()[-1]}: no piece came for {self._idle:.0f} s "
            "(its sender went); removed, nothing of it is used"
        )
        self._giving_up = asyncio.get_running_loop().create_task(self.give_up(why))

    async def give_up(self, why: str, log_it: bool = True) -> None:
        """Abort: the temporary directory removed, waiting pieces answered with ``why``."""
        if self._timer is not None:
            self._timer.cancel()
        if self.failed is not None:
            return
        self.failed = why
        self._early.clear()
        try:
            if self._sink is not None:
                await asyncio.to_thread(self._sink.abort)
        finally:  # the line says "removed": logged once the directory is gone
            if log_it:
                log.error("lockstep %s", why)
            async with self._moved:
                self._moved.notify_all()

    def done(self) -> None:
        """The last piece was taken: no more idle watch."""
        if self._timer is not None:
            self._timer.cancel()


def receiver(
    make_sink: Callable[[str, str, int], LayerSink],
) -> Callable[..., Awaitable[tuple[LayerSink | None, Transfer]]]:
    """``receive(digest, layer, size, offset, data, last, transfer, idle)``: the piece
    given to its transfer (made by the first piece that arrives, replacing an unfinished
    one of another sender); ``(the sink once the last piece is in, or None; the
    transfer)``. ``make_sink(digest, layer, size)`` makes the sink (in a thread)."""
    transfers: dict[str, Transfer] = {}

    async def receive(
        digest: str, layer: str, size: int, offset: int, data: Any, last: bool,
        transfer: str, idle: float,
    ) -> tuple[LayerSink | None, Transfer]:  # fmt: skip
        name = f"{digest} {layer}"
        found = transfers.get(name)
        if found is not None and found.transfer == transfer and found.size != int(size):
            raise LayerRefused(
                f"environment layer {layer}: the sender sent it as {size} and as {found.size} "
                "bytes; refused, nothing of it is used"
            )
        if found is not None and found.transfer != transfer:  # a new sender: the old one went
            del transfers[name]
            await found.give_up(f"environment layer {layer}: replaced by another transfer")
            found = None
        if found is None:
            found = Transfer(
                name, transfer, int(size), lambda: make_sink(digest, layer, int(size)), idle
            )
            transfers[name] = found
        # a failed transfer stays (its sender's later pieces get its line) until another
        # sender's piece replaces it
        done = await found.piece(int(offset), bytes(data), bool(last))
        if done is not None:
            found.done()
            transfers.pop(name, None)
        return done, found

    return receive


__all__ = ["AHEAD", "MAX_PIECE", "Transfer", "receiver"]
