"""How the server refuses a request: an HTTP status, a short machine-readable code, a sentence for people.

Every refusal is answered with {"error": code, "detail": message}. An image that cannot be used is
answered by why, and why is the type of the decoder's ImageError, never the wording of its message:

    EmptyFile 400 empty_file   NotAnImage 415 not_an_image   ImageTooLarge 413 too_many_pixels
    TruncatedImage 422 corrupt_image   any other ImageError 422 bad_image

Anything else that escapes an endpoint is a bug: it is logged with its traceback and answered with a
JSON 500 naming only the exception's type, so a client never sees a reset connection or a stack.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from tlearn.core.errors import EmptyFile, ImageError, ImageTooLarge, NotAnImage, TruncatedImage

log = logging.getLogger(__name__)

MB = 1024 * 1024

# Why an image cannot be used -> status and code; the first type the error is an instance of wins.
IMAGE_STATUS: tuple[tuple[type[ImageError], int, str], ...] = (
    (EmptyFile, 400, "empty_file"),
    (NotAnImage, 415, "not_an_image"),
    (ImageTooLarge, 413, "too_many_pixels"),  # more pixels than the limit, or a decompression bomb
    (TruncatedImage, 422, "corrupt_image"),
)
OTHER_IMAGE_STATUS = (422, "bad_image")


class ApiError(Exception):
    """A request the server refuses: HTTP `status`, a short machine-readable `error`, a sentence for people."""

    def __init__(self, status: int, error: str, detail: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.error, self.detail = status, error, detail
        self.headers = headers or {}  # e.g. Retry-After on a 503

    def to_dict(self) -> dict[str, Any]:
        return {"error": self.error, "detail": self.detail, "status": self.status}


def image_error(name: str, err: ImageError) -> ApiError:
    """The answer to an upload called `name` that the decoder could not use."""
    status, error = next(((s, e) for kind, s, e in IMAGE_STATUS if isinstance(err, kind)), OTHER_IMAGE_STATUS)
    return ApiError(status, error, f"{name}: {err.message}.")


def too_large(limit: int) -> ApiError:
    return ApiError(413, "too_large", f"The request is over the size limit ({limit / MB:.1f} MB with this many files).")


def add_error_handlers(app: FastAPI) -> None:
    """Answer ApiError, FastAPI's own HTTP errors, invalid parameters and bugs as {"error", "detail"} JSON."""
    app.exception_handler(ApiError)(_api_error)
    app.exception_handler(HTTPException)(_http_error)
    app.exception_handler(RequestValidationError)(_invalid)
    app.exception_handler(Exception)(_bug)


async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
    return JSONResponse({"error": exc.error, "detail": exc.detail}, status_code=exc.status, headers=exc.headers)


async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    error = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "bad_request")
    return JSONResponse({"error": error, "detail": str(exc.detail)}, status_code=exc.status_code)


async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
    return JSONResponse({"error": "invalid_request", "detail": problems}, status_code=422)


async def _bug(request: Request, exc: Exception) -> JSONResponse:
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    detail = f"The server failed on this request ({type(exc).__name__})."
    return JSONResponse({"error": "internal_error", "detail": detail}, status_code=500)
