"""The graph `tlearn export` writes and `--engine onnx` runs: the bundle's Classifier followed by a softmax.

input  "image"          float32 (N, 3, H, W) RGB in [0, 1]   (or uint8 in [0, 255] with input_type="uint8")
output "probabilities"  float32 (N, K), rows sum to 1, columns in the order of `classes`
"""

from __future__ import annotations

import torch
from torch import nn

from tlearn.core.onnx import OPSET, to_onnx
from tlearn.infer.predictor import Predictor

INPUT_NAME, OUTPUT_NAME = "image", "probabilities"


class Probabilities(nn.Module):
    """A classifier's logits turned into probabilities: (N, 3, H, W) float in [0, 1] -> (N, K)."""

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(x).softmax(dim=1)


class FromUint8(nn.Module):
    """Accept uint8 pixels in [0, 255]: cast and scale to [0, 1], then run `inner`."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x.float() / 255.0)


def export_module(classifier: nn.Module, input_type: str = "float") -> nn.Module:
    """What gets exported: classifier + softmax, behind a uint8 -> float step for input_type "uint8"."""
    module: nn.Module = Probabilities(classifier)
    return (FromUint8(module) if input_type == "uint8" else module).eval()


def bundle_to_onnx(predictor: Predictor, *, input_type: str = "float", opset: int = OPSET) -> bytes:
    """The serialized ONNX model of a loaded bundle (see the module docstring for its contract)."""
    h, w = predictor.preprocessing.input_size
    example = torch.rand(2, 3, h, w)
    if input_type == "uint8":
        example = (example * 255).to(torch.uint8)
    model = to_onnx(
        export_module(predictor.classifier, input_type),
        example,
        input_names=(INPUT_NAME,),
        output_names=(OUTPUT_NAME,),
        opset=opset,
    )
    assert model is not None
    return model
