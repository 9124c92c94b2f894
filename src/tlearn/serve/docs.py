"""/docs without a network: Swagger UI from files installed with the server, or a page that links the schema.

FastAPI's own /docs and /redoc load their scripts from a CDN, so offline they are blank pages. The
package fastapi-offline ships Swagger UI 5 (the first to read the OpenAPI 3.1 that FastAPI writes;
swagger-ui-bundle's 4.15 says "Unable to render this definition"); only its files are used here, served
from /docs/<file>. Without it, /docs is a short page that says how to install it and links
/openapi.json, which is always served. /redoc is off: its script would come from a CDN too.
All links are relative, so the docs work behind a proxy that serves the app under a prefix.
"""

from __future__ import annotations

import html
from importlib.util import find_spec
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse

from tlearn.serve.errors import ApiError

ASSET_PACKAGE = "fastapi_offline"
# The files the page needs, and the type each is served as; nothing else in the folder is served.
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "favicon.png": "image/png",
}


def swagger_assets() -> Path | None:
    """The folder of Swagger UI's files, when fastapi-offline is installed and has them all; else None."""
    spec = find_spec(ASSET_PACKAGE)
    if spec is None or spec.origin is None:
        return None
    folder = Path(spec.origin).parent / "static"
    return folder if all((folder / name).is_file() for name in ASSETS) else None


def add_docs(app: FastAPI) -> None:
    """Serve /docs from local files (see the module docstring). Call on an app made with docs_url=None."""
    folder = swagger_assets()
    title = html.escape(app.title)

    if folder is None:

        async def plain_docs() -> HTMLResponse:
            return HTMLResponse(_PLAIN.format(title=title))

        app.add_api_route("/docs", plain_docs, response_class=HTMLResponse, include_in_schema=False)
        return

    async def swagger_docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="openapi.json",
            title=f"{app.title}: API",
            swagger_js_url="docs/swagger-ui-bundle.js",
            swagger_css_url="docs/swagger-ui.css",
            swagger_favicon_url="docs/favicon.png",
            swagger_ui_parameters={"validatorUrl": None},  # else a badge is fetched from validator.swagger.io
        )

    async def asset(name: str) -> FileResponse:
        if name not in ASSETS:
            raise ApiError(404, "not_found", f"/docs has no file {name!r}.")
        return FileResponse(folder / name, media_type=ASSETS[name], headers={"Cache-Control": "max-age=86400"})

    app.add_api_route("/docs", swagger_docs, response_class=HTMLResponse, include_in_schema=False)
    app.add_api_route("/docs/{name}", asset, include_in_schema=False)


_PLAIN = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}: API</title>
<style>body {{ font: 16px/1.5 system-ui, sans-serif; max-width: 44em; margin: 2em auto; padding: 0 1em; }}
code {{ background: #8882; padding: 0 .25em; border-radius: 4px; }}</style></head>
<body><h1>{title}: API</h1>
<p>The API is described in <a href="openapi.json">openapi.json</a> (OpenAPI 3.1): open it in any OpenAPI viewer,
or generate a client from it.</p>
<p>For interactive docs on this page, install Swagger UI's files with the server and restart it:
<code>pip install fastapi-offline</code>.</p>
<ul>
<li><code>POST predict</code>: one image, as the multipart field <code>file</code>, JSON
<code>{{"image": "&lt;base64&gt;"}}</code> or the bytes with <code>Content-Type: image/jpeg</code></li>
<li><code>POST predict/batch</code>: several images, the multipart fields <code>files</code> or JSON
<code>{{"images": [...]}}</code></li>
<li><code>GET <a href="model">model</a></code>: the classes, the model, its metrics and the server's limits</li>
<li><code>GET <a href="health">health</a></code>: liveness</li>
</ul>
<p><a href="./">Back to the prediction page</a></p>
</body></html>
"""
