"""Rich output shared by the commands: consoles, the progress bar, small formatting helpers."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from tlearn.core.progress import Progress as ProgressFn

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

STAGE_LABELS = {
    "decode": "Reading images",
    "features": "Extracting features",
    "views": "Augmented views",
    "boundary": "Frozen layers, once",
    "predict": "Predicting",
}


@contextmanager
def progress_bar(*, transient: bool = True) -> Iterator[ProgressFn]:
    """A Progress callback drawing one bar per stage on stderr, so stdout stays clean for --json.

    Off when stderr is not a terminal: a log file would get no bars from a transient display, only
    the blank line Rich leaves in their place (before the first message or error).
    """
    columns = (
        TextColumn("{task.description:<22}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )
    tasks: dict[str, TaskID] = {}
    quiet = transient and not err_console.is_terminal
    with Progress(*columns, console=err_console, transient=transient, disable=quiet) as bar:

        def update(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(STAGE_LABELS.get(stage, stage), total=total)
            bar.update(tasks[stage], completed=done, total=total)

        yield update


def short_path(path: Path, root: Path | None) -> str:
    """`path` relative to `root` when it lies below it (shorter lines), else as given."""
    if root is not None:
        base = root if root.is_dir() else root.parent
        if path.is_relative_to(base):
            return path.relative_to(base).as_posix()
    return str(path)
