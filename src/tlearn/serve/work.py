"""The server's work, kept within its `Limits`: requests admitted or turned away, images decoded on fixed
pools of threads, the images of concurrent requests batched into shared forward passes, and a deadline
for each request.

    body = announced_body(request, ...)            # 400 / 413 / 415 from the headers alone
    async with work.admit(body.expected) as admitted:  # 503 busy + Retry-After: too many requests or bytes
        uploads = await read_uploads(request, body, ...)  # 408 if the body is still arriving at the deadline
        admitted.body_read()
        found = await work.predict(datas, top_k=k)  # 413 over max_batch_pixels; 503 queue full; 504 late

Every image decode is one job on a pool of threads: `large_threads` for images that are large to decode
(known from their headers: Pillow opens lazily), `threads` for the rest, so no more than that many run
at once however many requests wait, and a small request is not queued behind someone's 50 MP PNGs. A
request's pixels are summed from the same headers before any is decoded. Decoded images go to the
`Batcher` (`batching.py`), which runs the network one pass at a time on a thread of its own, on the
images of every request waiting (up to the engine's measured pass size, `pass_size.py`, gathered for at most
BATCH_WAIT seconds), and
refuses a request with 503 when `max_queue` images already wait. At the deadline the request's queued
jobs are cancelled and it is answered; a job already running cannot be interrupted, finishes on its
thread and is dropped, so the pools, not the deadline, are what bound memory.
"""

from __future__ import annotations

import asyncio
import io
import math
import threading
import time
import warnings
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TypeVar

import anyio
import numpy as np
from PIL import Image
from starlette.concurrency import run_in_threadpool

from tlearn.core.errors import ImageError
from tlearn.core.malloc import give_back_freed_memory
from tlearn.core.words import count
from tlearn.infer.heatmaps import Explained, explain_images
from tlearn.infer.predictor import BasePredictor
from tlearn.infer.results import Prediction
from tlearn.serve.batching import Batcher, QueueFull
from tlearn.serve.errors import MB, ApiError
from tlearn.serve.limits import JPEG_SHARE, LARGE_DECODE_PIXELS, Limits
from tlearn.serve.memory import TRIM_PIXELS
from tlearn.serve.pass_size import PassSize

# How long the first image of a batch waits for others: a pass of the demo's MobileNetV2 (288 px + mirror) takes
# 26 to 38 ms for one image here, so a few ms catch the requests that arrive together and cost a lone one little.
BATCH_WAIT = 0.003

A = TypeVar("A")
R = TypeVar("R")


class Admitted:
    """One request in progress: whether its body has arrived, which says 408 or 504 at the deadline."""

    def __init__(self) -> None:
        self.reading = True

    def body_read(self) -> None:
        self.reading = False


@dataclass(frozen=True)
class Answers:
    """What one forward pass answers: (N, K) probabilities and (N,) unknown scores (None for a bundle without
    an unknown answer); a slice of it is the answers to those rows (what the batcher hands each request)."""

    proba: np.ndarray
    scores: np.ndarray | None

    def __getitem__(self, rows: slice) -> Answers:
        return Answers(self.proba[rows], None if self.scores is None else self.scores[rows])


@dataclass(frozen=True)
class Header:
    """What an image's header declares, read without decoding it."""

    pixels: int  # width x height; 0 when Pillow cannot open it (the decoder then refuses it and says why)
    decoded: float = 0  # the pixels its decode holds: a JPEG decodes at reduced scale, counted at JPEG_SHARE

    @property
    def large(self) -> bool:
        """Slow and memory-hungry to decode: on the pool of large images."""
        return self.decoded > LARGE_DECODE_PIXELS

    @property
    def trimmed(self) -> bool:
        """Its decode's memory is given back to the system at once (`memory.py`)."""
        return self.decoded > TRIM_PIXELS


class Work:
    """The pools and the counters of one server; its methods are called from the event loop."""

    def __init__(
        self, predictor: BasePredictor, limits: Limits, pass_size: PassSize, explainer: BasePredictor | None = None
    ) -> None:
        self.predictor, self.limits, self.pass_size = predictor, limits, pass_size
        self.explainer = explainer  # the PyTorch predictor heatmaps come from; None: this server has none
        self._pools: tuple[ThreadPoolExecutor, ThreadPoolExecutor] | None = None  # small, large: made at first use
        self._lock = threading.Lock()
        self._pending = 0
        self._held = 0  # bytes of the bodies of the requests in progress, as announced
        self._seconds = 1.0  # running mean of the seconds a request takes, for Retry-After
        self.batcher = Batcher(self._forward, max_batch=pass_size.size, max_wait=BATCH_WAIT, max_queue=limits.max_queue)

    async def close(self) -> None:
        """At the app's shutdown: answer the images queued for the network, then stop the threads; the next
        job starts new ones, as an app may start again."""
        await self.batcher.close()
        with self._lock:
            pools, self._pools = self._pools, None
        for pool in pools or ():
            pool.shutdown(wait=False, cancel_futures=True)

    def _threads(self) -> tuple[ThreadPoolExecutor, ThreadPoolExecutor]:
        with self._lock:
            if self._pools is None:
                self._pools = (
                    ThreadPoolExecutor(self.limits.threads, thread_name_prefix="tlearn-serve"),
                    ThreadPoolExecutor(self.limits.large_threads, thread_name_prefix="tlearn-serve-large"),
                )
            return self._pools

    @asynccontextmanager
    async def admit(self, body_bytes: int) -> AsyncIterator[Admitted]:
        """Admit a request whose body will be `body_bytes`, bound by `timeout`; or refuse it with 503 when
        `max_pending` are in progress, or when its body would take the uploads held past `max_upload_mb`
        (the only request in progress is always admitted: its size is capped on its own)."""
        with self._lock:
            limit = self.limits.max_pending
            if self._pending >= limit:
                why = f"{count(limit, 'request')} in progress, the most it takes at once"
            elif self._pending and self._held + body_bytes > self.limits.upload_limit:
                why = (
                    f"it holds {self._held / MB:.1f} MB of uploads, and this one's {body_bytes / MB:.1f} MB would "
                    f"pass its limit of {self.limits.max_upload_mb:g} MB"
                )
            else:
                why = ""
                self._pending += 1
                self._held += body_bytes
        if why:
            wait = self.retry_after()
            raise ApiError(
                503, "busy", f"The server is busy: {why}. Try again in {wait} s.", headers={"Retry-After": str(wait)}
            )
        admitted, start = Admitted(), time.monotonic()
        try:
            with anyio.move_on_after(self.limits.timeout) as deadline:
                yield admitted
        finally:
            with self._lock:
                self._pending -= 1
                self._held -= body_bytes
                self._seconds = 0.8 * self._seconds + 0.2 * (time.monotonic() - start)
        if deadline.cancelled_caught:
            raise _late(self.limits.timeout, reading=admitted.reading)

    def retry_after(self) -> int:
        """Whole seconds until a place is likely free: the requests ahead, over the threads, at the mean time."""
        guess = math.ceil(self._seconds * max(1, self._pending) / self.limits.threads)
        return max(1, min(guess, math.ceil(self.limits.timeout)))

    async def predict(self, images: Sequence[bytes], *, top_k: int) -> list[Prediction | ImageError]:
        """The top-k classes of each image (and whether it is unknown), or why it cannot be used, in order.

        Raises ApiError 413 when the images declare more than `max_batch_pixels` together (images over
        the per-image limit are refused without decoding, so they do not count).
        """
        headers = await run_in_threadpool(lambda: [read_header(data) for data in images])
        total = sum(h.pixels for h in headers if h.pixels <= self.limits.max_pixels)
        if total > self.limits.max_batch_pixels:
            raise ApiError(
                413,
                "too_many_pixels",
                f"The images of this request hold {total / 1e6:.0f} megapixels together, over the "
                f"{self.limits.max_batch_pixels / 1e6:g} MP limit of one request: send fewer or smaller images "
                "per request.",
            )
        decoded = [h if h.pixels <= self.limits.max_pixels else Header(h.pixels) for h in headers]  # over: refused
        prepared = await self._map(self._prepare, images, decoded)
        inputs = [p for p in prepared if isinstance(p, np.ndarray)]
        found: Iterator[Prediction] = iter([])
        if inputs:
            answers = await self._answers(inputs)
            found = iter(self.predictor.predictions([""] * len(inputs), answers.proba, answers.scores, top_k=top_k))
        return [p if isinstance(p, ImageError) else next(found) for p in prepared]

    async def explain(self, data: bytes) -> Explained | ImageError:
        """The heatmap of one image for its predicted class (see `infer/heatmaps.py`), on the pools."""
        header = await run_in_threadpool(read_header, data)
        (done,) = await self._map(self._explain, [data], [header])
        return done

    def _explain(self, data: bytes) -> Explained | ImageError:
        assert self.explainer is not None  # the routes answer 400 without one
        explained, failures = explain_images(self.explainer, [data], max_pixels=self.limits.max_pixels)
        if explained:
            return explained[0]
        kind = failures[0].kind if failures else ImageError
        return kind(failures[0].reason if failures else "cannot be read")

    async def _answers(self, inputs: list[np.ndarray]) -> Answers:
        """The answers to one request's model inputs, from a forward pass shared with other requests."""
        try:
            return await self.batcher.run(np.stack(inputs))
        except QueueFull as full:
            wait = self.retry_after()
            raise ApiError(
                503,
                "busy",
                f"The server is busy: {full.waiting} images wait for the network, and it queues at most "
                f"{full.limit}. Try again in {wait} s.",
                headers={"Retry-After": str(wait)},
            ) from None

    async def _map(self, fn: Callable[[A], R], items: Sequence[A], headers: Sequence[Header]) -> list[R]:
        """`fn` of each item, each a job on the small or the large pool by its header (a large decode's memory
        given back after it); if the request is cancelled, its queued jobs are too."""
        loop, (small_pool, large_pool) = asyncio.get_running_loop(), self._threads()
        futures = [
            loop.run_in_executor(large_pool if h.large else small_pool, _decode_job, fn, item, h.trimmed)
            for item, h in zip(items, headers, strict=True)
        ]
        try:
            return await asyncio.gather(*futures)
        except BaseException:
            for f in futures:
                f.cancel()
            raise

    def _prepare(self, data: bytes) -> np.ndarray | ImageError:
        try:
            return self.predictor.prepare_input(data, max_pixels=self.limits.max_pixels)
        except ImageError as err:
            return err

    def _forward(self, x: np.ndarray) -> Answers:
        """The answers to (N, 3, H, W) inputs, `pass_size` images per pass (on the network's thread): a request of
        more images than that is one item of the batcher's, and its passes run one after the other."""
        step = self.pass_size.size
        parts = [Answers(*self.predictor.answer_of_inputs(x[i : i + step])) for i in range(0, len(x), step)]
        if len(parts) == 1:
            return parts[0]
        scores = [p.scores for p in parts if p.scores is not None]
        return Answers(np.concatenate([p.proba for p in parts]), np.concatenate(scores) if scores else None)


def _decode_job(fn: Callable[[A], R], item: A, trimmed: bool) -> R:
    try:
        return fn(item)
    finally:
        if trimmed:
            give_back_freed_memory()


def read_header(data: bytes) -> Header:
    """The size an image declares and whether it is large to decode, from its header alone."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as img:
                (width, height), kind = img.size, img.format
    except Exception:  # not an image, a truncated header, a bomb Pillow itself refuses
        return Header(0)
    pixels = width * height
    return Header(pixels, pixels / (JPEG_SHARE if kind == "JPEG" else 1))


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
