"""`tlearn serve` under hostile or heavy load: every limit answers with a JSON 4xx/5xx that says why, never a
crash, and the work in progress stays within the stated bounds (images decoding at once, requests waiting,
pixels per request, seconds per request)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import tlearn
import tlearn.infer.inputs
from tlearn.infer.predictor import BasePredictor

pytest.importorskip("fastapi")
import httpx
from fastapi.testclient import TestClient

from test_serve import running_server
from tlearn.serve.app import create_app


@pytest.fixture(scope="module")
def predictor(tiny_bundle: Path) -> BasePredictor:
    return tlearn.load(tiny_bundle)


@pytest.fixture(scope="module")
def client(predictor: BasePredictor) -> TestClient:
    return TestClient(create_app(predictor, max_batch=4), raise_server_exceptions=False)


@pytest.fixture(scope="module")
def photo(shapes_master: Path) -> bytes:
    return (shapes_master / "red_circle" / "red_circle_001.jpg").read_bytes()


class Gauge:
    """Stands in for the decoder: counts the decodes running at once, and can hold them until released."""

    def __init__(self, real: Callable[..., Any], *, delay: float = 0.0, hold: bool = False) -> None:
        self.real, self.delay = real, delay
        self.now = self.peak = self.calls = 0
        self.started = threading.Event()
        self.release = threading.Event()
        if not hold:
            self.release.set()
        self._lock = threading.Lock()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            self.now += 1
            self.calls += 1
            self.peak = max(self.peak, self.now)
        self.started.set()
        try:
            self.release.wait(timeout=30)
            time.sleep(self.delay)
            return self.real(*args, **kwargs)
        finally:
            with self._lock:
                self.now -= 1


@pytest.fixture
def gauge(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Gauge]]:
    made: list[Gauge] = []

    def make(**kwargs: Any) -> Gauge:
        g = Gauge(tlearn.infer.inputs.decode_image, **kwargs)
        monkeypatch.setattr(tlearn.infer.inputs, "decode_image", g)
        made.append(g)
        return g

    yield make
    for g in made:
        g.release.set()  # never leave a worker thread waiting


def batch(photo: bytes, n: int) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (f"{i}.jpg", photo, "image/jpeg")) for i in range(n)]


# 1. JSON that would crash the parser is refused before it is parsed.


@pytest.mark.parametrize(
    ("body", "error", "detail"),
    [
        (b"[" * 100_000, "json_too_deep", "nested more than 8 levels deep"),
        (b'{"image": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", "json_too_deep", "nested more than 8 levels deep"),
        (b'{"images": [' + b"{}," * 200_000 + b"{}]}", "json_too_complex", "more than"),
        (b"[" + b"0," * 500_000 + b"0]", "json_too_complex", "more than"),
    ],
    ids=["deep list", "deep inside an object", "many objects", "many numbers"],
)
def test_hostile_json_is_a_400_before_parsing(client: TestClient, body: bytes, error: str, detail: str) -> None:
    for path in ("/predict", "/predict/batch"):
        res = client.post(path, content=body, headers={"content-type": "application/json"})
        assert res.status_code == 400, res.text
        assert res.json()["error"] == error and detail in res.json()["detail"]


def test_json_strings_may_hold_brackets_and_escapes(client: TestClient, photo: bytes) -> None:
    """The depth is counted outside strings only: a base64 string escaped as some encoders do is accepted."""
    import base64

    encoded = base64.b64encode(photo).decode()
    body = json.dumps({"note": '[[[[[[[[[[{{{{{{{{ " \\', "image": encoded}).replace("/", "\\/")
    res = client.post("/predict", content=body.encode(), headers={"content-type": "application/json"})
    assert res.status_code == 200, res.text
    assert res.json()["predictions"][0]["class"] == "red_circle"


def test_deep_json_on_a_real_server_is_answered_and_the_server_stays_up(predictor: BasePredictor) -> None:
    with running_server(create_app(predictor)) as url, httpx.Client(base_url=url, timeout=30) as http:
        res = http.post("predict", content=b"[" * 200_000, headers={"content-type": "application/json"})
        assert res.status_code == 400 and res.json()["error"] == "json_too_deep"
        assert http.get("health").status_code == 200


def test_an_unexpected_error_is_a_json_500(
    predictor: BasePredictor, photo: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(predictor, "proba_of_batch", broken)
    res = TestClient(create_app(predictor), raise_server_exceptions=False).post(
        "/predict", content=photo, headers={"content-type": "image/jpeg"}
    )
    assert res.status_code == 500
    assert res.json() == {"error": "internal_error", "detail": "The server failed on this request (RuntimeError)."}
