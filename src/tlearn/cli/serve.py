"""`tlearn serve`: a prediction server with a web page, on this machine unless told otherwise."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from tlearn.cli.app import app
from tlearn.cli.render import console
from tlearn.core.errors import ConfigError, ExtraMissingError
from tlearn.core.words import count
from tlearn.serve.limits import KEEP_ALIVE_SECONDS, SHUTDOWN_SECONDS, Limits


@app.command("serve")
def serve(
    bundle: Annotated[
        Path, typer.Argument(help="A bundle folder from tlearn train, or a .onnx file from tlearn export.")
    ],
    host: Annotated[
        str, typer.Option(help="Address to listen on. 0.0.0.0 opens the server to your whole network.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.", min=1, max=65535)] = 8000,
    engine: Annotated[
        str | None,
        typer.Option(
            help="torch, or onnx for ONNX Runtime alone (default: ONNX Runtime where it is installed, with the "
            "PyTorch network beside it for heatmaps; onnx for a .onnx file)."
        ),
    ] = None,
    max_mb: Annotated[
        float, typer.Option("--max-mb", help="Largest image file accepted, in MB.", min=0.01)
    ] = Limits.max_mb,
    max_batch: Annotated[
        int, typer.Option(help="Most images in one /predict/batch request.", min=1)
    ] = Limits.max_batch,
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="Classes returned per image by default.", min=1)] = 5,
    max_batch_mp: Annotated[
        float, typer.Option("--max-batch-mp", help="Most megapixels in one request, summed over its images.")
    ] = Limits.max_batch_pixels / 1e6,
    threads: Annotated[
        int,
        typer.Option(
            help="Small images decoded at once (default: one per core, at most 2); the network has a thread of its own."
        ),
    ] = Limits.threads,
    large_threads: Annotated[
        int,
        typer.Option(
            help="Large images (over 4 MP; JPEGs over 64 MP) decoded at once, on threads of their own. Each can "
            "take 0.4 to 1.5 GB at the 50 MP limit."
        ),
    ] = Limits.large_threads,
    max_pending: Annotated[
        int, typer.Option(help="Requests in progress at once; one more is answered 503 with Retry-After.")
    ] = Limits.max_pending,
    max_upload_mb: Annotated[
        float,
        typer.Option(
            "--max-upload-mb", help="MB of uploads held at once; a request that would pass it is answered 503."
        ),
    ] = Limits.max_upload_mb,
    max_queue: Annotated[
        int,
        typer.Option(
            help="Decoded images waiting for the network, whose passes batch the requests that arrive together; "
            "a request that would pass it is answered 503."
        ),
    ] = Limits.max_queue,
    timeout: Annotated[
        float, typer.Option(help="Seconds a request may take; then it is answered 504 (408 while it uploads).")
    ] = Limits.timeout,
    pass_size: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=32,
            help="Images per forward pass, 1 to 32 (default: the size this engine runs fastest per image, measured "
            "at startup in about a second).",
        ),
    ] = None,
) -> None:
    """Serve a model over HTTP: a web page at /, a JSON API (/predict, /predict/batch, /model), docs at /docs."""
    try:
        import uvicorn

        from tlearn.serve.app import create_app
    except ImportError as err:
        raise ExtraMissingError(err.name or "fastapi", "serve") from None
    from tlearn.infer.load import load_for_serving

    limits = Limits(  # checked before the model is loaded
        max_mb=max_mb, max_batch=max_batch, max_batch_pixels=round(max_batch_mp * 1e6), threads=threads,
        large_threads=large_threads, max_pending=max_pending, max_upload_mb=max_upload_mb, max_queue=max_queue,
        timeout=timeout,
    )  # fmt: skip
    check_port_free(host, port)
    predictor, explainer = load_for_serving(bundle, engine=engine or "auto")
    web_app = create_app(predictor, top_k=top_k, pass_size=pass_size, explainer=explainer, **asdict(limits))
    engine = predictor.engine + ("" if predictor.precision == "float32" else f", {predictor.precision}")
    size = web_app.state.served.work.pass_size.size
    engine += f" engine, passes of {count(size, 'image')}"
    if explainer is not None and explainer is not predictor:
        engine += "; heatmaps in PyTorch"
    _announce(host, port, f"{predictor.config.backbone}", len(predictor.classes), engine)
    uvicorn.run(
        web_app,
        host=host,
        port=port,
        log_level="warning",
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        limit_concurrency=limits.connection_limit,
        timeout_graceful_shutdown=SHUTDOWN_SECONDS,
    )


def _announce(host: str, port: int, backbone: str, classes: int, engine: str) -> None:
    """Where the server listens, and a warning when that is beyond this machine."""
    shown = f"[{host}]" if ":" in host else host
    if not is_loopback(host):
        console.print(
            f"[yellow]Listening on {host}: any machine that can reach this one can use the model "
            "(there is no authentication).[/] That is what --host asked for; the default, 127.0.0.1, is this "
            "machine only."
        )
        if host in ("0.0.0.0", "::"):
            shown = "localhost"
    console.print(
        f"Serving [bold]{backbone}[/] ({classes} classes, {engine}) "
        f"at [bold]http://{shown}:{port}/[/]  API docs: http://{shown}:{port}/docs  (Ctrl-C stops it)"
    )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_port_free(host: str, port: int) -> None:
    """Fail with a message, before loading the model, when the address cannot be listened on."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        try:
            sock.bind((host, port))
        except OSError as err:
            raise ConfigError(
                f"Cannot listen on {host}:{port}: {err.strerror or err}.",
                hint=f"Another program may be using the port: pick another with --port (e.g. --port {port + 1}).",
            ) from None
