"""The plain ways, as a user following the PyTorch tutorial or the Keras guide writes them.

- `linear_probe`: the pretrained network without its top, one pass over every image at the weights'
  evaluation transform (timm's: resize, 224 center crop), standardised features, logistic regression
  with C chosen by 5-fold cross-validation (scikit-learn's LogisticRegressionCV).
- `tutorial_finetune`: the Keras guide's two phases in PyTorch: a new linear head trained with the
  base frozen (Adam 1e-3), then the whole network unfrozen at 1e-5, BatchNorm in inference mode
  throughout (as the guide says; the shared MobileNetV2's BatchNorm is folded, so train-mode
  BatchNorm would collapse it), RandomResizedCrop(224) and a horizontal flip, fixed epochs, the
  final epoch's weights.

Both read the images from disk in a DataLoader with two workers, the tutorial's way. Nothing of
tlearn is used here except the split file both sides share.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
from PIL import Image
from sklearn.linear_model import LogisticRegressionCV
from sklearn.metrics import accuracy_score, balanced_accuracy_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

ARCH = "mobilenetv2_100"
WORKERS = 2
HEAD_EPOCHS = 3
FINETUNE_EPOCHS = 3


class Files(Dataset[tuple[torch.Tensor, int]]):
    def __init__(self, paths: Sequence[Path], labels: Sequence[int], transform: Any) -> None:
        self.paths, self.labels, self.transform = list(paths), list(labels), transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        with Image.open(self.paths[i]) as img:
            return self.transform(img.convert("RGB")), self.labels[i]


def pretrained(weights: Path, num_classes: int = 0) -> nn.Module:
    return timm.create_model(
        ARCH, pretrained=True, pretrained_cfg_overlay={"file": str(weights)}, num_classes=num_classes
    ).eval()


def eval_transform(model: nn.Module) -> Any:
    cfg = timm.data.resolve_model_data_config(model)
    return timm.data.create_transform(**cfg)


def extract(model: nn.Module, paths: Sequence[Path]) -> np.ndarray:
    loader = DataLoader(Files(paths, [0] * len(paths), eval_transform(model)), batch_size=32, num_workers=WORKERS)
    out = []
    with torch.inference_mode():
        for x, _ in loader:
            out.append(model(x).numpy())
    return np.concatenate(out)


def linear_probe(
    features: np.ndarray, labels: np.ndarray, train: np.ndarray, test: np.ndarray, *, seed: int
) -> dict[str, Any]:
    """Logistic regression with C by 5-fold CV on precomputed features; scores on `test`."""
    start = time.perf_counter()
    clf = make_pipeline(
        StandardScaler(),
        LogisticRegressionCV(Cs=np.logspace(-4, 1, 6).tolist(), cv=5, max_iter=1000, random_state=seed),
    )
    clf.fit(features[train], labels[train])
    pred = clf.predict(features[test])
    return {
        "test_accuracy": float(accuracy_score(labels[test], pred)),
        "balanced_accuracy": float(balanced_accuracy_score(labels[test], pred)),
        "fit_seconds": time.perf_counter() - start,
    }


def tutorial_finetune(
    weights: Path,
    paths: Sequence[Path],
    labels: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
    *,
    num_classes: int,
    seed: int,
) -> dict[str, Any]:
    torch.manual_seed(seed)
    model = pretrained(weights, num_classes=num_classes)
    cfg = timm.data.resolve_model_data_config(model)
    train_tf = transforms.Compose(
        [
            transforms.RandomResizedCrop(cfg["input_size"][1:]),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(cfg["mean"], cfg["std"]),
        ]
    )
    loader = DataLoader(
        Files([paths[i] for i in train], labels[train].tolist(), train_tf),
        batch_size=32,
        shuffle=True,
        num_workers=WORKERS,
        generator=torch.Generator().manual_seed(seed),
    )
    head = model.get_classifier()
    loss_fn = nn.CrossEntropyLoss()

    def epochs(n: int, params: Any, lr: float) -> None:
        opt = torch.optim.Adam(params, lr=lr)
        for _ in range(n):
            model.eval()  # BatchNorm in inference mode; no dropout in this head
            for x, y in loader:
                opt.zero_grad()
                loss_fn(model(x), y).backward()
                opt.step()

    for p in model.parameters():
        p.requires_grad = False
    for p in head.parameters():
        p.requires_grad = True
    epochs(HEAD_EPOCHS, head.parameters(), 1e-3)
    for p in model.parameters():
        p.requires_grad = True
    epochs(FINETUNE_EPOCHS, model.parameters(), 1e-5)

    test_loader = DataLoader(
        Files([paths[i] for i in test], labels[test].tolist(), eval_transform(model)),
        batch_size=32,
        num_workers=WORKERS,
    )
    pred = []
    with torch.inference_mode():
        for x, _ in test_loader:
            pred.append(model(x).argmax(1).numpy())
    p = np.concatenate(pred)
    return {
        "test_accuracy": float(accuracy_score(labels[test], p)),
        "balanced_accuracy": float(balanced_accuracy_score(labels[test], p)),
    }
