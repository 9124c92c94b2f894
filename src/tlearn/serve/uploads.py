"""The images of a request, read within limits: multipart files, base64 in JSON, or the raw bytes.

Bodies are counted as they arrive, so an oversized upload is cut off rather than read: the cap is
what `max_files` files of the per-file limit need, plus an envelope for boundaries, headers and keys.
JSON is scanned before it is parsed (`check_json_structure`): `json.loads` recurses once per level of
nesting and builds an object per value, so a few hundred KB of `[[[[...` or `[{},{},...]` would exhaust
the stack or the memory; such a body is refused with a 400 instead.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from tlearn.core.words import count
from tlearn.serve.errors import MB, ApiError, too_large

_ENVELOPE = 64 * 1024  # multipart boundaries and headers, JSON keys: the part of a body that is not the image

# {"images": ["...", ...]} is 2 levels deep and has 4 tokens per image; room for a few fields of a client's own.
MAX_JSON_DEPTH = 8
_JSON_SPARE_TOKENS = 64
_JSON_SHAPE = '{"image": "<base64>"} or {"images": ["<base64>", ...]}'
_JSON_TOKEN = re.compile(rb'["\[\]{},:]')  # what the structure is made of; numbers and literals need no count
_JSON_STRING_REST = re.compile(rb'(?:[^"\\]++|\\.)*+"', re.DOTALL)  # possessive: one pass, no backtracking

_READABLE = ("multipart/form-data", "application/json", "application/octet-stream")  # and image/*

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]


@dataclass(frozen=True)
class Upload:
    name: str
    data: bytes


class _BodyTooLarge(Exception):
    pass


@dataclass(frozen=True)
class Body:
    """What a request says of its body before a byte of it is read (see `announced_body`)."""

    kind: str  # the media type: multipart/form-data, application/json, image/..., application/octet-stream
    limit: int  # the most bytes it may have: what `max_files` files of the per-file limit need
    expected: int  # the bytes to make room for: its Content-Length, or `limit` when it declares none


def announced_body(request: Request, *, file_limit: int, max_files: int, field: str) -> Body:
    """The body a request announces in its headers, or the 4xx that refuses it before it is read:
    an unreadable type (415), a declared length over the limit (413), no body at all (400)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    declared = request.headers.get("content-length", "")
    if declared == "0" or (not kind and not declared):
        raise ApiError(400, "empty_body", "The request has no body: send an image.")
    if kind not in _READABLE and not kind.startswith("image/"):
        raise ApiError(
            415,
            "unsupported_media_type",
            f"Cannot read a request of type {kind or '(none)'!r}: send multipart/form-data with the image in "
            f"'{field}', JSON with base64, or the image bytes with Content-Type image/*.",
        )
    # base64 makes JSON 4/3 the size of the images it carries.
    limit = (file_limit * 4 // 3 if kind == "application/json" else file_limit) * max_files + _ENVELOPE
    if declared.isdigit() and int(declared) > limit:
        raise too_large(limit)
    return Body(kind, limit, int(declared) if declared.isdigit() else limit)


async def read_uploads(request: Request, body: Body, *, max_files: int, field: str) -> list[Upload]:
    """The images of a request whose headers announced `body`, read with the body capped at its limit."""
    capped = Request(request.scope, receive=_capped_receive(request.receive, body.limit))
    try:
        if body.kind == "multipart/form-data":
            return await _multipart(capped, max_files=max_files, field=field)
        data = await capped.body()
        if body.kind == "application/json":
            # Scanning and decoding megabytes of base64 is work for a thread, not for the event loop.
            return await run_in_threadpool(_from_json, data, max_files=max_files)
        return [Upload("upload", data)]
    except _BodyTooLarge:
        raise too_large(body.limit) from None


def size_problem(upload: Upload, file_limit: int, max_mb: float) -> ApiError | None:
    """Why one upload is refused before decoding (empty, or over `file_limit` bytes); None if it is not."""
    if not upload.data:
        return ApiError(400, "empty_file", f"{upload.name}: the file is empty (0 bytes).")
    if len(upload.data) > file_limit:
        return ApiError(
            413, "too_large", f"{upload.name}: {len(upload.data) / MB:.1f} MB is over the {max_mb:g} MB limit."
        )
    return None


async def _multipart(request: Request, *, max_files: int, field: str) -> list[Upload]:
    try:
        form = await request.form(max_files=max_files, max_fields=8)
    except HTTPException as exc:  # Starlette's own limits and parse errors
        if "Too many files" in str(exc.detail):
            raise ApiError(
                400,
                "too_many_files",
                f"A request may hold at most {count(max_files, 'image')}; send the rest in another.",
            ) from None
        raise ApiError(400, "bad_multipart", f"Cannot parse the multipart body: {exc.detail}") from None
    try:
        files = [v for _, v in form.multi_items() if isinstance(v, UploadFile)]
        if not files:
            raise ApiError(400, "no_file", f"The form has no file: put the image in the field '{field}'.")
        return [Upload(f.filename or f"file {i + 1}", await f.read()) for i, f in enumerate(files)]
    finally:
        await form.close()


def check_json_structure(body: bytes, *, max_tokens: int) -> None:
    """Refuse JSON nested over MAX_JSON_DEPTH levels or made of over `max_tokens` tokens, without parsing it.

    Tokens are strings and the characters `[ ] { } , :`; brackets inside strings do not count. The scan
    is one pass of the regular-expression engine over the bytes, and at most `max_tokens` steps here.
    Invalid JSON that passes is left for `json.loads` to describe.
    """
    depth = tokens = at = 0
    while (token := _JSON_TOKEN.search(body, at)) is not None:
        tokens += 1
        if tokens > max_tokens:
            raise ApiError(
                400,
                "json_too_complex",
                f"The JSON has more than {max_tokens} values and separators: send {_JSON_SHAPE}.",
            )
        at = token.end()
        char = body[token.start()]
        if char == ord('"'):
            rest = _JSON_STRING_REST.match(body, at)
            if rest is None:  # an unterminated string: json.loads says so
                return
            at = rest.end()
        elif char in b"[{":
            depth += 1
            if depth > MAX_JSON_DEPTH:
                raise ApiError(
                    400,
                    "json_too_deep",
                    f"The JSON is nested more than {MAX_JSON_DEPTH} levels deep: send {_JSON_SHAPE}.",
                )
        elif char in b"]}":
            depth -= 1


def _from_json(body: bytes, *, max_files: int) -> list[Upload]:
    if not body.strip():
        raise ApiError(400, "empty_body", "The request has no body: send an image.")
    check_json_structure(body, max_tokens=4 * max_files + _JSON_SPARE_TOKENS)
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as err:
        raise ApiError(400, "bad_json", f"The body is not valid JSON: {err}.") from None
    if isinstance(doc, dict) and isinstance(doc.get("image"), str):
        encoded = [doc["image"]]
    elif isinstance(doc, dict) and isinstance(doc.get("images"), list):
        encoded = doc["images"]
    else:
        raise ApiError(400, "bad_json", f"Expected {_JSON_SHAPE}.")
    if not encoded:
        raise ApiError(400, "no_file", 'The list "images" is empty.')
    if len(encoded) > max_files:
        raise ApiError(
            400, "too_many_files", f"A request may hold at most {count(max_files, 'image')}; got {len(encoded)}."
        )
    return [Upload(f"image {i + 1}", _b64decode(item, i + 1)) for i, item in enumerate(encoded)]


def _b64decode(item: Any, number: int) -> bytes:
    if not isinstance(item, str):
        raise ApiError(400, "bad_base64", f"Image {number} is not a base64 string.")
    text = item
    if item.startswith("data:"):  # a data: URL from a browser: data:image/jpeg;base64,<the base64>
        if "," not in item:
            raise ApiError(400, "bad_base64", f"Image {number} is a data: URL without a comma before its data.")
        text = item.split(",", 1)[1]
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, "bad_base64", f"Image {number} is not valid base64.") from None


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
