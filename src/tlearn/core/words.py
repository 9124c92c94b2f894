"""Words tlearn shows, in one place: counts ("1 image", "3 classes have") and the answer to a value that is not
one of an option's choices (with the closest one)."""

from __future__ import annotations

import difflib
from collections.abc import Sequence


def plural(noun: str) -> str:
    """The English plural of the nouns tlearn counts: image -> images, class -> classes, batch -> batches."""
    if noun.endswith(("s", "x", "sh", "ch")):
        return noun + "es"
    return noun + "s"


def noun(n: int, one: str, many: str | None = None) -> str:
    """The noun in the number `n` takes: noun(1, "file") "file", noun(3, "file") "files"; `many` for a plural
    the rule above does not give."""
    return one if n == 1 else many or plural(one)


def count(n: int, one: str, many: str | None = None) -> str:
    """`n` and its noun: count(1, "file") "1 file", count(3, "class") "3 classes"."""
    return f"{n} {noun(n, one, many)}"


def verb(n: int, one: str, many: str) -> str:
    """The verb that agrees with `n`: verb(1, "has", "have") "has"."""
    return one if n == 1 else many


def not_one_of(option: str, value: object, choices: Sequence[str]) -> str:
    """What an option's wrong value is told, with the closest choice when one is close: "--method must be one
    of auto, features, finetune, scratch. Got 'featurs' (did you mean features?)"."""
    close = difflib.get_close_matches(value, list(choices), n=1) if isinstance(value, str) else []
    guess = f" (did you mean {close[0]}?)" if close else ""
    return f"{option} must be one of {', '.join(choices)}. Got {value!r}{guess}."
