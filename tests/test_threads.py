"""core/threads.py: torch's thread count for a block, and the pool that works a few items ahead."""

from __future__ import annotations

import threading
import time

import pytest

from tlearn.core.threads import prefetched


def test_prefetched_gives_results_in_item_order_when_later_items_finish_first() -> None:
    def slow_first(i: int) -> int:
        time.sleep(0.02 * (5 - i))  # item 0 takes longest
        return i * i

    assert list(prefetched(slow_first, list(range(6)), ahead=4, workers=4)) == [i * i for i in range(6)]


def test_prefetched_starts_at_most_ahead_items_before_the_caller_takes_them() -> None:
    started: list[int] = []
    lock = threading.Lock()

    def note(i: int) -> int:
        with lock:
            started.append(i)
        return i

    taken = prefetched(note, list(range(100)), ahead=3, workers=2)
    assert next(taken) == 0
    time.sleep(0.05)
    assert len(started) <= 3  # memory stays flat on any number of items
    assert list(taken) == list(range(1, 100))


def test_prefetched_raises_the_error_of_the_item_that_failed() -> None:
    def fail_on_2(i: int) -> int:
        if i == 2:
            raise ValueError("item 2")
        return i

    taken = prefetched(fail_on_2, [0, 1, 2, 3], ahead=2)
    assert [next(taken), next(taken)] == [0, 1]
    with pytest.raises(ValueError, match="item 2"):
        next(taken)
