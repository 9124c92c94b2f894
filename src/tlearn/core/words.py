"""Counts in words, in one place: "1 image", "2 images", "1 class has", "3 classes have"."""

from __future__ import annotations


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
