"""Rich output shared by the commands: consoles, the progress bar, small formatting helpers."""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterable, Iterator
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
from tlearn.data.sources import display_path

console = Console(highlight=False)

# When the label check could not run: it judges each image by a model that never saw it, so every class
# needs another image to train that model on (`training/label_issues.py` `can_check`).
LABELS_NOT_CHECKED = "Labels not checked: every class needs at least two different images."
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
    """`path` relative to `root` when it lies below it (shorter lines), else as given; as `display_path`
    shows it (bytes that are not UTF-8 escaped), not yet escaped for Rich markup."""
    if root is not None:
        base = root if root.is_dir() else root.parent
        if path.is_relative_to(base):
            return display_path(path.relative_to(base).as_posix())
    return display_path(path)


def shell_word(arg: str | os.PathLike[str]) -> str:
    """One argument quoted for a POSIX shell, so a printed command can be pasted and run.

    A name that is not valid UTF-8 cannot be printed as itself: it is written in ANSI-C quotes,
    $'caf\\xe9', which bash, zsh and ksh read as the original bytes (shlex.quote would print the
    surrogate escapes, which a UTF-8 terminal cannot show).
    """
    text = os.fspath(arg)
    if display_path(text) == text:
        return shlex.quote(text)
    return "$'" + "".join(_ansi_c(b) for b in os.fsencode(text)) + "'"


def shell_join(args: Iterable[str | os.PathLike[str]]) -> str:
    """A command line as `shell_word`s: valid UTF-8 text for any arguments (for messages and tlearn.json)."""
    return " ".join(shell_word(a) for a in args)


def _ansi_c(byte: int) -> str:
    if byte in (0x27, 0x5C):  # ' and \
        return "\\" + chr(byte)
    return chr(byte) if 0x20 <= byte < 0x7F else f"\\x{byte:02x}"
