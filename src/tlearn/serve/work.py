"""The server's work, kept within its `Limits`: requests admitted or turned away, images decoded and batches
run on a fixed pool of threads, and a deadline for each request.

    async with work.admit() as request:            # 503 busy + Retry-After when max_pending are in progress
        uploads = await read_uploads(...)          # 408 if the body is still arriving at the deadline
        request.body_read()
        found = await work.predict(datas, top_k=k)  # 413 over max_batch_pixels; 504 at the deadline

Every image decode and every batch through the network is one job on a pool of `threads` threads, so
no more than that many run at once, however many requests wait. A request's pixels are summed from
the image headers (Pillow opens lazily) before any is decoded. At the deadline the request's queued
jobs are cancelled and it is answered; a job already running cannot be interrupted, finishes on its
thread and is dropped, so the pool, not the deadline, is what bounds memory.
"""

from __future__ import annotations

import asyncio
import io
import math
import threading
import time
import warnings
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from functools import partial
from typing import TypeVar

import anyio
import numpy as np
from PIL import Image
from starlette.concurrency import run_in_threadpool

from tlearn.core.errors import ImageError
from tlearn.infer.predictor import BasePredictor
from tlearn.infer.results import Scored
from tlearn.serve.errors import ApiError
from tlearn.serve.limits import Limits

NETWORK_BATCH = 32  # images per forward pass, as `predict_many` batches them

A = TypeVar("A")
R = TypeVar("R")


class Admitted:
    """One request in progress: whether its body has arrived, which says 408 or 504 at the deadline."""

    def __init__(self) -> None:
        self.reading = True

    def body_read(self) -> None:
        self.reading = False


class Work:
    """The pool and the counters of one server; its methods are called from the event loop."""

    def __init__(self, predictor: BasePredictor, limits: Limits) -> None:
        self.predictor, self.limits = predictor, limits
        self._pool: ThreadPoolExecutor | None = None  # made at first use: an app may be started again after close()
        self._lock = threading.Lock()
        self._pending = 0
        self._seconds = 1.0  # running mean of the seconds a request takes, for Retry-After

    @property
    def pending(self) -> int:
        return self._pending

    def close(self) -> None:
        """Stop the threads (at the app's shutdown); the next job starts new ones."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def _threads(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.limits.threads, thread_name_prefix="tlearn-serve")
            return self._pool

    @asynccontextmanager
    async def admit(self) -> AsyncIterator[Admitted]:
        """Admit a request, or refuse it with 503 when `max_pending` are in progress; bound it by `timeout`."""
        limit = self.limits.max_pending
        with self._lock:
            if self._pending >= limit:
                wait = self.retry_after()
                raise ApiError(
                    503,
                    "busy",
                    f"The server is busy: {limit} request{'s' if limit != 1 else ''} in progress, the most it "
                    f"takes at once. Try again in {wait} s.",
                    headers={"Retry-After": str(wait)},
                )
            self._pending += 1
        admitted, start = Admitted(), time.monotonic()
        try:
            with anyio.move_on_after(self.limits.timeout) as deadline:
                yield admitted
        finally:
            with self._lock:
                self._pending -= 1
                self._seconds = 0.8 * self._seconds + 0.2 * (time.monotonic() - start)
        if deadline.cancelled_caught:
            raise _late(self.limits.timeout, reading=admitted.reading)

    def retry_after(self) -> int:
        """Whole seconds until a place is likely free: the requests ahead, over the threads, at the mean time."""
        guess = math.ceil(self._seconds * max(1, self._pending) / self.limits.threads)
        return max(1, min(guess, math.ceil(self.limits.timeout)))

    async def predict(self, images: Sequence[bytes], *, top_k: int) -> list[tuple[Scored, ...] | ImageError]:
        """The top-k classes of each image, or why it cannot be used, in order.

        Raises ApiError 413 when the images declare more than `max_batch_pixels` together (images over
        the per-image limit are refused without decoding, so they do not count).
        """
        declared = await run_in_threadpool(lambda: [declared_pixels(data) for data in images])
        total = sum(p for p in declared if p <= self.limits.max_pixels)
        if total > self.limits.max_batch_pixels:
            raise ApiError(
                413,
                "too_many_pixels",
                f"The images of this request hold {total / 1e6:.0f} megapixels together, over the "
                f"{self.limits.max_batch_pixels / 1e6:g} MP limit of one request: send fewer or smaller images "
                "per request.",
            )
        prepared = await self._map(self._prepare, images)
        inputs = [p for p in prepared if isinstance(p, np.ndarray)]
        (tops,) = await self._map(partial(self._top_k, k=top_k), [inputs]) if inputs else ([],)
        found = iter(tops)
        return [p if isinstance(p, ImageError) else next(found) for p in prepared]

    async def _map(self, fn: Callable[[A], R], items: Sequence[A]) -> list[R]:
        """`fn` of each item, each a job on the pool; if the request is cancelled, its queued jobs are too."""
        loop, pool = asyncio.get_running_loop(), self._threads()
        futures = [loop.run_in_executor(pool, fn, item) for item in items]
        try:
            return await asyncio.gather(*futures)
        except BaseException:
            for f in futures:
                f.cancel()
            raise

    def _prepare(self, data: bytes) -> np.ndarray | ImageError:
        try:
            return self.predictor.model_input(self.predictor.pixels(data, max_pixels=self.limits.max_pixels))
        except ImageError as err:
            return err

    def _top_k(self, inputs: list[np.ndarray], *, k: int) -> list[tuple[Scored, ...]]:
        out: list[tuple[Scored, ...]] = []
        for start in range(0, len(inputs), NETWORK_BATCH):
            proba = self.predictor.proba_of_inputs(np.stack(inputs[start : start + NETWORK_BATCH]))
            out += self.predictor.top_k(proba, k)
        return out


def declared_pixels(data: bytes) -> int:
    """Width x height from an image's header, nothing decoded; 0 when Pillow cannot open it (the decoder
    then refuses it and says why)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as img:
                width, height = img.size
    except Exception:  # not an image, a truncated header, a bomb Pillow itself refuses
        return 0
    return width * height


def _late(timeout: float, *, reading: bool) -> ApiError:
    if reading:
        return ApiError(
            408,
            "body_timeout",
            f"The request's body did not arrive within the server's limit of {timeout:g} s: send it faster, "
            "or send less.",
        )
    return ApiError(
        504,
        "timeout",
        f"The request took longer than the server's limit of {timeout:g} s: try again, or send fewer or "
        "smaller images.",
    )
