"""`tlearn backbones`: the timm models tlearn can transfer from."""

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
    cached: Annotated[bool, typer.Option(help="Only weights already in the local Hugging Face cache.")] = False,
    limit: Annotated[int, typer.Option(help="Show at most this many (0 = all).", min=0)] = 30,
) -> None:
    """List backbones with parameters, default input size, licence and whether weights are cached."""
    from tlearn.models.backbones import DEFAULT_BACKBONE, list_backbones

    rows, total = list_backbones(filter, pretrained=pretrained, cached_only=cached, limit=limit or None)
    table = Table()
    table.add_column("name")
    table.add_column("params", justify="right")
    table.add_column("input", justify="right")
    table.add_column("licence")
    table.add_column("cached", justify="center")
    for r in rows:
        table.add_row(
            r.name + (" (default)" if r.name == DEFAULT_BACKBONE else ""),
            f"{r.params_m:.1f} M" if r.params_m is not None else "?",
            f"{r.input_size[0]}x{r.input_size[1]}" if r.input_size else "",
            r.license or "",
            "yes" if r.cached else "",
        )
    if not rows:
        what = "cached weights" if cached else "models"
        console.print(f"No {what} match '{filter}'." if filter else f"No {what} found.")
        if cached:
            console.print("Offline, pass a weights file instead: tlearn train DATA --weights PATH.")
        return
    console.print(table)
    if total > len(rows):
        console.print(f"{len(rows)} of {total} shown: narrow with --filter, or --limit 0 for all.")
