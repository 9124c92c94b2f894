"""Using a trained bundle from Python: `clf = tlearn.load(bundle)`, then `clf.predict(images)`.

Images may be file paths, encoded bytes, PIL images or uint8 (H, W, 3) arrays. Each is decoded
straight to the pixels of the bundle's eval crop (decoded and shrunk as training decoded it, then the
crop sliced out: `data/eval_pixels.py`, the very pixels training evaluated on), then goes through the
bundle's network, so a bundle predicts what it predicted when it was evaluated.

Two engines run a bundle: `Predictor` (its PyTorch network) and `OnnxPredictor` (an exported ONNX
graph, in `onnx_predictor.py`). Both are a `BasePredictor`: decoding on a thread pool, the eval
transform, batching, the mirror-image TTA, top-k, the "unknown" answer and per-file errors live here
once; an engine only turns a batch of model inputs into probabilities and unknown scores.

The "unknown" answer: a bundle that has one (`config.unknown`, see `models/unknown.py`) scores each
image by how far it is from its training images, computed inside the network; above the bundle's
threshold the image is "not one of my classes". `predict(images, unknown=True)` answers `UNKNOWN`
for those, `predict_many` marks each `Prediction` (`unknown`, `unknown_score`). With `tta=True` on a
bundle trained without the mirror view the score is the plain image's (the threshold was set on it).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image

from tlearn.artifacts.bundle import BundleConfig
from tlearn.core.errors import BundleError, ConfigError, ImageError
from tlearn.core.progress import Progress, no_progress
from tlearn.core.threads import by_row_chunks, cpu_workers, prefetched
from tlearn.data.augment import build_eval_transform
from tlearn.data.eval_pixels import to_model_input
from tlearn.data.images import MAX_PIXELS
from tlearn.infer.inputs import ImageInput, as_list, decode_eval_input, decode_input, input_name
from tlearn.infer.results import Failure, Prediction, Predictions, Scored
from tlearn.models.classifier import Classifier
from tlearn.models.tta import mirror_proba
from tlearn.models.unknown import MIN_VAL_IMAGES, UNKNOWN, UnknownRule

NO_UNKNOWN_HINT = (
    f"Train it again with this tlearn and {MIN_VAL_IMAGES} or more validation images: such a bundle learns an unknown "
    "answer."
)

# Pillow releases the GIL while it decodes and resizes, so decoding threads scale with the CPUs, up to 8.
DECODE_WORKERS = cpu_workers(8)


class BasePredictor(ABC):
    """A loaded model: `classes`, `config`, `predict_proba(images)` -> (N, K), `predict(images)` -> names.

    Subclasses implement `proba_of_batch`; everything from an image to a top-k list is shared.
    """

    engine: ClassVar[str] = ""
    precision: str = "float32"  # "int8" for a quantized ONNX model
    precision_reason: str | None = None  # why that precision was chosen (tlearn export's measurement)

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
    def answer_of_batch(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Float32 (N, 3, H, W) RGB in [0, 1] at the input size -> (N, K) probabilities, rows summing to 1,
        and the (N,) unknown scores (None for a bundle without an unknown answer)."""

    def proba_of_batch(self, x: np.ndarray) -> np.ndarray:
        return self.answer_of_batch(x)[0]

    @property
    def unknown_rule(self) -> UnknownRule | None:
        """How this bundle tells "not one of my classes" (None: it was trained before tlearn learned to)."""
        return self.config.unknown

    def is_unknown(self, scores: np.ndarray) -> np.ndarray:
        """(N,) bool: the scores above the bundle's threshold. The one place the threshold is applied in Python."""
        rule = self.unknown_rule
        if rule is None:
            return np.zeros(len(scores), dtype=bool)
        return np.asarray(scores) > rule.threshold

    # From an input to the model's input.

    def pixels(self, image: ImageInput, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
        """Decode one input to uint8 (H, W, 3) at the working size. Raises ImageError.

        Files and bytes larger than `max_pixels` are refused before they are decoded (image bombs).
        """
        return decode_input(image, self.preprocessing, max_pixels=max_pixels)

    def model_input(self, pixels: np.ndarray | Image.Image) -> np.ndarray:
        """The eval transform: decoded pixels -> float32 (3, H, W) in [0, 1] at the input size."""
        out: torch.Tensor = self._transform(pixels)
        return out.numpy()

    def input_pixels(self, image: ImageInput, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
        """One input straight to uint8 (h, w, 3) at the input size: what prediction runs. Raises ImageError.

        The same pixels as `model_input(pixels(image))`, without torchvision's transforms.
        """
        return decode_eval_input(image, self.preprocessing, max_pixels=max_pixels)

    def prepare_input(self, image: ImageInput, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
        """One input as the model's float32 (3, H, W) in [0, 1]. Raises ImageError."""
        return to_model_input(self.input_pixels(image, max_pixels=max_pixels))

    # Probabilities.

    def proba_of_inputs(self, x: np.ndarray, *, tta: bool = False) -> np.ndarray:
        """(N, K) probabilities of model inputs (N, 3, H, W); with `tta`, averaged with the mirror images'.

        A bundle trained with the mirror TTA has it inside its network already, so `tta` adds nothing.
        """
        return self.answer_of_inputs(x, tta=tta)[0]

    def answer_of_inputs(self, x: np.ndarray, *, tta: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """`proba_of_inputs` and the (N,) unknown scores (None without an unknown answer), from one pass."""
        if len(x) == 0:
            empty = np.zeros(0, dtype=np.float32) if self.unknown_rule is not None else None
            return np.zeros((0, len(self.classes)), dtype=np.float32), empty
        proba, scores = self.answer_of_batch(x)
        if tta and not self.config.flip_tta:
            proba = mirror_proba(proba, self.proba_of_batch(np.ascontiguousarray(x[..., ::-1])))
        return proba, scores

    def predict_proba(
        self,
        images: Sequence[ImageInput] | ImageInput,
        *,
        batch_size: int = 32,
        tta: bool = False,
        progress: Progress = no_progress,
    ) -> np.ndarray:
        """(N, K) class probabilities, columns in `classes` order. An unreadable input raises ImageError."""
        return self._answers(images, batch_size=batch_size, tta=tta, progress=progress)[0]

    def unknown_scores(
        self,
        images: Sequence[ImageInput] | ImageInput,
        *,
        batch_size: int = 32,
        progress: Progress = no_progress,
    ) -> np.ndarray:
        """(N,) how far each image is from the training images (above `unknown_rule.threshold`: unknown).

        Raises BundleError for a bundle without an unknown answer."""
        scores = self._answers(images, batch_size=batch_size, tta=False, progress=progress)[1]
        if scores is None:
            raise BundleError(f"{self.source or 'This bundle'} has no unknown answer.", hint=NO_UNKNOWN_HINT)
        return scores

    def predict(self, images: Sequence[ImageInput] | ImageInput, *, unknown: bool = False, **kwargs: Any) -> list[str]:
        """The most probable class name of each image (keywords as for `predict_proba`).

        With `unknown=True`, an image far from every training image is answered `UNKNOWN` ("unknown")
        instead; a bundle without an unknown answer answers a class for every image."""
        proba, scores = self._answers(images, **kwargs)
        names = [self.classes[i] for i in proba.argmax(axis=1)]
        if unknown and scores is not None:
            names = [UNKNOWN if out else name for name, out in zip(names, self.is_unknown(scores), strict=True)]
        return names

    def _answers(
        self,
        images: Sequence[ImageInput] | ImageInput,
        *,
        batch_size: int = 32,
        tta: bool = False,
        progress: Progress = no_progress,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        items = as_list(images)
        probas = [np.zeros((0, len(self.classes)), dtype=np.float32)]
        scores: list[np.ndarray] = [np.zeros(0, dtype=np.float32)]
        has_scores = self.unknown_rule is not None
        for _, proba, score, failed in self._batches(items, batch_size=batch_size, tta=tta, progress=progress):
            if failed:
                i, err = failed[0]
                raise type(err)(f"Cannot read {input_name(items[i], i)}: {err.message}.", hint=err.hint)
            probas.append(proba)
            if score is not None:
                scores.append(score)
        return np.concatenate(probas), np.concatenate(scores) if has_scores else None

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
        unknown: bool = True,
        progress: Progress = no_progress,
    ) -> Predictions:
        """Top-k of every input that can be read; the others are listed with the reason, never raised.

        `names` label the inputs in the result (default: paths as given, else "image 0", "image 1"...).
        Each `Prediction` says whether the image is unknown and its score, when the bundle has an unknown
        answer and `unknown` is True (else `unknown_score` is None).
        """
        start = time.perf_counter()
        items = list(images)
        labels = list(names) if names is not None else [input_name(item, i) for i, item in enumerate(items)]
        if len(labels) != len(items):
            raise ConfigError(f"names must label every image: got {len(labels)} names for {len(items)} images.")
        got: list[Prediction] = []
        failures: list[Failure] = []
        for idx, proba, scores, failed in self._batches(
            items, batch_size=batch_size, tta=tta, progress=progress, max_pixels=max_pixels
        ):
            got += self.predictions([labels[i] for i in idx], proba, scores if unknown else None, top_k=top_k)
            failures += [Failure(labels[i], err.message, type(err)) for i, err in failed]
        return Predictions(tuple(got), tuple(failures), time.perf_counter() - start)

    def predictions(
        self, names: Sequence[str], proba: np.ndarray, scores: np.ndarray | None, *, top_k: int
    ) -> list[Prediction]:
        """One `Prediction` per row: its top-k and, with `scores`, whether it is unknown."""
        tops = self.top_k(proba, top_k)
        if scores is None:
            return [Prediction(name, top) for name, top in zip(names, tops, strict=True)]
        flags = self.is_unknown(scores)
        return [
            Prediction(name, top, unknown=bool(flag), unknown_score=float(score))
            for name, top, flag, score in zip(names, tops, flags, scores, strict=True)
        ]

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
                yield idx, to_model_input(np.stack(xs)) if xs else np.zeros((0, 3, h, w), np.float32), failed
                idx, xs, failed = [], [], []

    def _batches(
        self,
        items: Sequence[ImageInput],
        *,
        batch_size: int,
        tta: bool,
        progress: Progress,
        max_pixels: int = MAX_PIXELS,
    ) -> Iterator[tuple[list[int], np.ndarray, np.ndarray | None, list[tuple[int, ImageError]]]]:
        """As `input_batches`, with the (n, K) probabilities and the (n,) unknown scores in place of the inputs."""
        done = 0
        for idx, x, failed in self.input_batches(items, batch_size=batch_size, max_pixels=max_pixels):
            proba, scores = self.answer_of_inputs(x, tta=tta)
            done += len(idx) + len(failed)
            yield idx, proba, scores, failed
            progress("predict", done, len(items))

    def _prepared(
        self, items: Sequence[ImageInput], *, ahead: int, max_pixels: int
    ) -> Iterator[np.ndarray | ImageError]:
        """uint8 (h, w, 3) pixels at the input size in input order, or the ImageError of each input that
        cannot be read.

        Decoding runs on a thread pool at most `ahead` inputs in front of the caller, so inference on
        one batch overlaps the decoding of the next and memory stays flat on a folder of any size.
        Pillow releases the GIL while it decodes and resizes, and nothing on these threads uses torch,
        whose threads would compete with the engine's for the same cores.
        """

        def prepare(item: ImageInput) -> np.ndarray | ImageError:
            try:
                return self.input_pixels(item, max_pixels=max_pixels)
            except ImageError as err:
                return err

        yield from prefetched(prepare, items, ahead=ahead, workers=DECODE_WORKERS)  # one image: no pool


# Eager PyTorch runs a pass of a few inputs fastest on a CPU: a layer's output for 32 images and their
# mirrors is over 32 MB, which glibc always maps afresh and unmaps (see core/malloc.py; 2.3 million page
# faults and 3.9 s of system time for 64 flowers17 photos at 288 px), where a few images' blocks are reused.
# `python -m benchmarks.engine_batch`, MobileNetV2's feature trunk in eager PyTorch at 1 / 2 / 4 / 8 / 16 / 32
# inputs per pass (2-core AMD EPYC): 124 / 169 / 207 / 173 / 90 / 72 img/s at 224 px, 90 / 105 / 115 / 69 /
# 47 / 23 at 288 px; the ViT-S/14 14-15 at every size. The feature-method bundle (288 px, its mirror inside
# the network: 2 inputs per image) through `tlearn.load(bundle, engine="torch")`, with the CLI's malloc
# settings: 24 img/s in passes of 32 images, 55 to 59 in passes of 2 or 4.
TORCH_PASS_INPUTS = 4


class Predictor(BasePredictor):
    """The PyTorch engine: the bundle's own `Classifier`, on the CPU, a few images per pass."""

    engine = "torch"

    def __init__(self, classifier: torch.nn.Module, config: BundleConfig, *, source: str = "") -> None:
        super().__init__(config, source=source)
        self.classifier = classifier.eval()

    def answer_of_batch(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Passes of TORCH_PASS_INPUTS network inputs (an image and its mirror are two), in row order."""
        step = max(1, TORCH_PASS_INPUTS // (2 if self.config.flip_tta else 1))
        proba, scores = by_row_chunks(self._answer_of_pass, x, step)
        assert proba is not None
        return proba, scores

    def _answer_of_pass(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        t = t.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            if isinstance(self.classifier, Classifier):
                logits, scores = self.classifier.answer(t)
            else:  # any network of logits (a test's): no unknown answer
                logits, scores = self.classifier(t), None
        return logits.float().softmax(dim=1).numpy(), None if scores is None else scores.float().numpy()
