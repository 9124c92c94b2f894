"""Small Markdown pieces for the model card: escaped text, tables, percentages."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

_MARKDOWN = re.compile(r"([\\`*\[\]<>|&#])")


def md(text: object) -> str:
    """Text safe in Markdown: its markup characters escaped, on one line (a class name cannot add a heading)."""
    return _MARKDOWN.sub(r"\\\1", " ".join(str(text).split()))


def table(header: Sequence[str], rows: Iterable[Sequence[str]], *, right: Iterable[int] = ()) -> str:
    """A Markdown table of cells already escaped; columns in `right` align right."""
    align = set(right)
    rule = ["---:" if i in align else "---" for i in range(len(header))]
    lines = [header, rule, *rows]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in lines)


def quote(text: str) -> str:
    return "\n".join(f"> {md(line)}" if line.strip() else ">" for line in text.splitlines())


def pct(value: float) -> str:
    return f"{value:.1%}"


def floats(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:.3g}" for v in values) + ")"
