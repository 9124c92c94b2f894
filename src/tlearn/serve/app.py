"""The prediction server: `create_app(predictor)` is a FastAPI app around one loaded model.

    GET  /                 a page to drop, choose or photograph an image and see its top-k classes
    POST /predict          one image: multipart field "file", JSON {"image": "<base64>"}, or the raw bytes
                           with Content-Type image/*  ->  {"file", "predictions": [{"class", "probability"}]}
    POST /predict/batch    up to `max_batch` images: multipart fields "files", or JSON {"images": [...]}
    GET  /health, /model   liveness; classes, backbone, input size, metrics, versions, limits

Bad input is the client's fault and is answered with a 4xx and {"error": code, "detail": message}:
an empty body (400), a file over `max_mb` (413), too many files (400), not an image (415), a
truncated or corrupt image (422), an image bomb (413, refused before decoding); see `errors.py`.
Bodies are counted as they arrive, so an oversized upload is cut off rather than read (`uploads.py`).
Decoding and inference run in worker threads: the event loop stays free to accept requests while
Pillow and the model work. The endpoints themselves are in `routes.py`.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import HTMLResponse

from tlearn.core.version import __version__
from tlearn.infer.predictor import BasePredictor
from tlearn.serve import routes
from tlearn.serve.errors import add_error_handlers

# A server decodes what strangers send: 50 MP is a 48 MP phone photo with room to spare, and a
# sixth of what a 100 MP PNG bomb would allocate (300 MB) per request.
SERVER_MAX_PIXELS = 50_000_000


def create_app(
    predictor: BasePredictor,
    *,
    max_mb: float = 10,
    max_batch: int = 16,
    top_k: int = 5,
    max_pixels: int = SERVER_MAX_PIXELS,
) -> FastAPI:
    """A FastAPI app serving `predictor` (loaded once, shared by every request).

    `max_mb` caps each image file, `max_batch` the images of one /predict/batch request, `top_k`
    the classes returned unless a request asks for another number (?top_k=N), `max_pixels` the
    size of image that is decoded at all.
    """
    config = predictor.config
    served = routes.Served(
        predictor=predictor,
        name=Path(predictor.source).name if predictor.source else config.backbone,
        page=resources.files("tlearn").joinpath("static/index.html").read_text(encoding="utf-8"),
        max_mb=max_mb,
        max_batch=max_batch,
        top_k=max(1, min(top_k, len(predictor.classes))),
        max_pixels=max_pixels,
    )
    app = FastAPI(
        title=f"tlearn: {served.name}",
        version=__version__,
        description=f"Image classification with {config.backbone} ({len(predictor.classes)} classes).",
    )
    app.state.served = served
    add_error_handlers(app)
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
    )
    app.add_api_route(
        "/predict/batch",
        routes.predict_batch,
        methods=["POST"],
        summary="Top-k classes of several images",
        openapi_extra=routes.request_body(batch=True),
    )
    return app
