"""Which nodes of an ONNX model int8 quantization leaves float, found from the graph's structure.

ONNX Runtime quantizes every node of a type it knows unless told otherwise. Some should not be:

- the head and the unknown score's matrix products (Gemm, MatMul): a few thousand multiply-adds
  per image, and the probabilities and scores keep their resolution;
- the tail, everything after the last convolutions (pooling, head, mirror average, softmax):
  quantized, the pooled features and the logits are rounded to 256 levels per tensor on their way
  to a float head, for no speed;
- the arithmetic on tensor shapes: a "same" padding (the built-in MobileNetV2's, from TensorFlow)
  works out its amounts at run time in float from the input's size, and quantized they are rounded.
  With the input's height and width fixed (as an exported bundle's are) they are constants:
  `fold_shape_arithmetic` computes them once and stores them, so nothing is left to quantize;
- optionally the first and last convolutions, which quantization often hurts most.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tlearn.core.onnx import import_onnxruntime


def kept_float(model_path: Path, *, float_tail: bool, float_ends: bool) -> tuple[list[str], list[str]]:
    """The nodes of the model at `model_path` that stay float, by name: the matrix products; with
    `float_tail` every node after the last convolutions; with `float_ends` those and the first. And the
    op types to quantize: those of the other nodes, so that calibration looks at their tensors only
    (the histogram calibrations fail on the unknown score's near-constant ones)."""
    import onnx
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    graph = onnx.load(str(model_path), load_external_data=False).graph
    kept = [n.name for n in graph.node if n.op_type in ("Gemm", "MatMul")]
    if float_tail:
        kept += tail_nodes(graph)
    if float_ends:
        kept += end_convs(graph)
    known = set(QDQRegistry) | set(QLinearOpsRegistry)
    excluded = set(kept)
    return kept, sorted({n.op_type for n in graph.node if n.name not in excluded and n.op_type in known})


def _conv_around(graph: Any) -> tuple[set[str], set[str]]:
    """The names of the nodes of `graph` that a convolution comes before, and those that one comes after
    (ONNX lists the nodes in an order where each comes after its inputs' nodes)."""
    producer = {out: n.name for n in graph.node for out in n.output}
    is_conv = {n.name: n.op_type == "Conv" for n in graph.node}
    conv_before: set[str] = set()
    conv_after: set[str] = set()
    for n in graph.node:
        if any(is_conv[p] or p in conv_before for p in (producer.get(i) for i in n.input) if p is not None):
            conv_before.add(n.name)
    for n in reversed(graph.node):
        for p in (producer.get(i) for i in n.input):
            if p is not None and (is_conv[n.name] or n.name in conv_after):
                conv_after.add(p)
    return conv_before, conv_after


def end_convs(graph: Any) -> list[str]:
    """Names of the convolutions of an ONNX `graph` that no other convolution comes before (the stem,
    on the image) or after (the last one before the pooling), in every branch: a bundle with the
    mirror view runs the network twice."""
    conv_before, conv_after = _conv_around(graph)
    convs = [n.name for n in graph.node if n.op_type == "Conv"]
    return [n for n in convs if n not in conv_before or n not in conv_after]


def tail_nodes(graph: Any) -> list[str]:
    """Names of the nodes after the last convolutions: a convolution before them and none after."""
    conv_before, conv_after = _conv_around(graph)
    return [n.name for n in graph.node if n.op_type != "Conv" and n.name in conv_before and n.name not in conv_after]


def shape_arithmetic(graph: Any) -> list[str]:
    """Names of the nodes of `graph` that compute from tensor shapes only: every input they take from
    a node or the graph's input comes, through others like them, from a Shape node."""
    return [graph.node[k].name for k in _shape_nodes(graph)]


def _shape_nodes(graph: Any) -> list[int]:
    """Positions in `graph.node` of the nodes `shape_arithmetic` names."""
    nodes = list(graph.node)
    producer = {out: k for k, n in enumerate(nodes) for out in n.output}
    constant = {k for k, n in enumerate(nodes) if n.op_type == "Constant"}
    image = {i.name for i in graph.input} - {i.name for i in graph.initializer}
    shapes: set[int] = set()
    for k, n in enumerate(nodes):
        sources = [-1 if i in image else producer[i] for i in n.input if i in image or producer.get(i, -2) >= 0]
        sources = [s for s in sources if s not in constant]  # the graph's input counts as -1: not a shape
        if n.op_type == "Shape" or (sources and all(s in shapes for s in sources)):
            shapes.add(k)
    return sorted(shapes)


def fold_shape_arithmetic(model_path: Path) -> int:
    """Replace, in the model file at `model_path`, the results of its shape arithmetic that other nodes
    use by the constants they are, where they do not depend on the batch size (the model is run on 1
    and on 2 zero images to tell), and drop the nodes no longer needed. Returns how many were folded."""
    import onnx
    from onnx import numpy_helper

    ort = import_onnxruntime()
    model = onnx.load(str(model_path))
    graph = model.graph
    shaped = set(_shape_nodes(graph))
    outputs = {o.name for o in graph.output}
    used = {i for k, n in enumerate(graph.node) if k not in shaped for i in n.input} | outputs
    boundary = [o for k in sorted(shaped) for o in graph.node[k].output if o in used]
    if not boundary:
        return 0
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.output[:]
    probe.graph.output.extend(onnx.helper.make_empty_tensor_value_info(name) for name in boundary)
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    first = session.get_inputs()[0]
    dims = [d if isinstance(d, int) else 1 for d in first.shape]
    dtype = np.uint8 if first.type == "tensor(uint8)" else np.float32
    one, two = (session.run(boundary, {first.name: np.zeros([n, *dims[1:]], dtype)}) for n in (1, 2))
    constant = {name: a for name, a, b in zip(boundary, one, two, strict=True) if a.shape == b.shape and (a == b).all()}
    graph.initializer.extend(numpy_helper.from_array(np.asarray(v), name) for name, v in constant.items())
    # producers of the folded values, and whatever only they needed, go
    needed = set(outputs)
    keep = []
    for n in reversed(graph.node):
        if any(o in needed and o not in constant for o in n.output):
            keep.append(n)
            needed.update(n.input)
    del graph.node[:]
    graph.node.extend(reversed(keep))
    live = {o for n in graph.node for o in n.output}
    inputs = {i for n in graph.node for i in n.input} | outputs
    for field, alive in ((graph.value_info, live), (graph.initializer, inputs)):
        kept = [v for v in field if v.name in alive]
        del field[:]
        field.extend(kept)
    onnx.save(model, str(model_path))
    return len(constant)
