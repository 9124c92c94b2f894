"""A contact sheet: one self-contained HTML page of thumbnails, each with its rank, file and the model's guess.

What `tlearn suggest` writes beside suggestions.csv, so the photos to label can be looked at in any
browser, offline (thumbnails are embedded JPEGs, no external assets).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from tlearn.core.files import atomic_path
from tlearn.core.notebook import escape

THUMB_SIDE = 160


@dataclass(frozen=True)
class Tile:
    pixels: np.ndarray  # uint8 (H, W, 3)
    title: str  # e.g. "1. IMG_0042.jpg"
    caption: str  # e.g. "guess: daisy (41%)"


def thumbnail_uri(pixels: np.ndarray, side: int = THUMB_SIDE) -> str:
    """A JPEG data: URI of the image shrunk to fit `side` x `side`."""
    image = Image.fromarray(pixels)
    image.thumbnail((side, side), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#222}
h1{font-size:1.3rem}.muted{color:#666}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(180px,1fr));gap:12px}
figure{margin:0;padding:8px;border:1px solid #ddd;border-radius:6px;background:#fafafa}
figure img{display:block;margin:0 auto 6px;max-width:160px;max-height:160px}
.title{font-weight:600;font-size:.85rem;word-break:break-all}.caption{font-size:.85rem}
"""


def contact_sheet_html(tiles: Sequence[Tile], *, title: str, note: str = "") -> str:
    cells = "".join(
        f'<figure><img src="{thumbnail_uri(t.pixels)}" alt="{escape(t.title)}">'
        f'<div class="title">{escape(t.title)}</div><div class="caption">{escape(t.caption)}</div></figure>'
        for t in tiles
    )
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f"<style>{_CSS}</style></head><body><h1>{escape(title)}</h1>"
        f'<p class="muted">{escape(note)}</p><div class="grid">{cells}</div></body></html>'
    )


def write_contact_sheet(path: Path, tiles: Sequence[Tile], *, title: str, note: str = "") -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(contact_sheet_html(tiles, title=title, note=note), encoding="utf-8")
    return path
