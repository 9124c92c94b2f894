"""The prediction server: `create_app(predictor)` is a FastAPI app around one loaded model.

    GET  /                 a page to drop, choose or photograph an image and see its top-k classes
    POST /predict          one image: multipart field "file", JSON {"image": "<base64>"}, or the raw bytes
                           with Content-Type image/*  ->  {"file", "predictions": [{"class", "probability"}]}
                           plus "unknown" (true: none of the classes) and "unknown_score", when the bundle has them
    POST /predict/batch    up to `max_batch` images: multipart fields "files", or JSON {"images": [...]}
    GET  /health, /model   liveness; classes, backbone, input size, metrics, versions, limits
    GET  /docs             Swagger UI from local files (docs.py); /openapi.json the schema

Bad input is the client's fault and is answered with a 4xx and {"error": code, "detail": message}:
an empty body (400), a file over `max_mb` (413), too many files (400), not an image (415), a
truncated or corrupt image (422), an image bomb (413, refused before decoding), JSON nested too
deep (400); see `errors.py`. Bodies are counted as they arrive, so an oversized upload is cut off
rather than read (`uploads.py`). A server at its limits says so: 503 with Retry-After when
`max_pending` requests are in progress or their uploads fill `max_upload_mb`, 413 for more pixels
in one request than `max_batch_pixels`, 408 / 504 past `timeout` seconds (`limits.py`, `work.py`).
Decoding runs on fixed pools of threads (`threads`, and `large_threads` for large images), and the
network on a thread of its own, one pass at a time over the images of every request waiting
(`batching.py`; 503 past `max_queue` images queued): the event loop stays free to accept requests
while Pillow and the model work, and memory stays within the bound stated in `limits.py`. The
endpoints themselves are in `routes.py`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import HTMLResponse

from tlearn.core.version import __version__
from tlearn.infer.predictor import BasePredictor
from tlearn.serve import routes
from tlearn.serve.docs import add_docs
from tlearn.serve.errors import add_error_handlers
from tlearn.serve.limits import Limits
from tlearn.serve.pass_size import chosen_pass_size
from tlearn.serve.work import Work


def create_app(
    predictor: BasePredictor,
    *,
    top_k: int = 5,
    max_mb: float = Limits.max_mb,
    max_batch: int = Limits.max_batch,
    max_pixels: int = Limits.max_pixels,
    max_batch_pixels: int = Limits.max_batch_pixels,
    threads: int = Limits.threads,
    large_threads: int = Limits.large_threads,
    max_pending: int = Limits.max_pending,
    max_upload_mb: float = Limits.max_upload_mb,
    max_queue: int = Limits.max_queue,
    timeout: float = Limits.timeout,
    pass_size: int | None = None,
    explainer: BasePredictor | None = None,
) -> FastAPI:
    """A FastAPI app serving `predictor` (loaded once, shared by every request).

    Heatmaps (`?explain=true`) come from `explainer`, a PyTorch predictor of the same bundle (default:
    `predictor` itself when it runs PyTorch; an ONNX predictor alone serves no heatmaps).

    `top_k` is the classes returned unless a request asks for another number (?top_k=N); `pass_size` the
    images per forward pass (default: the size the engine runs fastest, measured here in about a second:
    see `pass_size.py`); the other keywords are the server's `Limits` (see there). Raises ConfigError for
    limits that make no sense.
    """
    config = predictor.config
    limits = Limits(
        max_mb=max_mb,
        max_batch=max_batch,
        max_pixels=max_pixels,
        max_batch_pixels=max_batch_pixels,
        threads=threads,
        large_threads=large_threads,
        max_pending=max_pending,
        max_upload_mb=max_upload_mb,
        max_queue=max_queue,
        timeout=timeout,
    )
    passes = chosen_pass_size(predictor, pass_size)
    served = routes.Served(
        predictor=predictor,
        name=Path(predictor.source).name if predictor.source else config.backbone,
        page=resources.files("tlearn").joinpath("static/index.html").read_text(encoding="utf-8"),
        top_k=max(1, min(top_k, len(predictor.classes))),
        limits=limits,
        work=Work(predictor, limits, passes, explainer or (predictor if predictor.engine == "torch" else None)),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await served.work.close()

    app = FastAPI(
        title=f"tlearn: {served.name}",
        version=__version__,
        description=f"Image classification with {config.backbone} ({len(predictor.classes)} classes).",
        lifespan=lifespan,
        docs_url=None,  # FastAPI's loads Swagger UI from a CDN: see docs.py
        redoc_url=None,
    )
    app.state.served = served
    add_error_handlers(app)
    add_docs(app)
    app.add_api_route("/", routes.index, response_class=HTMLResponse, include_in_schema=False)
    app.add_api_route("/health", routes.health, summary="Liveness: the model is loaded")
    app.add_api_route(
        "/model", routes.model, summary="What the model is: classes, backbone, input size, metrics, versions, limits"
    )
    app.add_api_route(
        "/predict",
        routes.predict,
        methods=["POST"],
        summary="Top-k classes of one image",
        openapi_extra=routes.request_body(batch=False),
        responses=routes.ERROR_RESPONSES,
    )
    app.add_api_route(
        "/predict/batch",
        routes.predict_batch,
        methods=["POST"],
        summary="Top-k classes of several images",
        openapi_extra=routes.request_body(batch=True),
        responses=routes.ERROR_RESPONSES,
    )
    return app
