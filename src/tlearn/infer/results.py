"""What prediction returns: the top-k classes of each image, the inputs that failed and why, the time taken."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tlearn.core.errors import ImageError


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
    # "not one of my classes": the image is far from every training image (unknown_score above the
    # bundle's threshold). unknown_score is None when not scored (a bundle without an unknown answer).
    unknown: bool = False
    unknown_score: float | None = None

    @property
    def answer(self) -> str:
        """The class to act on: the most probable one, or "unknown"."""
        from tlearn.models.unknown import UNKNOWN

        return UNKNOWN if self.unknown else self.top[0].label

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "path": self.source,
            "predictions": [{"class": s.label, "probability": s.probability} for s in self.top],
        }
        if self.unknown_score is not None:
            doc["unknown"] = self.unknown
            doc["unknown_score"] = self.unknown_score
        return doc


@dataclass(frozen=True)
class Failure:
    """An input that could not be predicted, and why: a short reason from the decoder, and its type.

    `kind` is the ImageError subclass the decoder raised (`NotAnImage`, `TruncatedImage`...), so a
    caller can act on why without reading the reason; the type is kept rather than the exception,
    whose traceback would hold the decoder's frames (and the file's bytes) alive.
    """

    source: str
    reason: str
    kind: type[ImageError] = field(default=ImageError, compare=False)

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

    def _repr_html_(self) -> str:
        """A small table in a notebook: the top-k classes of each image, then the inputs that failed."""
        from tlearn.infer.notebook import predictions_html

        return predictions_html(self)
