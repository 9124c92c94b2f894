"""The `tlearn` command line: each command parses, calls one library function, renders with Rich.

`main()` is the one place that turns errors into what a user reads, and chooses the exit code: a
TlearnError becomes one red line (and a hint) with exit code 1, and so does an OSError that is the
user's to fix (no permission, a read-only disk, no space: `FileSystemError`); an interruption (Ctrl-C,
or the `Interrupted` the library raises for it) exits with 130, as shells do for SIGINT; anything
else becomes one line that says it is a bug, with exit code 2. `TLEARN_DEBUG=1` shows the full
traceback instead. In a torchrun job of several processes each line starts with the rank that wrote
it, so the first failure is easy to find among the others.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import NoReturn

from rich.markup import escape

from tlearn.cli import augment as _augment  # noqa: F401  (each module registers its commands)
from tlearn.cli import backbones as _backbones  # noqa: F401
from tlearn.cli import compare as _compare  # noqa: F401
from tlearn.cli import data as _data  # noqa: F401
from tlearn.cli import evaluate as _evaluate  # noqa: F401
from tlearn.cli import predict as _predict  # noqa: F401
from tlearn.cli import serve as _serve  # noqa: F401
from tlearn.cli import suggest as _suggest  # noqa: F401
from tlearn.cli import train as _train  # noqa: F401
from tlearn.cli.app import app
from tlearn.cli.heap import no_collection_at_exit
from tlearn.cli.render import err_console
from tlearn.core.errors import FileSystemError, Interrupted, TlearnError
from tlearn.core.malloc import keep_tensor_memory

__all__ = ["app", "main"]


def main() -> None:
    debug = os.environ.get("TLEARN_DEBUG", "") not in ("", "0")
    _setup_logging(debug)
    no_collection_at_exit()  # a second and more at exit otherwise (see heap.py)
    keep_tensor_memory()  # eager PyTorch's layers reuse freed blocks instead of mapping each anew (core/malloc.py)
    try:
        app()  # standalone: Typer reports usage errors itself, exits 130 on Ctrl-C, and exits
    except Interrupted as err:
        if debug:
            raise
        _say(f"[yellow]{escape(err.message)}[/]", err.hint)
        sys.exit(Interrupted.exit_code)
    except KeyboardInterrupt:  # outside a command (Typer handles it inside)
        if debug:
            raise
        _say("[yellow]Interrupted.[/]", None)
        sys.exit(Interrupted.exit_code)
    except TlearnError as err:
        if debug:
            raise
        _say(f"[bold red]Error:[/] {escape(err.message)}", err.hint)
        sys.exit(1)
    except OSError as err:
        if debug:
            raise
        known = FileSystemError.from_os_error(err)
        if known is None:
            _bug(err)
        _say(f"[bold red]Error:[/] {escape(known.message)}", known.hint)
        sys.exit(1)
    except Exception as err:
        if debug:
            raise
        _bug(err)


def _say(line: str, hint: str | None) -> None:
    rank = _rank_prefix()
    err_console.print(f"{rank}{line}", highlight=False, soft_wrap=True)
    if hint:
        err_console.print(f"{rank}[yellow]Hint:[/] {escape(hint)}", highlight=False, soft_wrap=True)


def _bug(err: BaseException) -> NoReturn:
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
