"""`tlearn suggest`: which unlabelled photos to label next, as a CSV, a contact sheet and folders to sort."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from tlearn.cli.app import app
from tlearn.cli.render import console, progress_bar, short_path
from tlearn.core.words import count, not_one_of


@app.command("suggest")
def suggest(
    bundle: Annotated[Path, typer.Argument(help="A bundle folder written by tlearn train.")],
    unlabelled: Annotated[Path, typer.Argument(help="A folder of unlabelled photos (searched recursively).")],
    n: Annotated[int, typer.Option("--n", help="How many photos to suggest.", min=1)] = 20,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Folder for suggestions.csv, contact_sheet.html and to_label/.")
    ] = Path("suggestions"),
    strategy: Annotated[
        str, typer.Option(help="diverse (uncertain and spread out), uncertainty (alone) or random.")
    ] = "diverse",
    batch_size: Annotated[int, typer.Option(help="Images per batch.", min=1)] = 32,
) -> None:
    """Rank unlabelled photos by how much labelling each would help the bundle's model."""
    from tlearn.core.errors import ConfigError
    from tlearn.training.ranking import STRATEGIES
    from tlearn.training.suggest import suggest as run_suggest

    if strategy not in STRATEGIES:
        raise ConfigError(not_one_of("--strategy", strategy, STRATEGIES))
    with progress_bar() as progress:
        result = run_suggest(
            bundle, unlabelled, n=n, out=out, strategy=strategy, batch_size=batch_size,  # type: ignore[arg-type]
            progress=progress,
        )  # fmt: skip
    for f in result.failures[:20]:
        console.print(f"  [yellow]skipped[/] {escape(f.source)}: {escape(f.reason)}")
    if result.excluded:
        console.print(
            f"Left out {count(len(result.excluded), 'photo')} that copy an image the bundle was trained, validated "
            "or tested on."
        )
    if result.not_compared:
        console.print(
            f"[yellow]Not compared with the labelled images[/] ({escape(result.not_compared)}): photos already in "
            "the dataset may be among the suggestions."
        )
    table = Table(title=f"Label these {len(result.picked)} first (of {len(result.ranked)} readable photos)")
    for col in ("rank", "photo", "guess", "confidence", "score"):
        table.add_column(col, justify="left" if col in ("photo", "guess") else "right")
    for s in result.picked:
        photo = escape(short_path(s.path, unlabelled))
        table.add_row(str(s.rank), photo, escape(s.guess), f"{s.confidence:.0%}", f"{s.score:.3f}")
    console.print(table)
    skipped = f" ({len(result.failures)} unreadable, skipped)" if result.failures else ""
    console.print(f"Ranked list{skipped}: [bold]{escape(short_path(result.csv, None))}[/]")
    console.print(f"Contact sheet: [bold]{escape(short_path(result.sheet, None))}[/]")
    console.print(
        f"Copies in [bold]{escape(short_path(result.folder, None))}/<guess>/[/]: move the wrong ones to the right "
        "class folder, then add the folders to your dataset and train again."
    )
