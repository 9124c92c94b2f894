"""`tlearn serve`: every endpoint, every kind of bad input (a 4xx that says why, never a 500), and load."""

from __future__ import annotations

import base64
import io
import re
import socket
import struct
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import tlearn
import tlearn.infer.inputs
from tlearn.core.errors import EmptyFile, ImageError, ImageTooLarge, NotAnImage, TruncatedImage
from tlearn.infer.predictor import BasePredictor

fastapi = pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from tlearn.serve.app import create_app  # noqa: E402

MAX_BATCH = 3


@pytest.fixture(scope="module")
def predictor(tiny_bundle: Path) -> BasePredictor:
    return tlearn.load(tiny_bundle)


@pytest.fixture(scope="module")
def client(predictor: BasePredictor) -> TestClient:
    return TestClient(create_app(predictor, max_mb=0.25, max_batch=MAX_BATCH, top_k=3))


@pytest.fixture(scope="module")
def photo(shapes_master: Path) -> bytes:
    return (shapes_master / "red_circle" / "red_circle_001.jpg").read_bytes()


def png_claiming(width: int, height: int) -> bytes:
    """A 70-byte PNG whose header claims width x height pixels: what a decompression bomb looks like."""
    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    data[16:24] = struct.pack(">II", width, height)  # IHDR width, height
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))  # IHDR checksum
    return bytes(data)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running_server(app: Any) -> Iterator[str]:
    """Serve `app` with uvicorn on a free loopback port, in a thread; yields the base URL."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{server.config.port}/"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_health_and_model(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok", "engine": "torch"}
    info = client.get("/model").json()
    assert info["name"] == "bundle" and info["backbone"] == "test_efficientnet"
    assert info["classes"] == ["blue_triangle", "green_square", "red_circle", "yellow_star"]
    assert info["input_size"] == [64, 64] and info["version"] == tlearn.__version__
    assert set(info["metrics"]) == {"val", "test"} and 0.5 <= info["metrics"]["test"]["accuracy"] <= 1
    limits = info["limits"]
    assert (limits["max_mb"], limits["max_batch"], limits["max_megapixels"]) == (0.25, MAX_BATCH, 50.0)


def test_page_is_self_contained(client: TestClient) -> None:
    res = client.get("/")
    assert res.status_code == 200 and res.headers["content-type"].startswith("text/html")
    page = res.text
    assert '"predict?explain=true" : "predict"' in page and 'fetch("model")' in page  # relative: works under a prefix
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)  # no external scripts, styles, fonts
    assert "@import" not in page and "url(http" not in page
    assert 'capture="environment"' in page  # phones offer the camera


def test_docs_describe_the_endpoints(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert {"/predict", "/predict/batch", "/health", "/model"} <= set(spec["paths"])
    body = spec["paths"]["/predict"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "application/json", "image/*"} <= set(body)
    for path in ("/predict", "/predict/batch"):
        answers = spec["paths"][path]["post"]["responses"]
        assert {"200", "4XX", "503", "504"} <= set(answers) and "422" not in answers  # FastAPI's own 422 is not ours
        assert answers["4XX"]["content"]["application/json"]["schema"]["required"] == ["error", "detail"]


def test_multipart_json_and_raw_bytes_give_the_python_answer(
    client: TestClient, predictor: BasePredictor, photo: bytes
) -> None:
    expected = predictor.predict_proba(photo)[0]
    answers = [
        client.post("/predict", files={"file": ("circle.jpg", photo, "image/jpeg")}),
        client.post("/predict", json={"image": base64.b64encode(photo).decode()}),
        client.post("/predict", json={"image": "data:image/jpeg;base64," + base64.b64encode(photo).decode()}),
        client.post("/predict", content=photo, headers={"content-type": "image/jpeg"}),
    ]
    for res in answers:
        assert res.status_code == 200, res.text
        top = res.json()["predictions"]
        assert len(top) == 3 and top[0]["class"] == "red_circle"
        for p in top:
            assert p["probability"] == pytest.approx(expected[predictor.classes.index(p["class"])], abs=1e-6)
    assert answers[0].json()["file"] == "circle.jpg"
    assert (
        len(client.post("/predict?top_k=1", content=photo, headers={"content-type": "image/png"}).json()["predictions"])
        == 1
    )
    assert (
        len(
            client.post("/predict?top_k=99", content=photo, headers={"content-type": "image/png"}).json()["predictions"]
        )
        == 4
    )


def test_batch_answers_each_file_in_order(client: TestClient, shapes_master: Path) -> None:
    names = ["blue_triangle", "green_square", "yellow_star"]
    files = [("files", (f"{n}.jpg", (shapes_master / n / f"{n}_002.jpg").read_bytes(), "image/jpeg")) for n in names]
    res = client.post("/predict/batch", files=files)
    assert res.status_code == 200, res.text
    results = res.json()["results"]
    assert [r["file"] for r in results] == [f"{n}.jpg" for n in names]
    assert [r["predictions"][0]["class"] for r in results] == names
    as_json = client.post(
        "/predict/batch", json={"images": [base64.b64encode(f[1][1]).decode() for f in files]}
    ).json()["results"]
    assert [r["predictions"] for r in as_json] == [r["predictions"] for r in results]


def test_batch_with_a_broken_file_answers_the_others(client: TestClient, photo: bytes) -> None:
    files = [
        ("files", ("good.jpg", photo, "image/jpeg")),
        ("files", ("notes.jpg", b"not a picture", "image/jpeg")),
        ("files", ("half.jpg", photo[: len(photo) // 2], "image/jpeg")),
    ]
    res = client.post("/predict/batch", files=files)
    assert res.status_code == 200
    good, notes, half = res.json()["results"]
    assert good["predictions"][0]["class"] == "red_circle"
    assert (notes["status"], notes["error"]) == (415, "not_an_image") and notes["detail"].startswith("notes.jpg: ")
    assert (half["status"], half["error"]) == (422, "corrupt_image")


def test_batch_limits(client: TestClient, photo: bytes) -> None:
    too_many = [("files", (f"{i}.jpg", photo, "image/jpeg")) for i in range(MAX_BATCH + 1)]
    res = client.post("/predict/batch", files=too_many)
    assert res.status_code == 400
    assert res.json() == {
        "error": "too_many_files",
        "detail": f"A request may hold at most {MAX_BATCH} images; send the rest in another.",
    }
    res = client.post("/predict/batch", json={"images": [base64.b64encode(photo).decode()] * (MAX_BATCH + 1)})
    assert res.status_code == 400 and res.json()["error"] == "too_many_files"
    res = client.post("/predict/batch", files=[("files", ("a.txt", b"hello", "text/plain"))])
    assert res.status_code == 415 and res.json()["results"][0]["error"] == "not_an_image"  # nothing to answer
    res = client.post(
        "/predict", files=[("file", ("a.jpg", photo, "image/jpeg")), ("file", ("b.jpg", photo, "image/jpeg"))]
    )
    assert res.status_code == 400 and res.json()["error"] == "too_many_files"


BAD_INPUTS = {
    "not an image": (
        {"files": {"file": ("notes.txt", b"just some words", "text/plain")}},
        415, "not_an_image", "notes.txt: not an image",
    ),
    "truncated image": (
        {"files": {"file": ("cut.jpg", "PHOTO_HALF", "image/jpeg")}},
        422, "corrupt_image", "cut.jpg: truncated or corrupt",
    ),
    "empty body": ({"content": b""}, 400, "empty_body", "The request has no body"),
    "empty file": (
        {"files": {"file": ("none.jpg", b"", "image/jpeg")}}, 400, "empty_file", "none.jpg: the file is empty",
    ),
    "form without a file": (
        {
            "content": b'--b\r\nContent-Disposition: form-data; name="note"\r\n\r\nhello\r\n--b--\r\n',
            "headers": {"content-type": "multipart/form-data; boundary=b"},
        },
        400, "no_file", "put the image in the field 'file'",
    ),
    "file over the limit": (
        {"files": {"file": ("big.jpg", b"\xff" * 300_000, "image/jpeg")}},
        413, "too_large", "big.jpg: 0.3 MB is over the 0.25 MB limit",
    ),
    "declared body over the limit": (
        {"content": b"\xff" * 400_000, "headers": {"content-type": "image/jpeg"}},
        413, "too_large", "over the size limit",
    ),
    "streamed body over the limit": (  # no Content-Length: the body is cut off as it arrives
        {"content": "CHUNKS", "headers": {"content-type": "image/jpeg"}},
        413, "too_large", "over the size limit",
    ),
    "image bomb": (
        {"content": png_claiming(10_000, 10_000), "headers": {"content-type": "image/png"}},
        413, "too_many_pixels", "10000 x 10000 = 100 megapixels, over the 50 MP limit",
    ),
    "bigger image bomb": (
        {"content": png_claiming(30_000, 30_000), "headers": {"content-type": "image/png"}},
        413, "too_many_pixels", "decompression bomb",
    ),
    "bad base64": ({"json": {"image": "not base64!"}}, 400, "bad_base64", "Image 1 is not valid base64"),
    "data URL without data": (
        {"json": {"image": "data:image/png"}}, 400, "bad_base64", "Image 1 is a data: URL without a comma",
    ),
    "bad JSON": ({"content": b"{", "headers": {"content-type": "application/json"}}, 400, "bad_json", "not valid JSON"),
    "JSON without an image": ({"json": {"picture": "abc"}}, 400, "bad_json", 'Expected {"image": "<base64>"}'),
    "other content type": (
        {"content": b"hello", "headers": {"content-type": "text/plain"}},
        415, "unsupported_media_type", "Cannot read a request of type 'text/plain'",
    ),
    "broken multipart": (
        {"content": b"--x\r\ngarbage", "headers": {"content-type": "multipart/form-data; boundary=y"}},
        400, "bad_multipart", "Cannot parse the multipart body",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_a_4xx_that_says_what_was_wrong(client: TestClient, photo: bytes, case: str) -> None:
    kwargs, status, error, detail = BAD_INPUTS[case]
    kwargs = dict(kwargs)
    if kwargs.get("content") == "CHUNKS":
        kwargs["content"] = (b"\xff" * 65_536 for _ in range(8))
    if "files" in kwargs and kwargs["files"]["file"][1] == "PHOTO_HALF":
        kwargs["files"] = {"file": ("cut.jpg", photo[: len(photo) // 2], "image/jpeg")}
    res = client.post("/predict", **kwargs)
    assert res.status_code == status, res.text
    assert res.json()["error"] == error
    assert detail in res.json()["detail"]


@pytest.mark.parametrize(
    ("kind", "status", "error"),
    [
        (EmptyFile, 400, "empty_file"),
        (NotAnImage, 415, "not_an_image"),
        (ImageTooLarge, 413, "too_many_pixels"),
        (TruncatedImage, 422, "corrupt_image"),
        (ImageError, 422, "bad_image"),
    ],
)
def test_the_status_says_why_by_the_type_of_the_error_not_its_words(
    client: TestClient, photo: bytes, monkeypatch: pytest.MonkeyPatch, kind: type[ImageError], status: int, error: str
) -> None:
    """Rewording a decoder message does not change the API: the status comes from the error's type."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise kind("reworded: no known prefix here")

    monkeypatch.setattr(tlearn.infer.inputs, "decode_eval_pixels", refuse)
    res = client.post("/predict", files={"file": ("a.jpg", photo, "image/jpeg")})
    assert res.status_code == status
    assert res.json() == {"error": error, "detail": "a.jpg: reworded: no known prefix here."}
    batch = client.post("/predict/batch", files=[("files", ("a.jpg", photo, "image/jpeg"))])
    assert batch.status_code == status and batch.json()["results"][0]["status"] == status


def test_wrong_paths_and_parameters_are_json_too(client: TestClient, photo: bytes) -> None:
    res = client.get("/nothing-here")
    assert res.status_code == 404 and res.json() == {"error": "not_found", "detail": "Not Found"}
    res = client.post("/predict?top_k=zero", content=photo, headers={"content-type": "image/jpeg"})
    assert res.status_code == 422 and res.json()["error"] == "invalid_request" and "top_k" in res.json()["detail"]
    res = client.get("/predict")
    assert res.status_code == 405 and res.json()["error"] == "method_not_allowed"


def test_load_on_loopback(predictor: BasePredictor, photo: bytes) -> None:
    """200 requests from 8 concurrent clients against a real uvicorn server: no errors; prints requests/s."""
    import httpx

    n, clients = 200, 8
    with running_server(create_app(predictor)) as url:

        def client_loop(k: int) -> list[int]:
            with httpx.Client(base_url=url, timeout=60) as http:
                return [
                    http.post("predict", files={"file": (f"{k}-{i}.jpg", photo, "image/jpeg")}).status_code
                    for i in range(n // clients)
                ]

        start = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            codes = [c for batch in pool.map(client_loop, range(clients)) for c in batch]
        seconds = time.perf_counter() - start
        with httpx.Client(base_url=url) as http:
            assert http.get("health").status_code == 200  # still up
    print(f"\nserve load test: {n} requests, {clients} clients, {n / seconds:.0f} requests/s")
    assert codes == [200] * n


def test_cli_serves_on_loopback_and_warns_about_open_hosts(  # type: ignore[no-untyped-def]
    run_cli, tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uvicorn

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append({"app": app, **kw}))
    port = free_port()
    res = run_cli("serve", tiny_bundle, "--port", port)
    assert res.code == 0, res.err
    assert calls[-1]["host"] == "127.0.0.1" and calls[-1]["port"] == port
    assert f"at http://127.0.0.1:{port}/" in res.out and "no authentication" not in res.out
    page = TestClient(calls[-1]["app"]).get("/")
    assert page.status_code == 200

    assert calls[-1]["timeout_keep_alive"] == 5 and calls[-1]["limit_concurrency"] == 64  # idle connections close

    res = run_cli(
        "serve", tiny_bundle, "--host", "0.0.0.0", "--port", port, "--max-mb", "2",
        "--threads", "1", "--large-threads", "2", "--max-pending", "20", "--max-upload-mb", "100",
        "--timeout", "12.5", "--max-batch-mp", "60", "--pass-size", "3",
    )  # fmt: skip
    assert res.code == 0, res.err
    assert calls[-1]["host"] == "0.0.0.0" and calls[-1]["limit_concurrency"] == 80
    assert "Listening on 0.0.0.0: any machine that can reach this one can use the model" in res.out
    assert "onnx engine, passes of 3 images; heatmaps in PyTorch" in " ".join(res.out.split())
    assert TestClient(calls[-1]["app"]).get("/model").json()["forward_pass"] == {
        "images": 3,
        "measured_images_per_second": {},
    }
    limits = TestClient(calls[-1]["app"]).get("/model").json()["limits"]
    assert limits["max_mb"] == 2 and limits["threads"] == 1 and limits["max_pending"] == 20
    assert limits["large_threads"] == 2 and limits["max_upload_mb"] == 100
    assert limits["timeout_seconds"] == 12.5 and limits["max_batch_megapixels"] == 60


def test_cli_says_every_bad_limit_at_once_before_loading(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    res = run_cli("serve", tmp_path / "no-bundle", "--threads", "0", "--timeout", "0", "--max-batch-mp", "10")
    assert res.code == 1
    assert "--threads must be 1 or more. Got 0." in res.err and "--timeout must be more than 0 seconds" in res.err
    assert "--max-batch-mp must be at least the per-image limit (50 MP)" in res.err
    assert "no-bundle" not in res.err  # the limits are checked first: no model was looked for


def test_cli_says_when_the_port_is_taken(run_cli, tiny_bundle: Path) -> None:  # type: ignore[no-untyped-def]
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        res = run_cli("serve", tiny_bundle, "--port", port)
    assert res.code == 1
    assert f"Cannot listen on 127.0.0.1:{port}" in res.err and "--port" in res.err


def test_cli_names_the_extra_when_fastapi_is_missing(  # type: ignore[no-untyped-def]
    run_cli, tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "fastapi", None)
    monkeypatch.delitem(sys.modules, "tlearn.serve.app", raising=False)
    res = run_cli("serve", tiny_bundle)
    assert res.code == 1
    assert "needs the Python package 'fastapi'" in res.err and "pip install 'tlearn[serve]'" in res.err


def test_onnx_engine_serves_the_same_answers(tiny_bundle: Path, predictor: BasePredictor, photo: bytes) -> None:
    pytest.importorskip("onnxruntime")
    onnx_client = TestClient(create_app(tlearn.load(tiny_bundle, engine="onnx")))
    assert onnx_client.get("/health").json()["engine"] == "onnx"
    top = onnx_client.post("/predict", content=photo, headers={"content-type": "image/jpeg"}).json()["predictions"]
    expected = predictor.predict_proba(photo)[0]
    got = np.array([p["probability"] for p in top])
    np.testing.assert_allclose(got, [expected[predictor.classes.index(p["class"])] for p in top], atol=1e-4)
