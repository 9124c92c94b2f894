"""`tlearn backbones`: the timm models tlearn can transfer from, the built-in one first."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from tlearn.cli.app import app
from tlearn.cli.render import console


@app.command("backbones")
def backbones(
    filter: Annotated[str, typer.Option("--filter", "-f", help="Text in the name, or a wildcard (resnet*).")] = "",
    pretrained: Annotated[
        bool, typer.Option(help="List pretrained weights (name.tag) instead of architectures.")
    ] = False,
    cached: Annotated[
        bool, typer.Option(help="Only weights that need no download: in the local Hugging Face cache, or built in.")
    ] = False,
    limit: Annotated[int, typer.Option(help="Show at most this many (0 = all).", min=0)] = 30,
) -> None:
    """List backbones with parameters, default input size, licence and whether weights are here already."""
    from tlearn.models.backbones import BUILTIN_NAME, DEFAULT_BACKBONE, list_backbones

    rows, total = list_backbones(filter, pretrained=pretrained, cached_only=cached, limit=limit or None)
    if not rows:
        what = "cached weights" if cached else "models"
        console.print(f"No {what} match '{filter}'." if filter else f"No {what} found.")
        if cached:
            console.print(
                f"Offline, use the built-in backbone (--backbone {BUILTIN_NAME}) "
                "or pass a weights file: tlearn train DATA --weights PATH."
            )
        return
    table = Table()
    table.add_column("name")
    table.add_column("params", justify="right")
    table.add_column("input", justify="right")
    table.add_column("licence")
    table.add_column("cached", justify="center")
    for r in rows:
        mark = " (built in)" if r.builtin else " (default)" if r.name == DEFAULT_BACKBONE else ""
        table.add_row(
            r.name + mark,
            f"{r.params_m:.1f} M" if r.params_m is not None else "?",
            f"{r.input_size[0]}x{r.input_size[1]}" if r.input_size else "",
            r.license or "",
            "yes" if r.cached else "",
        )
    console.print(table)
    if total > len(rows):
        console.print(f"{len(rows)} of {total} shown: narrow with --filter, or --limit 0 for all.")
    console.print(f"Default: {DEFAULT_BACKBONE}; offline with nothing cached, it falls back to the built-in one.")
