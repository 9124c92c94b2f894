"""Dynamic batching: the decoded images of concurrent requests go through the network in one forward pass.

    batcher = Batcher(forward, max_batch=32, max_wait=0.003, max_queue=64)
    rows = await batcher.run(x)   # x: (n, 3, H, W) of one request -> forward(batch)[its rows], in order

`forward` takes the (N, 3, H, W) inputs of a pass and returns anything that slices by rows: an (N, K)
array, or the server's `Answers` (probabilities and unknown scores).

A forward pass of 8 images costs far less than 8 passes of one (the network's weights are read once,
the cores stay busy), so requests that arrive together are answered together: the first image to
arrive opens a batch, which waits at most `max_wait` seconds for more, or until `max_batch` images,
then runs on the network's own thread while the next batch gathers. While a pass runs, the requests
that arrive meanwhile wait for it, so batches grow with the load by themselves and a lone request
waits only `max_wait`. Each request gets back its own rows.

The queue is bounded: a request whose images would take the images waiting past `max_queue` is
refused with QueueFull (the server answers 503 with Retry-After) rather than let the line, and the
latency of everyone in it, grow. A request alone is always queued, whatever its size. A request
cancelled while it waits (its deadline) leaves the queue; one whose pass is running gets no answer.
`close()` answers every request still queued, then stops.

Everything here runs on the event loop except the forward pass. The queue belongs to the running
loop: an app started again on another loop (tests, some ASGI hosts) gets a new one.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import numpy as np

log = logging.getLogger(__name__)


class QueueFull(Exception):
    """The images waiting for the network would pass `max_queue` with this request's."""

    def __init__(self, waiting: int, limit: int) -> None:
        super().__init__(f"{waiting} images wait for the network, and {limit} is the most it queues")
        self.waiting, self.limit = waiting, limit


class Rows(Protocol):
    """What a forward pass returns: sliced by rows, each request's part of it."""

    def __getitem__(self, rows: slice, /) -> Any: ...


R = TypeVar("R", bound=Rows)


@dataclass
class _Item(Generic[R]):
    x: np.ndarray  # (n, 3, H, W), one request's images
    answer: asyncio.Future[R]


@dataclass
class _Lane(Generic[R]):
    """The queue of one event loop and the task that empties it."""

    loop: asyncio.AbstractEventLoop
    items: deque[_Item[R]] = field(default_factory=deque)
    waiting: int = 0  # images in `items`
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    closing: bool = False
    task: asyncio.Task[None] | None = None


class Batcher(Generic[R]):
    """Gathers requests' model inputs into forward passes of `forward` (see the module docstring)."""

    def __init__(
        self,
        forward: Callable[[np.ndarray], R],
        *,
        max_batch: int,
        max_wait: float,
        max_queue: int,
    ) -> None:
        self.forward, self.max_batch, self.max_wait, self.max_queue = forward, max_batch, max_wait, max_queue
        self._lane: _Lane[R] | None = None
        self._pool: ThreadPoolExecutor | None = None

    @property
    def waiting(self) -> int:
        """Images queued for the network now."""
        return self._lane.waiting if self._lane else 0

    async def run(self, x: np.ndarray) -> R:
        """The rows of `forward` for one request's (n, 3, H, W) inputs, computed in a shared pass.

        Raises QueueFull when the queue cannot take them, and whatever `forward` raised for their pass.
        """
        lane = self._current_lane()
        if lane.waiting and lane.waiting + len(x) > self.max_queue:
            raise QueueFull(lane.waiting, self.max_queue)
        item: _Item[R] = _Item(x, lane.loop.create_future())
        lane.items.append(item)
        lane.waiting += len(x)
        lane.arrived.set()
        return await item.answer  # cancelling the request cancels `answer`: the batcher then skips it

    async def close(self) -> None:
        """Answer the requests still queued, then stop the task and the network's thread."""
        lane, self._lane = self._lane, None
        if lane is not None and lane.task is not None and lane.loop is asyncio.get_running_loop():
            lane.closing = True
            lane.arrived.set()
            await asyncio.shield(lane.task)
        elif lane is not None and lane.task is not None:  # another loop's: it cannot be awaited from here
            lane.loop.call_soon_threadsafe(lane.task.cancel)
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def _current_lane(self) -> _Lane[R]:
        loop = asyncio.get_running_loop()
        if self._lane is None or self._lane.loop is not loop:
            self._lane = _Lane[R](loop)  # an earlier loop's task keeps serving what it already queued
            self._lane.task = loop.create_task(self._serve(self._lane), name="tlearn-serve-batcher")
        return self._lane

    def _thread(self) -> ThreadPoolExecutor:
        if self._pool is None:  # one pass at a time: two at once would only share the same cores
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="tlearn-serve-network")
        return self._pool

    async def _serve(self, lane: _Lane[R]) -> None:
        while True:
            while not lane.items:
                if lane.closing:
                    return
                lane.arrived.clear()
                await lane.arrived.wait()
            await self._gather(lane)
            batch = self._take(lane)
            if batch:
                await self._pass(batch)

    async def _gather(self, lane: _Lane[R]) -> None:
        """Wait until `max_batch` images are queued, or `max_wait` seconds from now."""
        deadline = lane.loop.time() + self.max_wait
        while lane.waiting < self.max_batch and not lane.closing:
            left = deadline - lane.loop.time()
            if left <= 0:
                return
            lane.arrived.clear()
            try:
                await asyncio.wait_for(lane.arrived.wait(), left)
            except TimeoutError:
                return

    def _take(self, lane: _Lane[R]) -> list[_Item[R]]:
        """The next requests in line, up to `max_batch` images (at least one request, whatever its size)."""
        batch: list[_Item[R]] = []
        size = 0
        while lane.items:
            item = lane.items[0]
            if item.answer.done():  # cancelled while it waited
                lane.items.popleft()
                lane.waiting -= len(item.x)
                continue
            if batch and size + len(item.x) > self.max_batch:
                break
            lane.items.popleft()
            lane.waiting -= len(item.x)
            batch.append(item)
            size += len(item.x)
        return batch

    async def _pass(self, batch: list[_Item[R]]) -> None:
        """One forward pass of the batch's inputs on the network's thread; each request gets its rows."""
        x = batch[0].x if len(batch) == 1 else np.concatenate([item.x for item in batch])
        try:
            out = await asyncio.get_running_loop().run_in_executor(self._thread(), self.forward, x)
        except Exception as err:  # the pass failed: so does every request in it (the server logs it as a bug)
            for item in batch:
                if not item.answer.done():
                    item.answer.set_exception(err)
            return
        start = 0
        for item in batch:
            rows: R = out[start : start + len(item.x)]
            start += len(item.x)
            if not item.answer.done():
                item.answer.set_result(rows)
