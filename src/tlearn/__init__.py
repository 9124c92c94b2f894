"""tlearn: transfer learning for small image datasets.

    import tlearn
    result = tlearn.train("photos/", method="features")      # a TrainResult; the bundle is result.out
    clf = tlearn.load(result.out)
    clf.predict(["a.jpg", "b.jpg"])                           # class names

The public names are imported on first use, so `import tlearn` (and the CLI's --help) stays fast.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from tlearn.core.version import __version__

_EXPORTS = {
    "train": "tlearn.training.run",
    "run": "tlearn.training.run",
    "TrainResult": "tlearn.training.run",
    "TrainConfig": "tlearn.training.config",
    "FinetuneConfig": "tlearn.training.config",
    "load": "tlearn.infer.load",
    "Predictor": "tlearn.infer.predictor",
    "create_backbone": "tlearn.models.backbones",
    "load_dataset": "tlearn.data.sources",
    "check_path": "tlearn.data.checks",
    "AugmentConfig": "tlearn.data.augment",
    "preset": "tlearn.data.augment",
    "suggest": "tlearn.training.suggest",
    "TlearnError": "tlearn.core.errors",
    "UNKNOWN": "tlearn.models.unknown",
}
__all__ = [*sorted(_EXPORTS), "__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'tlearn' has no attribute {name!r}")
