"""The endpoints, one small function each; what they serve is the `Served` on `request.app.state`."""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from typing import Any

from fastapi import Query, Request
from fastapi.responses import HTMLResponse, JSONResponse

from tlearn.core.errors import ImageError
from tlearn.core.version import __version__
from tlearn.infer.predictor import BasePredictor
from tlearn.serve.errors import ApiError, image_error
from tlearn.serve.limits import Limits
from tlearn.serve.uploads import Upload, announced_body, read_uploads, size_problem
from tlearn.serve.work import Work


@dataclass(frozen=True)
class Served:
    """One loaded model, the limits it is served with (see `create_app`) and the work in progress."""

    predictor: BasePredictor
    name: str
    page: str  # the web page at /
    top_k: int  # classes returned by default, between 1 and the number of classes
    limits: Limits
    work: Work


K_QUERY = Query(None, ge=1, description="Classes to return (default: the server's; at most all classes).")
EXPLAIN_QUERY = Query(
    False,
    description="Also return a heatmap of the predicted class (Grad-CAM) over the image as the model saw it: "
    '{"heatmap": {"class", "png": "<base64 PNG>"}}. About the cost of three predictions; from the bundle\'s '
    "PyTorch network (not with --engine onnx).",
)


def served(request: Request) -> Served:
    state: Served = request.app.state.served
    return state


async def index(request: Request) -> HTMLResponse:
    return HTMLResponse(served(request).page)


async def health(request: Request) -> dict[str, Any]:
    """Liveness: the model is loaded."""
    return {"status": "ok", "engine": served(request).predictor.engine}


async def model(request: Request) -> dict[str, Any]:
    """What the model is: classes, backbone, input size, metrics, versions, limits, images per forward pass."""
    s = served(request)
    config = s.predictor.config
    return {
        "name": s.name,
        "backbone": config.backbone,
        "method": config.method,
        "classes": list(s.predictor.classes),
        "input_size": list(config.preprocessing.input_size),
        "flip_tta": config.flip_tta,
        "engine": s.predictor.engine,
        "heatmaps": s.work.explainer is not None,
        "precision": s.predictor.precision,
        "metrics": _headline_metrics(config.metrics),
        "version": __version__,
        "trained_with": config.versions.get("tlearn"),
        "created": config.created,
        "top_k": s.top_k,
        "unknown": None if config.unknown is None else config.unknown.to_dict(),
        "limits": s.limits.to_dict(),
        "forward_pass": s.work.pass_size.to_dict(),
    }


async def predict(request: Request, top_k: int | None = K_QUERY, explain: bool = EXPLAIN_QUERY) -> dict[str, Any]:
    """Top-k classes of one image; with `explain=true`, also its heatmap."""
    start, s = time.perf_counter(), served(request)
    if explain and s.work.explainer is None:
        raise ApiError(
            400,
            "explain_unavailable",
            "Heatmaps need the PyTorch engine (gradients), and this server runs ONNX only: start it from the "
            "bundle folder without --engine onnx.",
        )
    body = announced_body(request, file_limit=s.limits.file_limit, max_files=1, field="file")
    async with s.work.admit(body.expected) as admitted:
        uploads = await read_uploads(request, body, max_files=1, field="file")
        admitted.body_read()
        if len(uploads) > 1:
            raise ApiError(400, "too_many_files", f"/predict takes one image, got {len(uploads)}: use /predict/batch.")
        (result,) = await answer(s, uploads, top_k or s.top_k)
        if explain and "error" not in result:
            result = {**result, "heatmap": await heatmap(s, uploads[0])}
    if "error" in result:
        raise ApiError(result["status"], result["error"], result["detail"])
    return {**result, "seconds": round(time.perf_counter() - start, 4)}


async def predict_batch(request: Request, top_k: int | None = K_QUERY) -> Any:
    """Top-k classes of several images; each file is answered, and one that fails does not fail the others."""
    start, s = time.perf_counter(), served(request)
    body = announced_body(request, file_limit=s.limits.file_limit, max_files=s.limits.max_batch, field="files")
    async with s.work.admit(body.expected) as admitted:
        uploads = await read_uploads(request, body, max_files=s.limits.max_batch, field="files")
        admitted.body_read()
        results = await answer(s, uploads, top_k or s.top_k)
    doc = {"results": results, "seconds": round(time.perf_counter() - start, 4)}
    if all("error" in r for r in results):  # nothing to show: the request as a whole failed
        first = results[0]
        return JSONResponse({"error": first["error"], "detail": first["detail"], **doc}, first["status"])
    return doc


async def answer(s: Served, uploads: list[Upload], k: int) -> list[dict[str, Any]]:
    """One result per upload, in order: {"file", "predictions"} (with "unknown" and "unknown_score" when the
    bundle has an unknown answer) or {"file", "error", "detail", "status"}.

    Uploads that are empty or over the size limit are answered without decoding; the others go to the
    server's bounded pools of decoding threads (`work.py`), so the event loop stays free.
    """
    problems = {i: p for i, u in enumerate(uploads) if (p := size_problem(u, s.limits.file_limit, s.limits.max_mb))}
    ok = [u for i, u in enumerate(uploads) if i not in problems]
    found = iter(await s.work.predict([u.data for u in ok], top_k=k))
    out = []
    for i, u in enumerate(uploads):
        if i in problems:
            out.append({"file": u.name, **problems[i].to_dict()})
            continue
        item = next(found)
        if isinstance(item, ImageError):
            out.append({"file": u.name, **image_error(u.name, item).to_dict()})
        else:
            out.append({"file": u.name, **{k: v for k, v in item.to_dict().items() if k != "path"}})
    return out


async def heatmap(s: Served, upload: Upload) -> dict[str, Any]:
    """{"class", "probability", "png": base64} of an upload that was predicted already (so it decodes)."""
    done = await s.work.explain(upload.data)
    if isinstance(done, ImageError):
        raise image_error(upload.name, done)
    return {
        "class": done.label,
        "probability": done.probability,
        "png": base64.b64encode(done.png()).decode("ascii"),
    }


ERROR_SCHEMA = {
    "type": "object",
    "required": ["error", "detail"],
    "properties": {
        "error": {"type": "string", "description": "what went wrong, for programs: too_large, busy, timeout..."},
        "detail": {"type": "string", "description": "what went wrong and what to do, for people"},
    },
}


def _error(description: str, **extra: Any) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ERROR_SCHEMA}}, **extra}


# What the prediction endpoints answer besides their 200 (it replaces FastAPI's 422, which is not ours).
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    "4XX": _error("The request cannot be used: the error says why (a batch lists each file's result too)"),
    503: _error(
        "The server is at its limit of requests or uploads in progress",
        headers={"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}},
    ),
    504: _error("The request took longer than the server's time limit"),
}


def request_body(*, batch: bool) -> dict[str, Any]:
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


def _headline_metrics(metrics: dict[str, Any]) -> dict[str, dict[str, float]]:
    keep = ("n", "accuracy", "balanced_accuracy", "macro_f1")
    return {part: {k: m[k] for k in keep if k in m} for part, m in metrics.items() if isinstance(m, dict)}
