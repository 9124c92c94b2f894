"""Dynamic batching in `tlearn serve`: concurrent requests share forward passes and each gets its own answer.

The forward pass is slowed or held here so that requests arrive while one runs, as they do under load.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tlearn
from tlearn.infer.predictor import BasePredictor

pytest.importorskip("fastapi")
import httpx

from test_serve import running_server
from tlearn.serve.app import create_app
from tlearn.serve.batching import Batcher, QueueFull

JPEG = {"content-type": "image/jpeg"}


@pytest.fixture(scope="module")
def predictor(tiny_bundle: Path) -> BasePredictor:
    return tlearn.load(tiny_bundle)


@pytest.fixture(scope="module")
def photos(shapes_master: Path) -> list[bytes]:
    """Eight different photos, two of each class: a request answered with another's rows would show."""
    return [p.read_bytes() for c in sorted(shapes_master.iterdir()) for p in sorted(c.glob("*.jpg"))[:2]]


class Passes:
    """Stands in for the engine's forward pass: counts the passes and their sizes, slows or holds them."""

    def __init__(self, real: Callable[[np.ndarray], Any], *, delay: float = 0.0, hold: bool = False) -> None:
        self.real, self.delay = real, delay
        self.sizes: list[int] = []
        self.started = threading.Event()
        self.release = threading.Event()
        if not hold:
            self.release.set()

    def __call__(self, x: np.ndarray) -> Any:
        self.sizes.append(len(x))
        self.started.set()
        self.release.wait(timeout=30)
        time.sleep(self.delay)
        return self.real(x)


@pytest.fixture
def passes(predictor: BasePredictor, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Passes]]:
    made: list[Passes] = []

    def make(**kwargs: Any) -> Passes:
        p = Passes(predictor.answer_of_batch, **kwargs)
        monkeypatch.setattr(predictor, "answer_of_batch", p)
        made.append(p)
        return p

    yield make
    for p in made:
        p.release.set()  # never leave the network's thread waiting


def post_all(url: str, bodies: list[bytes]) -> list[httpx.Response]:
    """Each body to /predict from a client of its own, all at once."""

    def one(body: bytes) -> httpx.Response:
        with httpx.Client(base_url=url, timeout=30) as http:
            return http.post("predict", content=body, headers=JPEG)

    with ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(one, bodies))


def answers(responses: list[httpx.Response]) -> list[Any]:
    """Each response's top-k, or its error code."""
    return [r.json().get("predictions", r.json().get("error")) for r in responses]


def unknown_scores(responses: list[httpx.Response]) -> list[float | None]:
    return [r.json().get("unknown_score") for r in responses]


def assert_same_answers(got: list[Any], alone: list[Any]) -> None:
    """The same classes in the same order, request by request, and the same probabilities up to float
    rounding: a pass over 8 images sums in another order than one over 1 (measured: 1e-8 apart)."""
    assert len(got) == len(alone)
    for g, a in zip(got, alone, strict=True):
        if isinstance(a, str):  # an error code
            assert g == a
            continue
        assert [c["class"] for c in g] == [c["class"] for c in a]
        assert [c["probability"] for c in g] == pytest.approx([c["probability"] for c in a], abs=1e-6)


def test_concurrent_requests_share_forward_passes_and_get_their_own_answers(
    predictor: BasePredictor, photos: list[bytes], passes: Callable[..., Passes]
) -> None:
    app = create_app(predictor, top_k=4, pass_size=8)
    with running_server(app) as url:
        one_by_one = [httpx.post(url + "predict", content=p, headers=JPEG, timeout=30) for p in photos]
        alone, scores_alone = answers(one_by_one), unknown_scores(one_by_one)
        assert None not in scores_alone
        p = passes(delay=0.2)  # while one pass runs, the other requests arrive and wait for the next
        together = post_all(url, photos)
    assert [r.status_code for r in together] == [200] * 8
    assert_same_answers(answers(together), alone)
    assert unknown_scores(together) == pytest.approx(scores_alone, abs=1e-5)  # the second output is routed too
    assert len({a[0]["class"] for a in alone}) == 4  # the photos differ, so a mix-up could not pass
    assert sum(p.sizes) == 8 and len(p.sizes) < 8, p.sizes  # fewer passes than requests
    assert max(p.sizes) > 1


def test_a_broken_image_fails_only_its_own_request(
    predictor: BasePredictor, photos: list[bytes], passes: Callable[..., Passes]
) -> None:
    app = create_app(predictor, top_k=4, pass_size=8)
    bodies = [*photos[:3], photos[3][: len(photos[3]) // 2], *photos[4:]]  # the fourth is cut in half
    with running_server(app) as url:
        alone = answers([httpx.post(url + "predict", content=p, headers=JPEG, timeout=30) for p in bodies])
        p = passes(delay=0.2)
        together = post_all(url, bodies)
    assert [r.status_code for r in together] == [200, 200, 200, 422, 200, 200, 200, 200]
    assert together[3].json()["error"] == "corrupt_image"
    assert_same_answers(answers(together), alone)
    assert sum(p.sizes) == 7 and len(p.sizes) < 7, p.sizes


def test_a_full_queue_answers_503_with_retry_after(
    predictor: BasePredictor, photos: list[bytes], passes: Callable[..., Passes]
) -> None:
    """With the network held on one request and two images queued (the most with --max-queue 2), a third
    image is refused at once; the queued ones are answered when the network frees."""
    p = passes(hold=True)
    app = create_app(predictor, max_queue=2, max_batch=4, pass_size=8)
    batch = [("files", (f"{i}.jpg", photos[i], "image/jpeg")) for i in range(2)]
    with running_server(app) as url, httpx.Client(base_url=url, timeout=30) as http, ThreadPoolExecutor(2) as pool:
        running = pool.submit(http.post, "predict", content=photos[0], headers=JPEG)
        assert p.started.wait(10)
        queued = pool.submit(http.post, "predict/batch", files=batch)
        deadline = time.monotonic() + 10
        while app.state.served.work.batcher.waiting < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        res = http.post("predict", content=photos[1], headers=JPEG)
        assert res.status_code == 503, res.text
        assert res.json() == {
            "error": "busy",
            "detail": "The server is busy: 2 images wait for the network, and it queues at most 2. Try again in "
            f"{res.headers['retry-after']} s.",
        }
        assert int(res.headers["retry-after"]) >= 1
        p.release.set()
        assert running.result(timeout=30).status_code == 200 and queued.result(timeout=30).status_code == 200
        assert http.post("predict", content=photos[1], headers=JPEG).status_code == 200
    assert p.sizes == [1, 2, 1]


# The batcher alone, on a stand-in network that answers each row with its own number.


def numbered(x: np.ndarray) -> np.ndarray:
    return x[:, :1].copy()


def batcher(forward: Callable[[np.ndarray], np.ndarray] = numbered, **kwargs: Any) -> Batcher:
    return Batcher(forward, **{"max_batch": 32, "max_wait": 0.005, "max_queue": 64, **kwargs})


def rows(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.float32)[:, None]


def test_requests_that_arrive_together_are_one_pass_up_to_max_batch() -> None:
    sizes: list[int] = []
    b = batcher(lambda x: sizes.append(len(x)) or numbered(x), max_batch=4, max_wait=0.2)

    async def main() -> list[np.ndarray]:
        return await asyncio.gather(*(b.run(rows(i, 10 + i)) for i in range(5)))

    got = asyncio.run(main())
    assert [g.ravel().tolist() for g in got] == [[i, 10 + i] for i in range(5)]
    assert sizes == [4, 4, 2]  # two requests of 2 per pass: max_batch, and the last alone once the wait ends


def test_a_lone_request_waits_only_max_wait() -> None:
    b = batcher(max_wait=0.003)

    async def main() -> float:
        await b.run(rows(0))  # the first starts the network's thread
        start = time.perf_counter()
        await b.run(rows(1))
        return time.perf_counter() - start

    assert asyncio.run(main()) < 0.1


def test_a_request_cancelled_while_queued_leaves_the_queue() -> None:
    held, sizes = threading.Event(), []

    def forward(x: np.ndarray) -> np.ndarray:
        sizes.append(len(x))
        held.wait(10)
        return numbered(x)

    b = batcher(forward, max_wait=0)

    async def main() -> np.ndarray:
        first = asyncio.ensure_future(b.run(rows(0)))
        await asyncio.sleep(0.05)  # its pass is running, held
        late = asyncio.ensure_future(b.run(rows(1, 2)))
        kept = asyncio.ensure_future(b.run(rows(3)))
        await asyncio.sleep(0.01)
        late.cancel()  # its deadline, say
        held.set()
        await first
        return await kept

    assert asyncio.run(main()).ravel().tolist() == [3]
    assert sizes == [1, 1] and b.waiting == 0


def test_a_full_queue_refuses_but_a_lone_request_of_any_size_is_taken() -> None:
    held = threading.Event()
    b = batcher(lambda x: held.wait(10) and numbered(x), max_queue=3, max_wait=0)

    async def main() -> None:
        running = asyncio.ensure_future(b.run(rows(0)))
        await asyncio.sleep(0.05)
        queued = asyncio.ensure_future(b.run(rows(1, 2)))
        await asyncio.sleep(0)
        with pytest.raises(QueueFull, match="2 images wait for the network, and 3 is the most it queues"):
            await b.run(rows(3, 4))
        held.set()
        await asyncio.gather(running, queued)
        assert (await b.run(rows(*range(10)))).ravel().tolist() == list(range(10))  # alone: over 3, taken

    asyncio.run(main())


def test_close_answers_every_queued_request_then_stops() -> None:
    sizes: list[int] = []

    def forward(x: np.ndarray) -> np.ndarray:
        sizes.append(len(x))
        time.sleep(0.05)
        return numbered(x)

    b = batcher(forward, max_batch=2, max_wait=0)

    async def main() -> list[np.ndarray]:
        queued = [asyncio.ensure_future(b.run(rows(i))) for i in range(5)]
        await asyncio.sleep(0)
        await b.close()
        assert all(q.done() for q in queued)
        return [q.result() for q in queued]

    assert [g.ravel().tolist() for g in asyncio.run(main())] == [[i] for i in range(5)]
    assert sum(sizes) == 5


def test_a_failed_pass_fails_each_of_its_requests() -> None:
    def broken(x: np.ndarray) -> np.ndarray:
        raise RuntimeError("a bug")

    b = batcher(broken, max_wait=0.05)

    async def main() -> list[BaseException | np.ndarray]:
        return await asyncio.gather(b.run(rows(0)), b.run(rows(1)), return_exceptions=True)

    assert [type(r) for r in asyncio.run(main())] == [RuntimeError, RuntimeError]
