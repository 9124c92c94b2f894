"""Grids of photos with a caption over each: the report's mistakes, right answers and label check.

Drawn with Pillow, not matplotlib: a grid is photos pasted side by side and a few lines of text, and
matplotlib spent 0.5 to 1 s on each (one axes per photo, each laid out twice to find the figure's tight
box, then the whole canvas resampled), most of the report's picture time. The text is set in matplotlib's
own DejaVu Sans, so the grids read like the charts beside them. A photo is drawn at TILE px, about its size
on the page (four across the report's 1,124 px column), and the grid is written as a JPEG.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from tlearn.core.files import atomic_path
from tlearn.core.marks import jpeg_comment

TILE = 256  # px: a photo's side in the grid
GAP = 16  # px between photos and around the grid
CAPTION_PX, TITLE_PX, SMALLEST_PX = 13, 17, 9  # text heights; a caption too wide for its photo shrinks to fit
LINE = 16  # px per caption line
TITLE_H = 34  # px above the first row
MISSING = (225, 225, 225)  # the tile of an image that cannot be read
INK, GREY = (34, 34, 34), (85, 85, 85)
JPEG_QUALITY = 85

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont


def photo_grid(
    tiles: Sequence[tuple[np.ndarray | None, str]],
    path: Path,
    *,
    cols: int,
    title: str,
    empty: str,
    missing: str = "image not found",
) -> Path:
    """Write the grid of `tiles` (uint8 (H, W, 3) pixels, or None for an image that cannot be read, each
    with its caption, lines split by "\\n") to the JPEG `path`, atomically; `empty` is said when there are none."""
    n = max(len(tiles), 1)
    cols = max(1, min(cols, n))
    rows = -(-n // cols)
    lines = max((caption.count("\n") + 1 for _, caption in tiles), default=1)
    cell_h = lines * LINE + 4 + TILE
    canvas = Image.new("RGB", (cols * (TILE + GAP) + GAP, TITLE_H + rows * (cell_h + GAP)), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((GAP // 2, 8), title, font=_font(TITLE_PX), fill=INK)
    for i, (pixels, caption) in enumerate(tiles):
        left, top = GAP + (i % cols) * (TILE + GAP), TITLE_H + (i // cols) * (cell_h + GAP)
        for k, line in enumerate(caption.split("\n")):
            _centred(draw, left + TILE // 2, top + k * LINE, line, TILE + GAP - 4, CAPTION_PX, INK)
        photo_top = top + lines * LINE + 4
        if pixels is None:
            draw.rectangle((left, photo_top, left + TILE - 1, photo_top + TILE - 1), fill=MISSING)
            _centred(draw, left + TILE // 2, photo_top + TILE // 2 - LINE // 2, missing, TILE, CAPTION_PX, GREY)
        else:
            photo = _fitted(pixels)
            canvas.paste(photo, (left + (TILE - photo.width) // 2, photo_top + (TILE - photo.height) // 2))
    if not tiles:
        _centred(draw, canvas.width // 2, TITLE_H + cell_h // 2, empty, canvas.width, TITLE_PX, INK)
    with atomic_path(Path(path)) as tmp:
        canvas.save(tmp, format="JPEG", quality=JPEG_QUALITY, comment=jpeg_comment())
    return Path(path)


def _fitted(pixels: np.ndarray) -> Image.Image:
    """The photo scaled to fit TILE x TILE, keeping its shape."""
    image = Image.fromarray(np.ascontiguousarray(pixels[..., :3]))
    scale = TILE / max(image.size)
    if scale != 1.0:
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.LANCZOS)
    return image


def _centred(
    draw: ImageDraw.ImageDraw, x: int, top: int, text: str, width: int, px: int, fill: tuple[int, int, int]
) -> None:
    """`text` centred on `x` below `top`, in the largest size up to `px` that fits `width`."""
    font = _font(px)
    while px > SMALLEST_PX and draw.textlength(text, font=font) > width:
        px -= 1
        font = _font(px)
    draw.text((x, top), text, font=font, fill=fill, anchor="ma")


@cache
def _font(px: int) -> Font:
    """DejaVu Sans at `px` pixels: matplotlib's own font file (Pillow's built-in one where it is missing)."""
    import matplotlib

    try:
        return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"), px)
    except OSError:
        return ImageFont.load_default(px)
