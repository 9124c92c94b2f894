"""The prediction server: `create_app(predictor)` is a FastAPI app around one loaded model.

    GET  /                 a page to drop, choose or photograph an image and see its top-k classes
    POST /predict          one image: multipart field "file", JSON {"image": "<base64>"}, or the raw bytes
                           with Content-Type image/*  ->  {"file", "predictions": [{"class", "probability"}]}
    POST /predict/batch    up to `max_batch` images: multipart fields "files", or JSON {"images": [...]}
    GET  /health, /model   liveness; classes, backbone, input size, metrics, versions, limits

Bad input is the client's fault and is answered with a 4xx and {"error": code, "detail": message}:
an empty body (400), a file over `max_mb` (413), too many files (400), not an image (415), a
truncated or corrupt image (422), an image bomb (413, refused before decoding). Bodies are counted
as they arrive, so an oversized upload is cut off rather than read. Decoding and inference run in
worker threads: the event loop stays free to accept requests while Pillow and the model work.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from tlearn.core.version import __version__
from tlearn.infer.predictor import BasePredictor, Failure, Prediction

MB = 1024 * 1024
# A server decodes what strangers send: 50 MP is a 48 MP phone photo with room to spare, and a
# sixth of what a 100 MP PNG bomb would allocate (300 MB) per request.
SERVER_MAX_PIXELS = 50_000_000
_ENVELOPE = 64 * 1024  # multipart boundaries and headers, JSON keys: the part of a body that is not the image


@dataclass(frozen=True)
class Upload:
    name: str
    data: bytes


class ApiError(Exception):
    """A request the server refuses: HTTP `status`, a short machine-readable `error`, a sentence for people."""

    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.error, self.detail = status, error, detail

    def to_dict(self) -> dict[str, Any]:
        return {"error": self.error, "detail": self.detail, "status": self.status}


class _BodyTooLarge(Exception):
    pass


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
    name = Path(predictor.source).name if predictor.source else config.backbone
    file_limit = int(max_mb * MB)
    default_k = max(1, min(top_k, len(predictor.classes)))
    page = resources.files("tlearn").joinpath("static/index.html").read_text(encoding="utf-8")
    app = FastAPI(
        title=f"tlearn: {name}",
        version=__version__,
        description=f"Image classification with {config.backbone} ({len(predictor.classes)} classes).",
    )

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"error": exc.error, "detail": exc.detail}, status_code=exc.status)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
        error = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "bad_request")
        return JSONResponse({"error": error, "detail": str(exc.detail)}, status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return JSONResponse({"error": "invalid_request", "detail": problems}, status_code=422)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/health", summary="Liveness: the model is loaded")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "engine": predictor.engine}

    @app.get("/model", summary="What the model is: classes, backbone, input size, metrics, versions, limits")
    async def model() -> dict[str, Any]:
        return {
            "name": name,
            "backbone": config.backbone,
            "method": config.method,
            "classes": list(predictor.classes),
            "input_size": list(config.preprocessing.input_size),
            "flip_tta": config.flip_tta,
            "engine": predictor.engine,
            "metrics": _headline_metrics(config.metrics),
            "version": __version__,
            "trained_with": config.versions.get("tlearn"),
            "created": config.created,
            "top_k": default_k,
            "limits": {"max_mb": max_mb, "max_batch": max_batch, "max_megapixels": max_pixels / 1e6},
        }

    async def run(uploads: list[Upload], k: int) -> list[dict[str, Any]]:
        """One result per upload, in order: {"file", "predictions"} or {"file", "error", "detail", "status"}."""
        problems = {i: p for i, u in enumerate(uploads) if (p := _size_problem(u, file_limit, max_mb))}
        ok = [u for i, u in enumerate(uploads) if i not in problems]
        found = await run_in_threadpool(
            predictor.predict_many,
            [u.data for u in ok],
            names=[str(i) for i in range(len(ok))],  # positions: upload names may repeat
            top_k=k,
            max_pixels=max_pixels,
        )
        every: list[Prediction | Failure] = [*found.items, *found.failures]
        outcome = {int(x.source): x for x in every}
        out, j = [], 0
        for i, u in enumerate(uploads):
            if i in problems:
                out.append({"file": u.name, **problems[i].to_dict()})
                continue
            item, j = outcome[j], j + 1
            if isinstance(item, Prediction):
                out.append({"file": u.name, "predictions": item.to_dict()["predictions"]})
            else:
                out.append({"file": u.name, **_image_error(u.name, item.reason).to_dict()})
        return out

    k_query = Query(None, ge=1, description="Classes to return (default: the server's; at most all classes).")

    @app.post("/predict", summary="Top-k classes of one image", openapi_extra=_request_body(batch=False))
    async def predict(request: Request, top_k: int | None = k_query) -> dict[str, Any]:
        start = time.perf_counter()
        uploads = await _read_uploads(request, file_limit=file_limit, max_files=1, field="file")
        if len(uploads) > 1:
            raise ApiError(400, "too_many_files", f"/predict takes one image, got {len(uploads)}: use /predict/batch.")
        (result,) = await run(uploads, top_k or default_k)
        if "error" in result:
            raise ApiError(result["status"], result["error"], result["detail"])
        return {**result, "seconds": round(time.perf_counter() - start, 4)}

    @app.post("/predict/batch", summary="Top-k classes of several images", openapi_extra=_request_body(batch=True))
    async def predict_batch(request: Request, top_k: int | None = k_query) -> Any:
        start = time.perf_counter()
        uploads = await _read_uploads(request, file_limit=file_limit, max_files=max_batch, field="files")
        results = await run(uploads, top_k or default_k)
        doc = {"results": results, "seconds": round(time.perf_counter() - start, 4)}
        if all("error" in r for r in results):  # nothing to show: the request as a whole failed
            first = results[0]
            return JSONResponse({"error": first["error"], "detail": first["detail"], **doc}, first["status"])
        return doc

    return app


async def _read_uploads(request: Request, *, file_limit: int, max_files: int, field: str) -> list[Upload]:
    """The images of a request, read with the body capped at what `max_files` files of `file_limit` need."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    # base64 makes JSON 4/3 the size of the images it carries.
    body_limit = (file_limit * 4 // 3 if kind == "application/json" else file_limit) * max_files + _ENVELOPE
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > body_limit:
        raise _too_large(body_limit)
    if declared == "0" or (not kind and not declared):
        raise ApiError(400, "empty_body", "The request has no body: send an image.")
    capped = Request(request.scope, receive=_capped_receive(request.receive, body_limit))
    try:
        if kind == "multipart/form-data":
            return await _multipart(capped, max_files=max_files, field=field)
        if kind == "application/json":
            return _from_json(await capped.body(), max_files=max_files)
        if kind.startswith("image/") or kind == "application/octet-stream":
            return [Upload("upload", await capped.body())]
    except _BodyTooLarge:
        raise _too_large(body_limit) from None
    raise ApiError(
        415,
        "unsupported_media_type",
        f"Cannot read a request of type {kind or '(none)'!r}: send multipart/form-data with the image in "
        f"'{field}', JSON with base64, or the image bytes with Content-Type image/*.",
    )


async def _multipart(request: Request, *, max_files: int, field: str) -> list[Upload]:
    try:
        form = await request.form(max_files=max_files, max_fields=8)
    except HTTPException as exc:  # Starlette's own limits and parse errors
        if "Too many files" in str(exc.detail):
            raise ApiError(
                400, "too_many_files", f"A request may hold at most {max_files} image(s); send the rest in another."
            ) from None
        raise ApiError(400, "bad_multipart", f"Cannot parse the multipart body: {exc.detail}") from None
    try:
        files = [v for _, v in form.multi_items() if isinstance(v, UploadFile)]
        if not files:
            raise ApiError(400, "no_file", f"The form has no file: put the image in the field '{field}'.")
        return [Upload(f.filename or f"file {i + 1}", await f.read()) for i, f in enumerate(files)]
    finally:
        await form.close()


def _from_json(body: bytes, *, max_files: int) -> list[Upload]:
    if not body.strip():
        raise ApiError(400, "empty_body", "The request has no body: send an image.")
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as err:
        raise ApiError(400, "bad_json", f"The body is not valid JSON: {err}.") from None
    if isinstance(doc, dict) and isinstance(doc.get("image"), str):
        encoded = [doc["image"]]
    elif isinstance(doc, dict) and isinstance(doc.get("images"), list):
        encoded = doc["images"]
    else:
        raise ApiError(400, "bad_json", 'Expected {"image": "<base64>"} or {"images": ["<base64>", ...]}.')
    if not encoded:
        raise ApiError(400, "no_file", 'The list "images" is empty.')
    if len(encoded) > max_files:
        raise ApiError(400, "too_many_files", f"A request may hold at most {max_files} image(s); got {len(encoded)}.")
    return [Upload(f"image {i + 1}", _b64decode(item, i + 1)) for i, item in enumerate(encoded)]


def _b64decode(item: Any, number: int) -> bytes:
    if not isinstance(item, str):
        raise ApiError(400, "bad_base64", f"Image {number} is not a base64 string.")
    text = item.split(",", 1)[1] if item.startswith("data:") else item  # a data: URL from a browser
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, "bad_base64", f"Image {number} is not valid base64.") from None


Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]


def _capped_receive(receive: Receive, limit: int) -> Receive:
    """`receive`, raising _BodyTooLarge as soon as the body passes `limit` bytes (a body may lack a length)."""
    seen = 0

    async def capped() -> MutableMapping[str, Any]:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise _BodyTooLarge
        return message

    return capped


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "too_large", f"The request is over the size limit ({limit / MB:.1f} MB with this many files).")


def _size_problem(upload: Upload, file_limit: int, max_mb: float) -> ApiError | None:
    if not upload.data:
        return ApiError(400, "empty_file", f"{upload.name}: the file is empty (0 bytes).")
    if len(upload.data) > file_limit:
        return ApiError(
            413, "too_large", f"{upload.name}: {len(upload.data) / MB:.1f} MB is over the {max_mb:g} MB limit."
        )
    return None


# The decoder's reasons (tlearn.data.images) -> status and code.
_REASONS = (
    ("file is empty", 400, "empty_file"),
    ("not an image", 415, "not_an_image"),
    ("image is", 413, "too_many_pixels"),  # "image is W x H = N megapixels, over the limit"
    ("refused as a possible decompression bomb", 413, "too_many_pixels"),
    ("truncated or corrupt", 422, "corrupt_image"),
)


def _image_error(name: str, reason: str) -> ApiError:
    status, error = next(((s, e) for prefix, s, e in _REASONS if reason.startswith(prefix)), (422, "bad_image"))
    return ApiError(status, error, f"{name}: {reason}.")


def _headline_metrics(metrics: dict[str, Any]) -> dict[str, dict[str, float]]:
    keep = ("n", "accuracy", "balanced_accuracy", "macro_f1")
    return {part: {k: m[k] for k in keep if k in m} for part, m in metrics.items() if isinstance(m, dict)}


def _request_body(*, batch: bool) -> dict[str, Any]:
    """OpenAPI for the request bodies the endpoints parse themselves (so /docs shows how to call them)."""
    binary = {"type": "string", "format": "binary"}
    encoded = {"type": "string", "description": "base64, or a data: URL"}
    multipart = {"files": {"type": "array", "items": binary}} if batch else {"file": binary}
    as_json = {"images": {"type": "array", "items": encoded}} if batch else {"image": encoded}
    content: dict[str, Any] = {
        "multipart/form-data": {"schema": {"type": "object", "properties": multipart}},
        "application/json": {"schema": {"type": "object", "properties": as_json}},
    }
    if not batch:
        content["image/*"] = {"schema": binary}
    return {"requestBody": {"required": True, "content": content}}
