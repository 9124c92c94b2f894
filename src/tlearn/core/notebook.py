"""Jupyter: is this a notebook kernel, a progress callback that draws tqdm bars there, and small HTML tables.

The result classes show themselves in a notebook through `_repr_html_`, built from the pieces here
(each layer renders its own values: `tlearn.artifacts.notebook`, `tlearn.infer.notebook`,
`tlearn.training.notebook`). Every piece escapes the text it is given, so a class name or a file
name can never become markup. Nothing here imports IPython or tqdm until it is needed.
"""

from __future__ import annotations

import html
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from tlearn.core.progress import Progress, no_progress

# Rows a table shows before it says how many more there are: a notebook stays quick with 10,000 predictions.
MAX_ROWS = 50


def in_notebook() -> bool:
    """True inside a Jupyter kernel (IPython with a kernel), False in a terminal IPython or plain Python.

    A kernel has always imported IPython, so when it is not in `sys.modules` this is not one: the
    check never imports IPython, installed or not.
    """
    ipython = sys.modules.get("IPython")
    get_ipython = getattr(ipython, "get_ipython", None)
    if get_ipython is None:
        return False
    try:
        shell = get_ipython()
    except Exception:  # a half-initialised or stubbed IPython: not a kernel we can draw in
        return False
    return shell is not None and getattr(shell, "kernel", None) is not None


class NotebookProgress:
    """A `Progress` callback drawing one tqdm bar per stage; a bar closes when its stage is complete.

    `bar` makes a bar from tqdm's keywords (`total`, `desc`): `tqdm.auto.tqdm`, a widget in Jupyter and
    text elsewhere. A stage that starts again (its count falls, or its total changes) gets a new bar;
    a repeated report of a finished stage draws nothing.
    """

    def __init__(self, bar: Callable[..., Any]) -> None:
        self._make = bar
        self._bar: Any = None
        self._stage: str | None = None
        self._finished: tuple[str, int] | None = None  # (stage, total) of the bar closed last

    def __call__(self, stage: str, done: int, total: int) -> None:
        if total <= 0:  # a stage with nothing to do ("views" without augmented views): no bar
            return
        bar = self._bar
        if bar is None or stage != self._stage or total != bar.total or done < bar.n:
            if bar is None and self._finished == (stage, total) and done >= total:
                return
            self.close()
            bar = self._bar = self._make(total=total, desc=stage)
            self._stage, self._finished = stage, None
        bar.update(done - bar.n)
        if done >= total:
            self._finished = (stage, total)
            self.close()

    def close(self) -> None:
        """Close the open bar, if any (a run that stops mid-stage leaves one open)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def notebook_progress() -> Progress:
    """A tqdm progress callback for `tlearn.train` in a notebook; reports nothing when tqdm is missing."""
    try:
        from tqdm.auto import tqdm  # installed with huggingface_hub
    except ImportError:
        return no_progress
    return NotebookProgress(tqdm)


# --- HTML pieces ---------------------------------------------------------------------------------


def escape(value: Any) -> str:
    """Text as HTML: the same escaping in the notebook views and the report."""
    return html.escape(str(value), quote=True)


def html_table(
    header: Sequence[str], rows: Iterable[Sequence[Any]], *, numeric: Iterable[int] = (), limit: int = MAX_ROWS
) -> str:
    """A table of text cells (escaped); columns in `numeric` align right; after `limit` rows, a count of the rest."""
    right = set(numeric)

    def cell(i: int, value: Any, tag: str) -> str:
        style = ' style="text-align:right"' if i in right else ' style="text-align:left"'
        return f"<{tag}{style}>{escape(value)}</{tag}>"

    all_rows = list(rows)
    body = ["<tr>" + "".join(cell(i, v, "td") for i, v in enumerate(r)) + "</tr>" for r in all_rows[:limit]]
    if len(all_rows) > limit:
        body.append(f'<tr><td colspan="{len(header)}"><i>… and {len(all_rows) - limit:,} more</i></td></tr>')
    head = "".join(cell(i, h, "th") for i, h in enumerate(header))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def html_facts(facts: Mapping[str, Any]) -> str:
    """One row per fact: its name, then its value (escaped)."""
    rows = "".join(
        f'<tr><th style="text-align:left">{escape(k)}</th><td style="text-align:left">{escape(v)}</td></tr>'
        for k, v in facts.items()
    )
    return f"<table><tbody>{rows}</tbody></table>"


def html_block(title: str, *parts: str) -> str:
    """A titled block of fragments that are already HTML (from the functions above)."""
    inner = "".join(p for p in parts if p)
    return f'<div class="tlearn"><p><b>{escape(title)}</b></p>{inner}</div>'


def html_note(text: str) -> str:
    return f"<p>{escape(text)}</p>"


def percent(value: Any) -> str:
    """A fraction as a percentage with one decimal, "?" when it is not a number."""
    return f"{float(value):.1%}" if isinstance(value, int | float) else "?"
