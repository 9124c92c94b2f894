"""The one way library code reports progress: an optional callback, drawn by the CLI."""

from __future__ import annotations

from collections.abc import Callable

# progress(stage, done, total): `stage` names the work ("decode", "features"...), `done` counts
# items finished so far out of `total`. Called from the thread that runs the work.
Progress = Callable[[str, int, int], None]


def no_progress(stage: str, done: int, total: int) -> None:
    """The default: report nothing."""
