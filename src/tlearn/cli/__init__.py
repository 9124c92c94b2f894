"""The `tlearn` command line: each command parses, calls one library function, renders with Rich.

`main()` is the one place that turns errors into what a user reads: a TlearnError becomes one red
line (and a hint) with exit code 1; anything unexpected becomes one line that says it is a bug.
`TLEARN_DEBUG=1` shows the full traceback instead. In a torchrun job of several processes each line
starts with the rank that wrote it, so the first failure is easy to find among the others.
"""

from __future__ import annotations

import logging
import os
import sys

from rich.markup import escape

from tlearn.cli import augment as _augment  # noqa: F401  (each module registers its commands)
from tlearn.cli import backbones as _backbones  # noqa: F401
from tlearn.cli import compare as _compare  # noqa: F401
from tlearn.cli import data as _data  # noqa: F401
from tlearn.cli import evaluate as _evaluate  # noqa: F401
from tlearn.cli import predict as _predict  # noqa: F401
from tlearn.cli import serve as _serve  # noqa: F401
from tlearn.cli import train as _train  # noqa: F401
from tlearn.cli.app import app
from tlearn.cli.render import err_console
from tlearn.core.errors import TlearnError

__all__ = ["app", "main"]


def main() -> None:
    debug = os.environ.get("TLEARN_DEBUG", "") not in ("", "0")
    _setup_logging(debug)
    try:
        app()  # standalone: Typer reports usage errors and Ctrl-C itself, and exits
    except TlearnError as err:
        if debug:
            raise
        rank = _rank_prefix()
        err_console.print(f"{rank}[bold red]Error:[/] {escape(err.message)}", highlight=False, soft_wrap=True)
        if err.hint:
            err_console.print(f"{rank}[yellow]Hint:[/] {escape(err.hint)}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except Exception as err:
        if debug:
            raise
        err_console.print(
            f"{_rank_prefix()}[bold red]Unexpected error:[/] {type(err).__name__}: {escape(str(err))}. "
            "This is a bug in tlearn: "
            "rerun with TLEARN_DEBUG=1 to see the traceback, and report it.",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(2)


def _rank_prefix() -> str:
    """The rank ("[rank 1] ") in a torchrun job of several processes; nothing for a single process."""
    rank, size = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    return f"\\[rank {rank}] " if size > 1 else ""


def _setup_logging(debug: bool) -> None:
    from rich.logging import RichHandler

    handler = RichHandler(console=err_console, show_time=False, show_path=False, markup=False)
    logging.basicConfig(level=logging.WARNING, format="%(message)s", handlers=[handler])
    logging.getLogger("tlearn").setLevel(logging.DEBUG if debug else logging.INFO)
