"""Using a trained bundle from Python: `clf = tlearn.load(bundle)`, then `clf.predict(images)`.

Images may be file paths, PIL images or uint8 (H, W, 3) arrays. They are decoded and shrunk the way
training decoded them (same working size and interpolation), then go through the bundle's own eval
transform and network, so a bundle predicts what it predicted when it was evaluated.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from tlearn.bundle import BundleConfig, load_bundle
from tlearn.data.augment import build_eval_transform
from tlearn.data.images import decode_image, shrink_to_short_side, upright_rgb
from tlearn.errors import ImageError
from tlearn.evaluate import softmax
from tlearn.model import Classifier
from tlearn.progress import Progress, no_progress

ImageInput = str | Path | Image.Image | np.ndarray


class Predictor:
    """A loaded bundle: `classes`, `predict_proba(images)` -> (N, K), `predict(images)` -> names."""

    def __init__(self, classifier: Classifier, config: BundleConfig) -> None:
        self.classifier = classifier.eval()
        self.config = config
        self.classes: tuple[str, ...] = config.classes
        self.preprocessing = config.preprocessing
        self._transform = build_eval_transform(config.preprocessing)

    def __repr__(self) -> str:
        return f"Predictor({self.config.backbone}, {len(self.classes)} classes, method={self.config.method})"

    def pixels(self, image: ImageInput) -> np.ndarray:
        """Decode one input to uint8 (H, W, 3) at the working size. Raises ImageError."""
        prep = self.preprocessing
        if isinstance(image, str | Path):
            return decode_image(Path(image), short_side=prep.working_short_side, resample=prep.resample).pixels
        if isinstance(image, Image.Image):
            img = upright_rgb(image)
        elif isinstance(image, np.ndarray):
            img = Image.fromarray(_as_uint8_rgb(image))
        else:
            raise ImageError(f"cannot predict on a {type(image).__name__}: pass a path, a PIL image or an array")
        return np.asarray(shrink_to_short_side(img, prep.working_short_side, resample=prep.resample))

    def logits_of_pixels(self, pixels: Sequence[np.ndarray], *, batch_size: int = 32, tta: bool = False) -> np.ndarray:
        """(N, K) logits of decoded images; with `tta`, averaged with their mirror images (in probability)."""
        out = []
        for start in range(0, len(pixels), batch_size):
            x = torch.stack([self._transform(p) for p in pixels[start : start + batch_size]])
            with torch.inference_mode():
                logits = self.classifier(x.contiguous(memory_format=torch.channels_last)).float()
                if tta:
                    flipped = self.classifier(x.flip(-1).contiguous(memory_format=torch.channels_last)).float()
                    p = (logits.softmax(1) + flipped.softmax(1)) / 2
                    logits = p.clamp_min(1e-12).log()
            out.append(logits.numpy())
        k = len(self.classes)
        return np.concatenate(out) if out else np.zeros((0, k), dtype=np.float32)

    def predict_proba(
        self,
        images: Sequence[ImageInput] | ImageInput,
        *,
        batch_size: int = 32,
        tta: bool = False,
        progress: Progress = no_progress,
    ) -> np.ndarray:
        """(N, K) class probabilities, columns in `classes` order. Unreadable files raise ImageError."""
        items = _as_list(images)
        pixels = []
        for i, item in enumerate(items):
            pixels.append(self.pixels(item))
            progress("decode", i + 1, len(items))
        return softmax(self.logits_of_pixels(pixels, batch_size=batch_size, tta=tta))

    def predict(self, images: Sequence[ImageInput] | ImageInput, **kwargs: Any) -> list[str]:
        proba = self.predict_proba(images, **kwargs)
        return [self.classes[i] for i in proba.argmax(axis=1)]


def load(bundle: str | Path) -> Predictor:
    """Load a bundle folder written by `tlearn train`. Raises BundleError."""
    classifier, config = load_bundle(bundle)
    return Predictor(classifier, config)


def _as_uint8_rgb(arr: np.ndarray) -> np.ndarray:
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ImageError(f"an image array must be (H, W, 3) RGB; got shape {arr.shape}")
    if arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.floating) and arr.max() <= 1.0:
            arr = arr * 255.0
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr[..., :3])


def _as_list(images: Sequence[ImageInput] | ImageInput) -> list[ImageInput]:
    if isinstance(images, str | Path | Image.Image) or (isinstance(images, np.ndarray) and images.ndim == 3):
        return [images]
    return list(images)
