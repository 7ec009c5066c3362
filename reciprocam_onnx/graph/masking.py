"""Put the masked-copy construction inside the suffix graph.

The engine's suffix takes the prefix outputs of a batch of images, the index
of one image and the per-token weights of a chunk of its copies::

    X[image] * row_weight[..., None]   for F (or its projections, hoist.py)
    residual[image], broadcast (or * row_weight[..., None] if residual="masked") ──► R

so copies are built where the data lives (on the GPU under CUDA), the
unmasked residual is never copied, and only the small weight rows travel. A
row of all-ones weights is the unmasked model.
"""
from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from ..errors import OptionError
from .builder import OpBuilder
from .split import RESIDUAL, export_like

IMAGE = "image_index"
ROW_WEIGHT = "row_weight"
RESIDUAL_MODES = ("unmasked", "masked")


def check_residual(residual: str) -> None:
    if residual not in RESIDUAL_MODES:
        raise OptionError(f"residual must be one of {RESIDUAL_MODES}, not {residual!r}")


def masked_suffix(suffix: onnx.ModelProto, masked_inputs: tuple[str, ...], residual: str = "unmasked"
                  ) -> onnx.ModelProto:
    """The suffix with inputs (its prefix tensors per image, image_index, row_weight) -> logits per row."""
    check_residual(residual)
    graph = gs.import_onnx(suffix)
    b = OpBuilder(graph, "reciprocam/")
    tokens = graph.inputs[0].shape[1]
    image = gs.Variable(IMAGE, np.int64, [1])
    row_weight = gs.Variable(ROW_WEIGHT, np.float32, ["rows", tokens])
    column = b.reshape(row_weight, [0, 0, 1])  # [rows, T, 1]
    sources = []
    for tensor in list(graph.inputs):
        source = gs.Variable(tensor.name, np.float32, ["images", *tensor.shape[1:]])
        masked = tensor.name in masked_inputs or (tensor.name == RESIDUAL and residual == "masked")
        tensor.name = b.name(f"{tensor.name}_rows")
        gathered = b.op("Gather", [source, image], {"axis": 0}, out=None if masked else tensor)
        if masked:
            b.op("Mul", [gathered, column], out=tensor)
        sources.append(source)
    graph.inputs = [*sources, image, row_weight]
    return export_like(graph.cleanup().toposort(), suffix)
