"""The options of a training run, in one frozen dataclass with every default in one place.

`__post_init__` checks everything at once and raises one ConfigError that lists every problem by its
CLI flag, so a user fixes a command line in one go.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from tlearn.core.distributed import DEVICES
from tlearn.core.errors import ConfigError
from tlearn.core.words import not_one_of
from tlearn.data.augment import AugmentConfig, preset
from tlearn.data.sources import display_path

Method = Literal["auto", "features", "finetune", "scratch"]
METHODS: tuple[str, ...] = ("auto", "features", "finetune", "scratch")
HEADS: tuple[str, ...] = ("logistic", "svm", "softmax")
SCHEDULES: tuple[str, ...] = ("cosine", "onecycle", "step", "constant", "exponential")


@dataclass(frozen=True)
class FinetuneConfig:
    """Two-phase fine-tuning: phase 1 trains a new head on the frozen base, phase 2 unfreezes.

    Learning rates are for AdamW. Phase 2 runs below phase 1 so the pretrained weights move a
    little, and earlier stages get less still (`lr_decay` per stage).
    """

    head_epochs: int = 30
    head_lr: float = 1e-3
    epochs: int | None = None  # None: 12 when fine-tuning, 40 from scratch
    lr: float | None = None  # None: 3e-4 when fine-tuning (a pretrained start), 1e-3 from scratch
    lr_decay: float = 0.7  # each earlier stage trains at this fraction of the next one's rate
    unfreeze: int | Literal["all"] = 2
    weight_decay: float = 1e-4
    label_smoothing: float = 0.1
    dropout: float = 0.2
    hidden: int = 0
    schedule: str = "cosine"
    warmup_epochs: int = 1
    decay_after: int = 3  # "exponential": constant for this many epochs, then decays
    patience: int = 5

    def epochs_for(self, method: str) -> int:
        return self.epochs if self.epochs is not None else (40 if method == "scratch" else 12)

    def lr_for(self, method: str) -> float:
        # 3e-4 for the last stage (AdamW), x lr_decay per earlier stage: on flowers17 (3 split seeds)
        # it beat 1e-4 by 0.9 points and 1e-3 heads with 3e-4 by 0.5 (benchmarks/flowers.py).
        return self.lr if self.lr is not None else (1e-3 if method == "scratch" else 3e-4)

    def problems(self) -> list[str]:
        p = []
        for name in ("head_epochs", "epochs", "warmup_epochs", "patience", "hidden", "decay_after"):
            if getattr(self, name) is not None and getattr(self, name) < 0:
                p.append(f"--{_flag(name)} must be 0 or more. Got {getattr(self, name)}.")
        for name in ("head_lr", "lr"):
            if getattr(self, name) is not None and not 0 < getattr(self, name) < 1:
                p.append(f"--{_flag(name)} must be above 0 and below 1. Got {getattr(self, name)}.")
        if not 0 < self.lr_decay <= 1:
            p.append(f"--lr-decay must be above 0 and at most 1. Got {self.lr_decay}.")
        if not 0 <= self.dropout < 1:
            p.append(f"--dropout must be at least 0 and below 1. Got {self.dropout}.")
        if not 0 <= self.label_smoothing < 1:
            p.append(f"--label-smoothing must be at least 0 and below 1. Got {self.label_smoothing}.")
        if self.weight_decay < 0:
            p.append(f"--weight-decay must be 0 or more. Got {self.weight_decay}.")
        if self.schedule not in SCHEDULES:
            p.append(not_one_of("--schedule", self.schedule, SCHEDULES))
        if self.unfreeze != "all" and (not isinstance(self.unfreeze, int) or self.unfreeze < 0):
            p.append(f"--unfreeze must be a number of stages (0 or more) or 'all'. Got {self.unfreeze!r}.")
        return p


# What a laptop user waits for with default options: every dataset of benchmarks/suite.py (up to 2,000
# images) trains in it on a 2-core CPU. 4.5 minutes, so a run that overshoots by the 10% the budget allows
# still ends within 5. Fixed methods run unbounded unless --time-budget is given.
DEFAULT_BUDGET_S = 270.0


@dataclass(frozen=True)
class TrainConfig:
    data: Path
    out: Path | None = None
    method: str = "auto"
    backbone: str | None = None
    weights: str | None = None
    input_size: int | None = None
    seed: int = 0
    val_frac: float = 0.15
    test_frac: float = 0.15
    split_file: Path | None = None
    min_per_class: int = 10
    batch_size: int = 32
    # "fp32", "bf16", or "auto": training steps on a GPU (auto: bf16 where supported, else fp16 with a
    # gradient scaler). The CPU and frozen layers always run in fp32, as the saved model does.
    precision: str = "auto"
    device: str = "auto"  # "cpu", "cuda", or "auto" (CUDA when present)
    # the feature method
    feature_layer: str = "last"
    views: int | None = None  # augmented views per training image; None: 0 for features, 6 for finetune
    tta: bool = True  # mirror-image test-time augmentation, when the augmentation flips (--hflip)
    head: str = "logistic"
    C: float | None = None
    class_weight: str = "none"
    augment: AugmentConfig = field(default_factory=lambda: preset("standard"))
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    # seconds for the whole run, from decoding to the report; None: DEFAULT_BUDGET_S for auto, none otherwise
    time_budget: float | None = None
    unlabelled: Path | None = None  # photos without labels: pseudo-labels for the feature method's head
    unknown_recall: float = 0.95  # share of known validation images the "unknown" threshold keeps
    resume: bool = False  # continue the interrupted run in `out`
    # replace the run in `out`; without it, a run refuses a folder that holds one (with `resume`, moot)
    overwrite: bool = False
    command: str = ""

    def __post_init__(self) -> None:
        p: list[str] = []
        if self.method not in METHODS:
            p.append(not_one_of("--method", self.method, METHODS))
        if self.head not in HEADS:
            p.append(not_one_of("--head", self.head, HEADS))
        if self.class_weight not in ("none", "balanced"):
            p.append(f"--class-weight must be none or balanced. Got {self.class_weight!r}.")
        for name in ("val_frac", "test_frac"):
            if not 0 <= getattr(self, name) < 1:
                p.append(f"--{_flag(name)} must be at least 0 and below 1. Got {getattr(self, name)}.")
        if not p and self.val_frac + self.test_frac >= 1:
            p.append(
                f"--val-frac plus --test-frac must leave images to train on. Got {self.val_frac} + {self.test_frac}."
            )
        if self.views is not None and self.views < 0:
            p.append(f"--views must be 0 or more. Got {self.views}.")
        if self.C is not None and self.C <= 0:
            p.append(f"--C must be above 0. Got {self.C}.")
        if self.precision not in ("auto", "fp32", "bf16"):
            p.append(f"--precision must be auto, fp32 or bf16. Got {self.precision!r}.")
        if self.device not in DEVICES:
            p.append(not_one_of("--device", self.device, DEVICES))
        if self.batch_size < 1:
            p.append(f"--batch-size must be 1 or more. Got {self.batch_size}.")
        if self.input_size is not None and self.input_size < 16:
            p.append(f"--input-size must be at least 16 pixels. Got {self.input_size}.")
        if self.time_budget is not None and self.time_budget <= 0:
            p.append(f"--time-budget must be above 0. Got {self.time_budget}.")
        if self.unlabelled is not None and self.method in ("finetune", "scratch"):
            p.append(
                "--unlabelled works with --method features or auto (its guesses train the feature method's "
                f"linear head). Got --method {self.method}."
            )
        if self.unlabelled is not None and self.head == "softmax":
            p.append("--unlabelled works with --head logistic or svm. Got --head softmax.")
        if not 0.5 <= self.unknown_recall < 1:
            p.append(f"--unknown-recall must be at least 0.5 and below 1. Got {self.unknown_recall}.")
        p += self.finetune.problems()
        p += self._trains_nothing()
        if p:
            raise ConfigError(" ".join(p) if len(p) == 1 else "Invalid options: " + " ".join(p))

    def _trains_nothing(self) -> list[str]:
        """A method whose every phase is set to 0 epochs would save an untrained model (chance accuracy)."""
        ft, flags = self.finetune, None
        if self.method in ("finetune", "auto") and ft.head_epochs == 0 and ft.epochs == 0:
            flags = "--head-epochs 0 with --epochs 0"
        elif self.method == "finetune" and ft.head_epochs == 0 and ft.unfreeze == 0:
            flags = "--head-epochs 0 with --unfreeze 0"
        elif self.method == "scratch" and ft.epochs == 0:
            flags = "--epochs 0 with --method scratch"
        if flags is None:
            return []
        return [f"{flags} trains nothing (the model would be saved untrained): train at least one epoch."]

    @property
    def mirror(self) -> bool:
        """Is the mirror image a second view (features) and a test-time augmentation (every method)?
        Only where the augmentation flips images: a mirrored photo must show the same class."""
        return bool(self.augment.hflip) and self.tta

    @property
    def budget_seconds(self) -> float | None:
        """The run's time budget: --time-budget, else DEFAULT_BUDGET_S for auto, else none."""
        if self.time_budget is not None:
            return self.time_budget
        return DEFAULT_BUDGET_S if self.method == "auto" else None

    def views_for(self, method: str) -> int:
        """Augmented views per training image: computed once and cached, so they cost one forward
        pass each. The feature method gains little from them; fine-tuning needs them for variety."""
        if self.views is not None:
            return self.views
        return 6 if method in ("finetune", "scratch") else 0

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, AugmentConfig):
                value = value.to_dict()
            elif isinstance(value, FinetuneConfig):
                value = {g.name: getattr(value, g.name) for g in fields(value)}
            elif isinstance(value, Path):
                value = display_path(value)
            d[f.name] = value
        return d


def _flag(name: str) -> str:
    return name.replace("_", "-")
