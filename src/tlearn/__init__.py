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

__version__ = "0.1.0"

_EXPORTS = {
    "train": "tlearn.training",
    "run": "tlearn.training",
    "TrainResult": "tlearn.training",
    "TrainConfig": "tlearn.config",
    "FinetuneConfig": "tlearn.config",
    "load": "tlearn.predict",
    "Predictor": "tlearn.predict",
    "create_backbone": "tlearn.backbones",
    "load_dataset": "tlearn.data.sources",
    "check_path": "tlearn.data.checks",
    "AugmentConfig": "tlearn.data.augment",
    "preset": "tlearn.data.augment",
    "TlearnError": "tlearn.errors",
}
__all__ = [*sorted(_EXPORTS), "__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'tlearn' has no attribute {name!r}")
