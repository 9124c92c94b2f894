"""Wall time of named stages, for the summary table ("time per stage"), and the run's time budget."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


class Timer:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


@dataclass(frozen=True)
class Deadline:
    """The end of a run's time budget, on the monotonic clock; no budget: `seconds` is None."""

    start: float
    seconds: float | None

    @classmethod
    def after(cls, seconds: float | None) -> Deadline:
        return cls(time.perf_counter(), seconds)

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        """Seconds until the budget runs out (negative once it has; infinite without a budget)."""
        return math.inf if self.seconds is None else self.seconds - self.elapsed()


NO_DEADLINE = Deadline(0.0, None)
