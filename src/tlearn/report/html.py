"""Small HTML pieces of report.html: escaped text, cards, tables, folded blocks, embedded pictures.

Every function returns a fragment with its text escaped, so a class name or a note in tlearn.json can
never become markup. Values of unknown shape (records the report has no section for) are shown
generically by `kv_table`: one row per key, nested values compact or folded away.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tlearn.core.notebook import escape

# Command-line flags in advice ("--preset strong", "--unfreeze 1") are set as code.
FLAG = re.compile(r"--[a-z][a-z0-9-]*(?: (?!or\b|and\b)[\w.+-]*\w)?")


def card(value: str, label: str, *, css: str = "") -> str:
    """A headline number with its label under it; `css` colours it (good, meh, bad)."""
    value, label = escape(value), escape(label)
    return f'<div class="card {css}"><div class="value">{value}</div><div class="label">{label}</div></div>'


def figure(path: Path, alt: str, *, natural: bool = False) -> str:
    """A PNG or JPEG embedded as base64; `natural` keeps its full size in a scrolling box (large matrices)."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    mime = "image/jpeg" if Path(path).suffix.lower() in (".jpg", ".jpeg") else "image/png"
    css = ' class="natural"' if natural else ""
    return f'<figure{css}><img src="data:{mime};base64,{data}" alt="{escape(alt)}"></figure>'


def table(
    header: Sequence[str], rows: Iterable[Sequence[str]], *, numeric: Sequence[int] = (), scroll: bool = False
) -> str:
    """A table of text cells; columns in `numeric` align right; a cell starting with "!" is highlighted
    (the "!" is dropped); `scroll` puts a long table in a box of its own."""

    def cell(i: int, value: str, tag: str) -> str:
        classes = ["num"] if i in numeric else []
        if value.startswith("!"):
            value = value[1:]
            classes.append("low")
        css = f' class="{" ".join(classes)}"' if classes else ""
        return f"<{tag}{css}>{escape(value)}</{tag}>"

    head = "".join(cell(i, h, "th") for i, h in enumerate(header))
    body = "\n".join("<tr>" + "".join(cell(i, str(v), "td") for i, v in enumerate(r)) + "</tr>" for r in rows)
    out = f"<table><thead><tr>{head}</tr></thead><tbody>\n{body}\n</tbody></table>"
    return f'<div class="scroll">{out}</div>' if scroll else out


def kv_table(values: Mapping[str, Any]) -> str:
    """One row per key, its value shown by its shape: nested values compact or folded away."""
    rows = "\n".join(f"<tr><th>{escape(str(k))}</th><td>{_value(v)}</td></tr>" for k, v in values.items())
    return f'<table class="kv"><tbody>{rows}</tbody></table>'


def folded(summary: str, content: str) -> str:
    """`content` hidden under a one-line summary that opens it."""
    return f"<details><summary>{escape(summary)}</summary>\n{content}\n</details>"


def bullets(items: Iterable[str]) -> str:
    """A bullet list; command-line flags in the text are set as code."""
    return "<ul>" + "".join(f"<li>{FLAG.sub(_code, escape(i))}</li>" for i in items) + "</ul>"


def json_block(v: Any) -> str:
    return f"<pre>{escape(json.dumps(v, indent=1, default=str))}</pre>"


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return escape(f"{v:.4g}")
    if v is None:
        return '<span class="muted">none</span>'
    if isinstance(v, Mapping):
        return kv_table(v) if len(v) <= 12 else folded(f"{len(v)} entries", json_block(v))
    if isinstance(v, list | tuple) and v and len(v) <= 20 and all(isinstance(x, Mapping) for x in v):
        keys = list(dict.fromkeys(k for x in v for k in x))
        return table(keys, [[_text(x.get(k)) for k in keys] for x in v])
    if isinstance(v, list | tuple):
        if len(v) <= 8 and all(isinstance(x, str | int | float | bool) or x is None for x in v):
            return ", ".join(_value(x) for x in v) or '<span class="muted">none</span>'
        return folded(f"{len(v)} items", json_block(v))
    return escape(str(v))


def _text(v: Any) -> str:
    """A table cell as plain text (it is escaped by `table`)."""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4g}"
    if v is None:
        return ""
    return v if isinstance(v, str) else json.dumps(v)


def _code(match: re.Match[str]) -> str:
    return f"<code>{match.group(0)}</code>"
