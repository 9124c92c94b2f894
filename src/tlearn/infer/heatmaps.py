"""Heatmaps of a loaded bundle: `tlearn predict --explain DIR` and the server's `explain` option.

Each image is decoded and framed as for prediction (the eval transform), then `models.explain`
computes its Grad-CAM for the predicted class and lays it over the framed image. Heatmaps need the
network's gradients, so they need the PyTorch engine (an ONNX model gives none).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from tlearn.core.errors import ConfigError, FileSystemError, OutputError
from tlearn.core.files import atomic_path
from tlearn.core.marks import is_tlearn_picture, png_metadata
from tlearn.data.images import MAX_PIXELS
from tlearn.infer.inputs import ImageInput, input_name
from tlearn.infer.predictor import BasePredictor, Predictor
from tlearn.infer.results import Failure
from tlearn.models.classifier import Classifier
from tlearn.models.explain import class_activation_maps, overlay

BATCH = 16  # images per backward pass: the gradients of a batch take about twice a forward pass's memory


@dataclass(frozen=True)
class Explained:
    """One image's heatmap: `label` the class it explains (the predicted one) and its `probability`;
    `overlay` uint8 (H, W, 3) at the model's input size, the framed image with the map over it."""

    source: str
    label: str
    probability: float
    overlay: np.ndarray

    def png(self) -> bytes:
        return png_bytes(self.overlay)


def explain_images(
    predictor: BasePredictor,
    images: Sequence[ImageInput],
    *,
    names: Sequence[str] | None = None,
    max_pixels: int = MAX_PIXELS,
) -> tuple[list[Explained], list[Failure]]:
    """The heatmap of every input that can be read, in order; the others as failures with the reason."""
    classifier = torch_classifier(predictor)
    labels = list(names) if names is not None else [input_name(item, i) for i, item in enumerate(images)]
    done: list[Explained] = []
    failures: list[Failure] = []
    for idx, x, failed in predictor.input_batches(images, batch_size=BATCH, max_pixels=max_pixels):
        failures += [Failure(labels[i], err.message, type(err)) for i, err in failed]
        if not len(idx):
            continue
        proba = predictor.proba_of_inputs(x)
        maps = class_activation_maps(classifier, x, targets=proba.argmax(axis=1)).maps
        for j, i in enumerate(idx):
            k = int(proba[j].argmax())
            done.append(Explained(labels[i], predictor.classes[k], float(proba[j, k]), overlay(x[j], maps[j])))
    return done, failures


def torch_classifier(predictor: BasePredictor) -> Classifier:
    """The predictor's PyTorch network, or a one-line error for the ONNX engine."""
    if not isinstance(predictor, Predictor):
        raise ConfigError(
            "Heatmaps need the PyTorch engine: an ONNX model cannot give the gradients they are made of.",
            hint="Use the bundle folder with --engine torch (the default).",
        )
    if not isinstance(predictor.classifier, Classifier):
        raise ConfigError(f"Heatmaps need a tlearn Classifier, not a {type(predictor.classifier).__name__}.")
    return predictor.classifier


def write_overlays(explained: Sequence[Explained], out: str | Path) -> list[Path]:
    """One PNG per image in `out` (made if needed), named after its input: `photos/cat.jpg` -> `cat.png`
    (`cat-2.png` for the next input of the same name). Returns the files written, in order."""
    folder = Path(out).expanduser()
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"--explain {folder} is a file: it takes a folder to write the heatmaps into.")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        taken: set[str] = set()  # names given in this call; a heatmap left by an earlier run is replaced
        written = []
        for item in explained:
            name = _free_name(Path(item.source).stem or "image", taken, folder)
            path = folder / name
            with atomic_path(path) as tmp:
                tmp.write_bytes(item.png())
            written.append(path)
        return written
    except OSError as err:
        user = FileSystemError.from_os_error(err)
        if user is None:
            raise
        raise user from None


def png_bytes(rgb: np.ndarray) -> bytes:
    buf, info = io.BytesIO(), PngInfo()
    for key, value in png_metadata().items():
        info.add_text(key, value)
    Image.fromarray(rgb, "RGB").save(buf, "PNG", optimize=False, pnginfo=info)
    return buf.getvalue()


def _free_name(stem: str, taken: set[str], folder: Path) -> str:
    """`stem`.png, or `stem`-2.png, -3 ...: a name not given in this call and not a file of the user's (a photo
    `cat.png` in the folder stays; its heatmap goes to cat-2.png)."""
    name, n = f"{stem}.png", 1
    while name in taken or ((folder / name).exists() and not is_tlearn_picture(folder / name)):
        n += 1
        name = f"{stem}-{n}.png"
    taken.add(name)
    return name
