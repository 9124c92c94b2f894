"""The "unknown" answer: how far an input is from what the bundle knows, one rule for every engine.

A classifier trained on a few dozen photos per class answers one of its classes for anything it is
shown, often with high confidence. The bundle keeps a small picture of what it knows: the mean of
each class and a capped sample of its training images, both as L2-normalised pooled features (the
`Classifier.features` the head reads). The default score (`knn_msp`) adds two signs that an input is
none of the classes: its features are far from every training image (cosine distance to the nearest,
what finds photos of other things: 99% of far unknowns rejected on flowers17) and the head is unsure
between classes (1 - the top probability, what finds look-alikes: held-out flower species). Above a
threshold it is "not one of my classes"; the threshold is set on the validation images so that
`recall` of them (default 95%) are kept.

Scores here are "higher means more unknown". `score_kinds` computes all of them from the same
(features, logits), for the benchmark that chose the default (benchmarks/open_set.py); the bundle
stores and applies one. `UnknownScorer` is an nn.Module inside the `Classifier`, so the PyTorch engine,
the ONNX export and the server compute the same number.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

KINDS = ("msp", "energy", "class_mean", "knn", "knn_msp")
COMBINED = {"knn_msp": ("knn", "msp")}  # a sum of scores, each standardised on the validation images
DEFAULT_KIND = "knn_msp"  # flowers17, 3 seeds: AUROC 0.951 against msp 0.928 on near + far (benchmarks/open_set.py)
DEFAULT_RECALL = 0.95
MIN_VAL_IMAGES = 10  # fewer validation images cannot place a threshold: the bundle then has no rejection
NO_UNKNOWN_WHY = (
    f"made before tlearn learned one, or with fewer than {MIN_VAL_IMAGES} validation images to set its threshold"
)
BANK_CAP = 1024  # training feature rows kept for the nearest-neighbour score (float16: 2.5 MB at D = 1280)
UNKNOWN = "unknown"  # what `predict(..., unknown=True)` answers for an input that is none of the classes


@dataclass(frozen=True)
class UnknownRule:
    """Which score the bundle applies, the threshold above which the answer is "unknown", and its bank."""

    kind: str
    threshold: float
    recall: float  # share of validation images whose score is at or below the threshold
    val_images: int  # validation images the threshold was set on
    bank_rows: int  # training feature rows kept (nearest-neighbour scores), besides one mean per class
    feature_dim: int
    num_classes: int
    k: int = 1  # the k-th nearest bank row gives the distance
    # for a combined kind: (mean, std) on validation of each part, flattened; () otherwise
    norm: tuple[float, ...] = ()
    test_recall: float | None = None  # share of the run's test images kept (known images answered a class)

    @property
    def bank_bytes(self) -> int:
        """Size of the stored bank (float16): class means plus the sampled training rows."""
        return 2 * self.feature_dim * (self.num_classes + self.bank_rows)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "bank_bytes": self.bank_bytes}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> UnknownRule:
        names = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in d.items() if k in names}
        values["norm"] = tuple(values.get("norm", ()))
        return cls(**values)

    def describe(self) -> str:
        size = f"{self.bank_bytes / 1e6:.2f} MB" if self.bank_bytes >= 1e5 else f"{self.bank_bytes / 1e3:.0f} kB"
        return (
            f"{self.kind} score, threshold {self.threshold:.4f} (keeps {self.recall:.0%} of {self.val_images} "
            f"validation images); bank of {self.num_classes} class means + {self.bank_rows} training rows, {size}"
        )


def normalised(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)


def score_of(
    kind: str,
    features: torch.Tensor,
    logits: torch.Tensor,
    means: torch.Tensor,
    bank: torch.Tensor,
    *,
    k: int = 1,
    norm: tuple[float, ...] = (),
) -> torch.Tensor:
    """(N,) score of one kind, higher = more unknown. `means` (K, D) and `bank` (M, D) are L2-normalised.

    msp: 1 - the largest (calibrated) softmax probability, the usual baseline (Hendrycks & Gimpel 2017).
    energy: -logsumexp(logits) (Liu et al. 2020). class_mean: 1 - cosine to the nearest class mean.
    knn: 1 - cosine to the k-th nearest training row (Sun et al. 2022); the class means when no bank.
    knn_msp: knn and msp, each standardised by its validation (mean, std) in `norm`, summed: knn sees
    images unlike any training image, msp images between classes.
    """
    if kind in COMBINED:  # no tensor of a fixed length here: the ONNX export keeps the batch dynamic
        parts = [
            (score_of(part, features, logits, means, bank, k=k) - norm[2 * i]) / norm[2 * i + 1]
            for i, part in enumerate(COMBINED[kind])
        ]
        return torch.stack(parts).sum(dim=0)
    if kind == "msp":
        return 1 - logits.softmax(dim=1).amax(dim=1)
    if kind == "energy":
        return -torch.logsumexp(logits, dim=1)
    f = normalised(features.float())
    if kind == "class_mean" or not len(bank):
        return 1 - (f @ means.T).amax(dim=1)
    kk = min(k, bank.shape[0])
    return 1 - (f @ bank.T).topk(kk, dim=1).values[:, kk - 1]


def score_kinds(
    features: torch.Tensor, logits: torch.Tensor, means: torch.Tensor, bank: torch.Tensor, *, k: int = 1
) -> dict[str, torch.Tensor]:
    """Every kind of score of the same inputs (what the benchmark compares)."""
    return {kind: score_of(kind, features, logits, means, bank, k=k) for kind in KINDS}


class UnknownScorer(nn.Module):
    """(features (N, D), logits (N, K)) -> (N,) score of the rule's kind. Buffers: `means`, `bank`."""

    def __init__(self, rule: UnknownRule, means: torch.Tensor, bank: torch.Tensor) -> None:
        super().__init__()
        self.rule = rule
        self.register_buffer("means", means.float())
        self.register_buffer("bank", bank.float())

    def forward(self, features: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        means, bank = self.get_buffer("means"), self.get_buffer("bank")
        return score_of(self.rule.kind, features, logits, means, bank, k=self.rule.k, norm=self.rule.norm)


def standardising(
    kind: str, features: torch.Tensor, logits: torch.Tensor, means: torch.Tensor, bank: torch.Tensor, *, k: int = 1
) -> tuple[float, ...]:
    """The `norm` of a combined kind: (mean, std) of each part's scores on these (validation) images."""
    out: list[float] = []
    for part in COMBINED.get(kind, ()):
        s = score_of(part, features, logits, means, bank, k=k)
        out += [float(s.mean()), float(s.std()) or 1.0]
    return tuple(out)


def empty_scorer(rule: UnknownRule) -> UnknownScorer:
    """A scorer of the rule's shapes with zero buffers (load the bundle's state into it)."""
    d = rule.feature_dim
    return UnknownScorer(rule, torch.zeros(rule.num_classes, d), torch.zeros(rule.bank_rows, d))
