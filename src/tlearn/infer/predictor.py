"""Using a trained bundle from Python: `clf = tlearn.load(bundle)`, then `clf.predict(images)`.

Images may be file paths, encoded bytes, PIL images or uint8 (H, W, 3) arrays. They are decoded and
shrunk the way training decoded them (same working size and interpolation), then go through the
bundle's own eval transform and network, so a bundle predicts what it predicted when it was evaluated.

Two engines run a bundle: `Predictor` (its PyTorch network) and `OnnxPredictor` (an exported ONNX
graph, in `onnx_engine.py`). Both are a `BasePredictor`: decoding on a thread pool, the eval
transform, batching, the mirror-image TTA, top-k and per-file errors live here once; an engine only
turns a batch of model inputs into probabilities.
"""

from __future__ import annotations

import os
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image

from tlearn.artifacts.bundle import BundleConfig
from tlearn.core.errors import ConfigError, ImageError
from tlearn.core.progress import Progress, no_progress
from tlearn.data.augment import build_eval_transform
from tlearn.data.images import MAX_PIXELS, decode_image, is_image_path, shrink_to_short_side, upright_rgb
from tlearn.models.tta import mirror_proba

ImageInput = str | Path | bytes | Image.Image | np.ndarray
LIST_SUFFIXES = frozenset({".txt", ".lst"})  # a text file of image paths, one per line

# Decoding threads: Pillow releases the GIL while it decodes and resizes, so threads scale with cores.
DECODE_WORKERS = max(1, min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 4))


@dataclass(frozen=True)
class Scored:
    """One class of a top-k list and its probability (0 to 1)."""

    label: str
    probability: float


@dataclass(frozen=True)
class Prediction:
    """The top-k classes of one image, most probable first. `source` names the image (its path)."""

    source: str
    top: tuple[Scored, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.source,
            "predictions": [{"class": s.label, "probability": s.probability} for s in self.top],
        }


@dataclass(frozen=True)
class Failure:
    """An input that could not be predicted, and why (a short reason from the decoder)."""

    source: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"path": self.source, "error": self.reason}


@dataclass(frozen=True)
class Predictions:
    """What `predict_many` returns: predictions in input order, the inputs that failed, wall time (s)."""

    items: tuple[Prediction, ...]
    failures: tuple[Failure, ...]
    seconds: float

    @property
    def images_per_second(self) -> float:
        n = len(self.items) + len(self.failures)
        return n / self.seconds if self.seconds > 0 else 0.0


class BasePredictor(ABC):
    """A loaded model: `classes`, `config`, `predict_proba(images)` -> (N, K), `predict(images)` -> names.

    Subclasses implement `proba_of_batch`; everything from an image to a top-k list is shared.
    """

    engine: ClassVar[str] = ""

    def __init__(self, config: BundleConfig, *, source: str = "") -> None:
        self.config = config
        self.classes: tuple[str, ...] = config.classes
        self.preprocessing = config.preprocessing
        self.source = source  # where it was loaded from: a bundle folder or an ONNX file
        self._transform = build_eval_transform(config.preprocessing)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.config.backbone}, {len(self.classes)} classes, "
            f"method={self.config.method}, engine={self.engine})"
        )

    @abstractmethod
    def proba_of_batch(self, x: np.ndarray) -> np.ndarray:
        """Float32 (N, 3, H, W) RGB in [0, 1] at the input size -> (N, K) probabilities, rows summing to 1."""

    # From an input to the model's input.

    def pixels(self, image: ImageInput, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
        """Decode one input to uint8 (H, W, 3) at the working size. Raises ImageError.

        Files and bytes larger than `max_pixels` are refused before they are decoded (image bombs).
        """
        prep = self.preprocessing
        if isinstance(image, str | Path | bytes):
            source = image if isinstance(image, bytes) else Path(image)
            try:
                decoded = decode_image(
                    source, short_side=prep.working_short_side, resample=prep.resample, max_pixels=max_pixels
                )
            except ImageError:
                raise
            except Exception as err:  # Pillow's plugins fail on hostile files in ways of their own
                raise ImageError(f"cannot be decoded ({type(err).__name__}: {err})") from None
            return decoded.pixels
        if isinstance(image, Image.Image):
            img = upright_rgb(image)
        elif isinstance(image, np.ndarray):
            img = Image.fromarray(_as_uint8_rgb(image))
        else:
            raise ImageError(
                f"cannot predict on a {type(image).__name__}: pass a path, bytes, a PIL image or a uint8 array"
            )
        return np.array(shrink_to_short_side(img, prep.working_short_side, resample=prep.resample))  # writable

    def model_input(self, pixels: np.ndarray | Image.Image) -> np.ndarray:
        """The eval transform: decoded pixels -> float32 (3, H, W) in [0, 1] at the input size."""
        out: torch.Tensor = self._transform(pixels)
        return out.numpy()

    # Probabilities.

    def proba_of_inputs(self, x: np.ndarray, *, tta: bool = False) -> np.ndarray:
        """(N, K) probabilities of model inputs (N, 3, H, W); with `tta`, averaged with the mirror images'.

        A bundle trained with the mirror TTA has it inside its network already, so `tta` adds nothing.
        """
        if len(x) == 0:
            return np.zeros((0, len(self.classes)), dtype=np.float32)
        proba = self.proba_of_batch(x)
        if tta and not self.config.flip_tta:
            proba = mirror_proba(proba, self.proba_of_batch(np.ascontiguousarray(x[..., ::-1])))
        return proba

    def predict_proba(
        self,
        images: Sequence[ImageInput] | ImageInput,
        *,
        batch_size: int = 32,
        tta: bool = False,
        progress: Progress = no_progress,
    ) -> np.ndarray:
        """(N, K) class probabilities, columns in `classes` order. An unreadable input raises ImageError."""
        items = _as_list(images)
        out = [np.zeros((0, len(self.classes)), dtype=np.float32)]
        for _, proba, failed in self._batches(items, batch_size=batch_size, tta=tta, progress=progress):
            if failed:
                i, err = failed[0]
                raise ImageError(f"Cannot read {_name(items[i], i)}: {err.message}.", hint=err.hint)
            out.append(proba)
        return np.concatenate(out)

    def predict(self, images: Sequence[ImageInput] | ImageInput, **kwargs: Any) -> list[str]:
        """The most probable class name of each image (keywords as for `predict_proba`)."""
        proba = self.predict_proba(images, **kwargs)
        return [self.classes[i] for i in proba.argmax(axis=1)]

    def top_k(self, proba: np.ndarray, k: int) -> list[tuple[Scored, ...]]:
        """Each row of (N, K) probabilities as its `k` most probable classes, most probable first."""
        k = max(1, min(k, len(self.classes)))
        order = np.argsort(-proba, axis=1, kind="stable")[:, :k]
        return [
            tuple(Scored(self.classes[j], float(row[j])) for j in idx) for row, idx in zip(proba, order, strict=True)
        ]

    def predict_many(
        self,
        images: Sequence[ImageInput],
        *,
        names: Sequence[str] | None = None,
        top_k: int = 3,
        batch_size: int = 32,
        tta: bool = False,
        max_pixels: int = MAX_PIXELS,
        progress: Progress = no_progress,
    ) -> Predictions:
        """Top-k of every input that can be read; the others are listed with the reason, never raised.

        `names` label the inputs in the result (default: paths as given, else "image 0", "image 1"...).
        """
        start = time.perf_counter()
        items = list(images)
        labels = list(names) if names is not None else [_name(item, i) for i, item in enumerate(items)]
        if len(labels) != len(items):
            raise ConfigError(f"names must label every image: got {len(labels)} names for {len(items)} images.")
        got: list[Prediction] = []
        failures: list[Failure] = []
        for idx, proba, failed in self._batches(
            items, batch_size=batch_size, tta=tta, progress=progress, max_pixels=max_pixels
        ):
            got += [Prediction(labels[i], top) for i, top in zip(idx, self.top_k(proba, top_k), strict=True)]
            failures += [Failure(labels[i], err.message) for i, err in failed]
        return Predictions(tuple(got), tuple(failures), time.perf_counter() - start)

    # The pipeline: decode ahead on threads, infer in batches on this thread.

    def input_batches(
        self, images: Sequence[ImageInput], *, batch_size: int = 32, max_pixels: int = MAX_PIXELS
    ) -> Iterator[tuple[list[int], np.ndarray, list[tuple[int, ImageError]]]]:
        """Model inputs batch by batch: (indices of the inputs read, their (n, 3, H, W) float32 inputs,
        the inputs that failed with their ImageError). Every input is in exactly one batch's lists."""
        if batch_size < 1:
            raise ConfigError(f"--batch-size must be 1 or more. Got {batch_size}.")
        h, w = self.preprocessing.input_size
        total = len(images)
        idx: list[int] = []
        xs: list[np.ndarray] = []
        failed: list[tuple[int, ImageError]] = []
        for i, prepared in enumerate(self._prepared(images, ahead=2 * batch_size, max_pixels=max_pixels)):
            if isinstance(prepared, ImageError):
                failed.append((i, prepared))
            else:
                idx.append(i)
                xs.append(prepared)
            if len(xs) == batch_size or i == total - 1:
                yield idx, np.stack(xs) if xs else np.zeros((0, 3, h, w), np.float32), failed
                idx, xs, failed = [], [], []

    def _batches(
        self,
        items: Sequence[ImageInput],
        *,
        batch_size: int,
        tta: bool,
        progress: Progress,
        max_pixels: int = MAX_PIXELS,
    ) -> Iterator[tuple[list[int], np.ndarray, list[tuple[int, ImageError]]]]:
        """As `input_batches`, with the (n, K) probabilities in place of the inputs."""
        done = 0
        for idx, x, failed in self.input_batches(items, batch_size=batch_size, max_pixels=max_pixels):
            proba = self.proba_of_inputs(x, tta=tta)
            done += len(idx) + len(failed)
            yield idx, proba, failed
            progress("predict", done, len(items))

    def _prepared(
        self, items: Sequence[ImageInput], *, ahead: int, max_pixels: int
    ) -> Iterator[np.ndarray | ImageError]:
        """Model inputs (3, H, W) in input order, or the ImageError of each input that cannot be read.

        Decoding runs on a thread pool at most `ahead` inputs in front of the caller, so inference on
        one batch overlaps the decoding of the next and memory stays flat on a folder of any size.
        """

        def prepare(item: ImageInput) -> np.ndarray | ImageError:
            try:
                return self.model_input(self.pixels(item, max_pixels=max_pixels))
            except ImageError as err:
                return err

        if len(items) <= 1:  # one image (a server request): no pool to start
            yield from (prepare(item) for item in items)
            return
        pool = ThreadPoolExecutor(max_workers=DECODE_WORKERS, thread_name_prefix="tlearn-decode")
        pending: deque[Future[np.ndarray | ImageError]] = deque()
        try:
            for item in items:
                pending.append(pool.submit(prepare, item))
                if len(pending) >= ahead:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


class Predictor(BasePredictor):
    """The PyTorch engine: the bundle's own `Classifier`, on the CPU."""

    engine = "torch"

    def __init__(self, classifier: torch.nn.Module, config: BundleConfig, *, source: str = "") -> None:
        super().__init__(config, source=source)
        self.classifier = classifier.eval()

    def proba_of_batch(self, x: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        with torch.inference_mode():
            logits = self.classifier(t.contiguous(memory_format=torch.channels_last)).float()
        return logits.softmax(dim=1).numpy()


def find_images(paths: Sequence[str | Path]) -> tuple[list[Path], list[Failure]]:
    """Expand what a user names into image files, in order, each once.

    A folder gives its image files (by extension, recursively, sorted, hidden files skipped); a
    .txt or .lst file gives the paths it lists, one per line (relative to the list's folder; blank
    lines and # comments skipped); any other file is taken as an image. Paths that do not exist are
    returned as failures, as are folders without images.
    """
    found: dict[Path, None] = {}
    failures: list[Failure] = []

    def add(path: Path, *, from_list: bool = False) -> None:
        if path.is_dir():
            images = list(_images_below(path))
            if not images:
                failures.append(Failure(str(path), "folder holds no image files"))
            found.update(dict.fromkeys(images))
        elif path.is_file() and path.suffix.lower() in LIST_SUFFIXES and not from_list:
            for line in _list_lines(path):
                entry = Path(line).expanduser()
                add(entry if entry.is_absolute() else path.parent / entry, from_list=True)
        elif path.exists():
            found[path] = None
        else:
            failures.append(Failure(str(path), "no such file or folder"))

    for p in paths:
        add(Path(p).expanduser())
    return list(found), failures


def _images_below(folder: Path) -> Iterator[Path]:
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            path = Path(root) / name
            if not name.startswith(".") and is_image_path(path):
                yield path


def _list_lines(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"Cannot read the list of images {path}: {err}.") from None
    return [s for s in (line.strip() for line in text.splitlines()) if s and not s.startswith("#")]


def _name(item: ImageInput, i: int) -> str:
    return str(item) if isinstance(item, str | Path) else f"image {i}"


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
    if isinstance(images, str | Path | bytes | Image.Image) or (
        isinstance(images, np.ndarray) and images.ndim in (2, 3)
    ):
        return [images]
    return list(images)
