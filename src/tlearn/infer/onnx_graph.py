"""The graph `tlearn export` writes and `--engine onnx` runs: the bundle's Classifier followed by a softmax.

input  "image"          float32 (N, 3, H, W) RGB in [0, 1]   (or uint8 in [0, 255] with input_type="uint8")
output "probabilities"  float32 (N, K), rows sum to 1, columns in the order of `classes`
output "unknown_score"  float32 (N,), how far each image is from the training images (bundles with an
                        "unknown" answer only; higher = further, see models/unknown.py)
output "unknown"        bool (N,), unknown_score > the bundle's threshold: "not one of my classes"
"""

from __future__ import annotations

import torch
from torch import nn

from tlearn.core.onnx import OPSET, to_onnx
from tlearn.infer.predictor import Predictor
from tlearn.models.classifier import Classifier

INPUT_NAME, OUTPUT_NAME = "image", "probabilities"
SCORE_NAME, UNKNOWN_NAME = "unknown_score", "unknown"


class Probabilities(nn.Module):
    """A classifier's logits turned into probabilities: (N, 3, H, W) float in [0, 1] -> (N, K)."""

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(x).softmax(dim=1)


class Answers(nn.Module):
    """Probabilities, the unknown score and the unknown flag, from one pass of the network."""

    def __init__(self, classifier: Classifier) -> None:
        super().__init__()
        self.classifier = classifier
        assert classifier.unknown is not None
        self.threshold = float(classifier.unknown.rule.threshold)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits, score = self.classifier.answer(x)
        assert score is not None
        return logits.softmax(dim=1), score, score > self.threshold


class FromUint8(nn.Module):
    """Accept uint8 pixels in [0, 255]: cast and scale to [0, 1], then run `inner`."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x.float() / 255.0)


def export_module(classifier: nn.Module, input_type: str = "float", *, answers: bool = False) -> nn.Module:
    """What gets exported: classifier + softmax (with `answers`, and the unknown outputs when the bundle
    has them), behind a uint8 -> float step for input_type "uint8"."""
    with_unknown = answers and isinstance(classifier, Classifier) and classifier.unknown is not None
    module: nn.Module = Answers(classifier) if with_unknown else Probabilities(classifier)  # type: ignore[arg-type]
    return (FromUint8(module) if input_type == "uint8" else module).eval()


def output_names(classifier: nn.Module) -> tuple[str, ...]:
    has_unknown = isinstance(classifier, Classifier) and classifier.unknown is not None
    return (OUTPUT_NAME, SCORE_NAME, UNKNOWN_NAME) if has_unknown else (OUTPUT_NAME,)


def bundle_to_onnx(predictor: Predictor, *, input_type: str = "float", opset: int = OPSET) -> bytes:
    """The serialized ONNX model of a loaded bundle (see the module docstring for its contract)."""
    h, w = predictor.preprocessing.input_size
    example = torch.rand(2, 3, h, w)
    if input_type == "uint8":
        example = (example * 255).to(torch.uint8)
    model = to_onnx(
        export_module(predictor.classifier, input_type, answers=True),
        example,
        input_names=(INPUT_NAME,),
        output_names=output_names(predictor.classifier),
        opset=opset,
    )
    assert model is not None
    return model
