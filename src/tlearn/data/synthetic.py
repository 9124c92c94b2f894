"""A small synthetic photo dataset that a model can really learn: coloured shapes on textured ground.

`tlearn sample-data DIR` writes it so that the README's commands work with no data and no network;
the tests use it too. Each class is a shape in a colour, drawn at a random place, size and angle on a
random noisy gradient, so a classifier must look at the object, and no two images are alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


@dataclass(frozen=True)
class ShapeClass:
    name: str
    shape: str
    rgb: tuple[int, int, int]


CLASSES = (
    ShapeClass("red_circle", "circle", (220, 40, 40)),
    ShapeClass("green_square", "square", (40, 180, 60)),
    ShapeClass("blue_triangle", "triangle", (40, 80, 220)),
    ShapeClass("yellow_star", "star", (235, 200, 30)),
    ShapeClass("purple_ring", "ring", (150, 50, 190)),
    ShapeClass("orange_cross", "cross", (245, 130, 20)),
)


def make_sample_dataset(
    out: str | Path,
    *,
    classes: int = 4,
    per_class: int = 30,
    size: tuple[int, int] = (96, 128),
    seed: int = 0,
) -> Path:
    """Write `per_class` JPEGs for each of the first `classes` shape classes under `out/<class>/`."""
    if not 2 <= classes <= len(CLASSES):
        raise ValueError(f"classes must be between 2 and {len(CLASSES)}. Got {classes}.")
    out = Path(out)
    rng = np.random.default_rng(seed)
    for cls in CLASSES[:classes]:
        folder = out / cls.name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            h, w = int(rng.integers(*size)), int(rng.integers(*size))
            draw_sample(cls, (w, h), rng).save(folder / f"{cls.name}_{i:03d}.jpg", quality=90)
    return out


def draw_sample(cls: ShapeClass, size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    w, h = size
    img = _background(size, rng)
    draw = ImageDraw.Draw(img)
    r = float(rng.uniform(0.28, 0.42)) * min(w, h)
    cx = float(rng.uniform(r, w - r))
    cy = float(rng.uniform(r, h - r))
    colour = tuple(int(np.clip(c + rng.normal(0, 12), 0, 255)) for c in cls.rgb)
    angle = float(rng.uniform(0, 2 * math.pi))
    _draw_shape(draw, cls.shape, (cx, cy), r, angle, colour)
    return img.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0, 0.8))))


def _background(size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    w, h = size
    a, b = rng.uniform(60, 200, size=3), rng.uniform(60, 200, size=3)
    t = np.linspace(0, 1, w)[None, :, None] if rng.random() < 0.5 else np.linspace(0, 1, h)[:, None, None]
    ground = a + (b - a) * t
    ground = np.broadcast_to(ground, (h, w, 3)) + rng.normal(0, 18, size=(h, w, 3))
    return Image.fromarray(np.clip(ground, 0, 255).astype(np.uint8), "RGB")


def _draw_shape(
    draw: ImageDraw.ImageDraw,
    shape: str,
    centre: tuple[float, float],
    r: float,
    angle: float,
    colour: tuple[int, ...],
) -> None:
    cx, cy = centre
    fill = (colour[0], colour[1], colour[2])

    def polygon(points: int, radii: list[float]) -> list[tuple[float, float]]:
        return [
            (
                cx + radii[k % len(radii)] * math.cos(angle + 2 * math.pi * k / points),
                cy + radii[k % len(radii)] * math.sin(angle + 2 * math.pi * k / points),
            )
            for k in range(points)
        ]

    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape == "ring":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=fill, width=max(2, int(r / 3)))
    elif shape == "square":
        draw.polygon(polygon(4, [r]), fill=fill)
    elif shape == "triangle":
        draw.polygon(polygon(3, [r]), fill=fill)
    elif shape == "star":
        draw.polygon(polygon(10, [r, r * 0.45]), fill=fill)
    elif shape == "cross":
        arm = r * 0.33
        for a in (angle, angle + math.pi / 2):
            dx, dy = math.cos(a), math.sin(a)
            px, py = -dy * arm, dx * arm
            draw.polygon(
                [
                    (cx - dx * r + px, cy - dy * r + py),
                    (cx + dx * r + px, cy + dy * r + py),
                    (cx + dx * r - px, cy + dy * r - py),
                    (cx - dx * r - px, cy - dy * r - py),
                ],
                fill=fill,
            )
    else:
        raise ValueError(f"unknown shape {shape!r}")


Box = tuple[float, float, float, float]  # left, top, right, bottom, in pixels


def make_located_dataset(
    out: str | Path, *, classes: int = 3, per_class: int = 30, size: int = 160, radius: float = 0.12, seed: int = 0
) -> dict[str, Box]:
    """Write `per_class` JPEGs per class where only a small coloured shape decides the class, among grey
    clutter; returns each file's shape box by its path relative to `out`. For testing heatmaps: a
    classifier that is right must look inside the box."""
    if not 2 <= classes <= len(CLASSES):
        raise ValueError(f"classes must be between 2 and {len(CLASSES)}. Got {classes}.")
    out = Path(out)
    rng = np.random.default_rng(seed)
    boxes: dict[str, Box] = {}
    for cls in CLASSES[:classes]:
        (out / cls.name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img, box = draw_located(cls, size, rng, radius=radius)
            name = f"{cls.name}/{cls.name}_{i:03d}.jpg"
            img.save(out / name, quality=92)
            boxes[name] = box
    return boxes


def draw_located(
    cls: ShapeClass, size: int, rng: np.random.Generator, *, radius: float = 0.12, clutter: int = 7
) -> tuple[Image.Image, Box]:
    """A square image: noisy ground, `clutter` grey shapes of every kind and size anywhere, and on top the
    class's shape in its colour, `radius` times the side, away from the borders (a center crop keeps it).
    Returns the image and the shape's box."""
    img = _background((size, size), rng)
    draw = ImageDraw.Draw(img)
    for _ in range(clutter):
        grey = float(rng.uniform(30, 230))
        tint = tuple(int(np.clip(grey + rng.normal(0, 8), 0, 255)) for _ in range(3))
        r0 = float(rng.uniform(0.06, 0.18)) * size
        shape = CLASSES[int(rng.integers(len(CLASSES)))].shape
        centre = (float(rng.uniform(0, size)), float(rng.uniform(0, size)))
        _draw_shape(draw, shape, centre, r0, float(rng.uniform(0, 2 * math.pi)), tint)
    r = radius * size
    margin = r + 0.1 * size
    cx, cy = float(rng.uniform(margin, size - margin)), float(rng.uniform(margin, size - margin))
    colour = tuple(int(np.clip(c + rng.normal(0, 10), 0, 255)) for c in cls.rgb)
    _draw_shape(draw, cls.shape, (cx, cy), r, float(rng.uniform(0, 2 * math.pi)), colour)
    return img, (cx - r, cy - r, cx + r, cy + r)
