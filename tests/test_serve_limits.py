"""`tlearn serve` under hostile or heavy load, and offline.

Every limit answers with a JSON 4xx/5xx that says why, never a crash, and the work in progress stays
within the stated bounds (images decoding at once, requests waiting, pixels per request, seconds per
request); /docs needs no network.
"""

from __future__ import annotations

import io
import json
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

import tlearn
import tlearn.infer.inputs
from tlearn.core.errors import ConfigError
from tlearn.infer.predictor import BasePredictor

pytest.importorskip("fastapi")
import httpx
from fastapi.testclient import TestClient

from test_serve import png_claiming, running_server
from tlearn.serve import docs
from tlearn.serve.app import create_app
from tlearn.serve.limits import Limits


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
    """Stands in for the decoder the server runs on its threads (`decode_eval_pixels`, through the predictor's
    `prepare_input`): counts the decodes running at once, and can hold them until released."""

    def __init__(
        self,
        real: Callable[..., Any],
        *,
        delay: float = 0.0,
        hold: bool = False,
        only: Callable[[bytes], bool] = lambda data: True,
    ) -> None:
        self.real, self.delay, self.only = real, delay, only
        self.now = self.peak = self.calls = 0
        self.started = threading.Event()
        self.release = threading.Event()
        if not hold:
            self.release.set()
        self._lock = threading.Lock()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not self.only(args[0]):
            return self.real(*args, **kwargs)
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
        g = Gauge(tlearn.infer.inputs.decode_eval_pixels, **kwargs)
        monkeypatch.setattr(tlearn.infer.inputs, "decode_eval_pixels", g)
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

    app = create_app(predictor)
    monkeypatch.setattr(predictor, "answer_of_batch", broken)
    res = TestClient(app, raise_server_exceptions=False).post(
        "/predict", content=photo, headers={"content-type": "image/jpeg"}
    )
    assert res.status_code == 500
    assert res.json() == {"error": "internal_error", "detail": "The server failed on this request (RuntimeError)."}


# 2. Bounded work: images decoding at once, requests in progress, pixels per request, time per request.


def test_at_most_threads_images_decode_at_once(
    predictor: BasePredictor, photo: bytes, gauge: Callable[..., Gauge]
) -> None:
    g = gauge(delay=0.05)
    app = create_app(predictor, max_batch=4, threads=2, max_pending=8)
    with running_server(app) as url:

        def one_client(k: int) -> int:
            with httpx.Client(base_url=url, timeout=30) as http:
                return http.post("predict/batch", files=batch(photo, 4)).status_code

        with ThreadPoolExecutor(4) as pool:
            codes = list(pool.map(one_client, range(4)))
    assert codes == [200] * 4
    assert g.calls == 16 and g.peak == 2  # 16 images from 4 clients at once, never more than 2 decoding


def big_png(side: int) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (side, side), 128).save(buf, "PNG")
    return buf.getvalue()


def test_large_decodes_leave_a_thread_for_small_images(
    predictor: BasePredictor, photo: bytes, gauge: Callable[..., Gauge]
) -> None:
    """While two 9 MP PNGs decode (held here), a photo is still answered: they get one of the two threads."""
    g = gauge(hold=True, only=lambda data: data[:4] == b"\x89PNG")
    app = create_app(predictor, threads=2, max_batch=4)
    heavy = [("files", (f"{i}.png", big_png(3000), "image/png")) for i in range(2)]
    with running_server(app) as url, httpx.Client(base_url=url, timeout=30) as http, ThreadPoolExecutor(1) as pool:
        batch_of_pngs = pool.submit(http.post, "predict/batch", files=heavy)
        assert g.started.wait(10)
        time.sleep(0.2)  # the second PNG would start now if it could
        res = http.post("predict", content=photo, headers={"content-type": "image/jpeg"}, timeout=5)
        assert res.status_code == 200 and res.json()["predictions"][0]["class"] == "red_circle"
        assert g.now == 1  # one PNG decoding, the other waiting for the one thread large images may use
        g.release.set()
        assert batch_of_pngs.result(timeout=30).status_code == 200
    assert g.calls == 2 and g.peak == 1


def test_a_full_server_answers_503_with_retry_after(
    predictor: BasePredictor, photo: bytes, gauge: Callable[..., Gauge]
) -> None:
    g = gauge(hold=True)
    app = create_app(predictor, threads=1, max_pending=1)
    with running_server(app) as url, httpx.Client(base_url=url, timeout=30) as http, ThreadPoolExecutor(1) as pool:
        first = pool.submit(http.post, "predict", content=photo, headers={"content-type": "image/jpeg"})
        assert g.started.wait(10)
        res = http.post("predict", content=photo, headers={"content-type": "image/jpeg"})
        assert res.status_code == 503, res.text
        assert res.json()["error"] == "busy" and "1 request" in res.json()["detail"]
        assert int(res.headers["retry-after"]) >= 1
        assert http.get("health").status_code == 200  # the model's page and status are not queued
        g.release.set()
        assert first.result(timeout=30).status_code == 200
        assert http.post("predict", content=photo, headers={"content-type": "image/jpeg"}).status_code == 200


def test_uploads_held_at_once_are_capped(predictor: BasePredictor, photo: bytes, gauge: Callable[..., Gauge]) -> None:
    """With 0.5 MB of uploads allowed, a 0.3 MB request waits (503) while another is in progress; a small one
    does not; and a request alone is taken whatever its size, up to its own limit."""
    g = gauge(hold=True)
    big = photo + bytes(300_000)  # a JPEG with trailing bytes: still decodes
    app = create_app(predictor, threads=1, max_upload_mb=0.5)
    post = {"headers": {"content-type": "image/jpeg"}, "timeout": 30}
    with running_server(app) as url, httpx.Client(base_url=url) as http, ThreadPoolExecutor(2) as pool:
        first = pool.submit(http.post, "predict", content=big, **post)
        assert g.started.wait(10)
        res = http.post("predict", content=big, **post)
        assert res.status_code == 503 and int(res.headers["retry-after"]) >= 1
        assert "holds 0.3 MB of uploads, and this one's 0.3 MB would pass its limit of 0.5 MB" in res.json()["detail"]
        small = pool.submit(http.post, "predict", content=photo, **post)  # admitted: waits for the thread
        time.sleep(0.3)
        g.release.set()
        assert first.result(timeout=30).status_code == 200 and small.result(timeout=30).status_code == 200
        alone = http.post("predict/batch", files=[("files", (f"{i}.jpg", big, "image/jpeg")) for i in range(3)])
        assert alone.status_code == 200  # 0.9 MB, over the 0.5 MB, but nothing else is held


def test_the_pixels_of_a_batch_are_capped_before_decoding(
    predictor: BasePredictor, gauge: Callable[..., Gauge]
) -> None:
    """16 images of 49 MP are each under the 50 MP limit; together they are refused, and nothing is decoded."""
    g = gauge()
    c = TestClient(create_app(predictor, max_batch=16, max_batch_pixels=200_000_000))
    bombs = [("files", (f"{i}.png", png_claiming(7000, 7000), "image/png")) for i in range(16)]
    res = c.post("/predict/batch", files=bombs)
    assert res.status_code == 413, res.text
    assert res.json() == {
        "error": "too_many_pixels",
        "detail": "The images of this request hold 784 megapixels together, over the 200 MP limit of one "
        "request: send fewer or smaller images per request.",
    }
    assert g.calls == 0
    # An image over the per-image limit is refused on its own without decoding, so it does not count.
    res = c.post("/predict/batch", files=[bombs[0], ("files", ("big.png", png_claiming(10_000, 10_000), "image/png"))])
    assert res.status_code == 422  # neither is usable: a 1-pixel body claiming 49 MP is corrupt; 100 MP is a bomb
    assert [r["error"] for r in res.json()["results"]] == ["corrupt_image", "too_many_pixels"]


def test_a_slow_request_is_a_504_and_the_next_one_is_served(
    predictor: BasePredictor, photo: bytes, gauge: Callable[..., Gauge]
) -> None:
    g = gauge(hold=True)  # the decode runs until released: only the deadline can answer
    c = TestClient(create_app(predictor, threads=1, timeout=0.3))
    res = c.post("/predict", content=photo, headers={"content-type": "image/jpeg"})
    assert res.status_code == 504
    assert res.json() == {
        "error": "timeout",
        "detail": "The request took longer than the server's limit of 0.3 s: try again, or send fewer or "
        "smaller images.",
    }
    assert g.now == 1  # a running decode cannot be interrupted: it still holds the one thread
    g.release.set()
    deadline = time.monotonic() + 10
    while g.now and time.monotonic() < deadline:
        time.sleep(0.01)
    assert c.post("/predict", content=photo, headers={"content-type": "image/jpeg"}).status_code == 200


def test_a_body_that_stops_arriving_is_a_408(predictor: BasePredictor) -> None:
    with running_server(create_app(predictor, timeout=0.5)) as url:
        port = int(url.rsplit(":", 1)[1].strip("/"))
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(
                b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: 5000\r\n\r\n"
            )
            sock.sendall(b"\xff\xd8" + b"\0" * 100)  # then nothing more
            answer = b""
            while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
                chunk = sock.recv(4096)
                if not chunk:
                    break
                answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408")
    assert json.loads(body)["error"] == "body_timeout"


def test_the_app_serves_again_after_its_lifespan_ends(predictor: BasePredictor, photo: bytes) -> None:
    """Shutdown stops the worker threads; an app started again (tests, some ASGI hosts) makes new ones."""
    app = create_app(predictor)
    for _ in range(2):
        with TestClient(app) as c:  # runs startup and shutdown
            assert c.post("/predict", content=photo, headers={"content-type": "image/jpeg"}).status_code == 200


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_freed_image_memory_goes_back_to_the_system() -> None:
    """After decoding on a worker thread, the memory is the system's again. glibc, left to itself, keeps
    freed blocks of the size of Pillow's (16 MB) and the next decode adds to them: measured, 210 MB kept
    after eight 9 MP PNGs in a row here, and in the server four 49 MP PNGs in a row peaked at +2.1 GB and
    kept 1 GB; with `give_back_freed_memory()` after each, as the server does, nothing is kept here."""
    script = """
import io
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
import torch  # loaded in a server before any decode (decoding shrinks with it)
from PIL import Image
from tlearn.core.malloc import give_back_freed_memory
from tlearn.data.images import decode_image
data = []
for mode, fill in (("L", 128), ("RGB", (1, 2, 3)), ("RGBA", (1, 2, 3, 4)), ("I;16", 128)):
    buf = io.BytesIO()
    Image.new(mode, (3000, 3000), fill).save(buf, "PNG")
    data.append(buf.getvalue())
def rss_mb():
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0]) / 1024
def decode(d):
    decode_image(d, short_side=64)
    give_back_freed_memory()
before = rss_mb()
with ThreadPoolExecutor(1) as pool:
    for d in data * 2:
        pool.submit(decode, d).result()
    print(rss_mb() - before)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    assert float(out.stdout) < 50, out.stdout  # MB still held after the decodes


def test_the_memory_of_large_decodes_is_given_back_after_each(
    predictor: BasePredictor, photo: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server gives freed memory back after each decode of an image over 1 MP (as decoded), and not after
    small ones, where it would cost more than they leave (and the network's memory is left to glibc)."""
    import tlearn.serve.work

    trims: list[int] = []
    monkeypatch.setattr(tlearn.serve.work, "give_back_freed_memory", lambda: trims.append(1) or True)
    buf = io.BytesIO()
    Image.new("RGB", (1500, 1000), (200, 30, 30)).save(buf, "PNG")  # 1.5 MP
    c = TestClient(create_app(predictor, pass_size=1))
    assert c.post("/predict", content=photo, headers={"content-type": "image/jpeg"}).status_code == 200
    assert trims == []
    assert c.post("/predict", content=buf.getvalue(), headers={"content-type": "image/png"}).status_code == 200
    assert trims == [1]


def test_limits_are_checked_together_and_name_the_flags() -> None:
    with pytest.raises(ConfigError) as err:
        Limits(threads=0, large_threads=0, max_pending=0, max_upload_mb=0, max_queue=0, timeout=0, max_batch_pixels=1)
    message = str(err.value)
    flags = ("--threads", "--large-threads", "--max-pending", "--max-upload-mb", "--max-queue", "--timeout")
    for flag in (*flags, "--max-batch-mp"):
        assert flag in message
    assert "Got 0" in message


def test_model_lists_every_limit(client: TestClient) -> None:
    limits = client.get("/model").json()["limits"]
    assert limits == {
        "max_mb": 10,
        "max_batch": 4,
        "max_megapixels": 50.0,
        "max_batch_megapixels": 200.0,
        "threads": Limits().threads,
        "large_threads": 1,
        "max_pending": 16,
        "max_upload_mb": 256,
        "max_queue": 64,
        "timeout_seconds": 30.0,
    }


# 3. /docs works offline.


def test_docs_are_served_from_local_assets(client: TestClient) -> None:
    pytest.importorskip("fastapi_offline")
    page = client.get("/docs")
    assert page.status_code == 200 and "SwaggerUIBundle" in page.text
    links = re.findall(r"""(?:src|href|url)\s*[=:]\s*["']([^"']+)["']""", page.text)
    assert links and all(not re.match(r"(https?:)?//", link) for link in links), links  # nothing from a CDN
    assert "validatorUrl" in page.text and '"validatorUrl": null' in page.text  # no badge from validator.swagger.io
    for name, kind in (("swagger-ui-bundle.js", "javascript"), ("swagger-ui.css", "text/css")):
        asset = client.get(f"/docs/{name}")
        assert asset.status_code == 200 and kind in asset.headers["content-type"] and len(asset.content) > 10_000
    assert client.get("/docs/secrets.txt").status_code == 404
    assert client.get("/docs/..%2Fapp.py").status_code == 404
    assert client.get("/redoc").status_code == 404  # its script would come from a CDN
    assert client.get("/openapi.json").status_code == 200


def test_docs_without_the_assets_is_a_page_that_links_the_schema(
    predictor: BasePredictor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(docs, "swagger_assets", lambda: None)
    c = TestClient(create_app(predictor))
    page = c.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'href="openapi.json"' in page.text and "pip install fastapi-offline" in page.text
    assert "<script" not in page.text and not re.search(r"""(src|href)=["']?(https?:)?//""", page.text)
    assert c.get("/docs/swagger-ui-bundle.js").status_code == 404
