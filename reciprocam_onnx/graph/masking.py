"""Put the masked-copy construction inside the suffix graph.

The engine's suffix takes the prefix outputs of a batch of images and a list
of rows, each naming an image and the per-token weights of one copy::

    normed[row_image] * row_weight[..., None]  ──► the target block's F
    residual[row_image] (* row_weight[..., None] if residual="masked") ──► R

so copies are built where the data lives (on the GPU under CUDA) and only the
small weight rows travel. A row of all-ones weights is the unmasked model.
"""
from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from ..errors import OptionError
from .split import NORMED, RESIDUAL, export_like

ROW_IMAGE = "row_image"
ROW_WEIGHT = "row_weight"
RESIDUAL_MODES = ("unmasked", "masked")


def masked_suffix(suffix: onnx.ModelProto, tokens: int, width: int,
                  residual: str = "unmasked") -> onnx.ModelProto:
    """The suffix with inputs (residual, normed, row_image, row_weight) -> logits per row."""
    if residual not in RESIDUAL_MODES:
        raise OptionError(f"residual must be one of {RESIDUAL_MODES}, not {residual!r}")
    graph = gs.import_onnx(suffix)
    old = {t.name: t for t in graph.inputs}
    row_image = gs.Variable(ROW_IMAGE, np.int64, ["rows"])
    row_weight = gs.Variable(ROW_WEIGHT, np.float32, ["rows", tokens])
    weight = _unsqueeze_last(graph, row_weight)
    new_inputs = []
    for name in (RESIDUAL, NORMED):
        source = gs.Variable(name, np.float32, ["images", tokens, width])
        target = old[name]
        target.name, target.shape = f"{name}_rows", ["rows", tokens, width]
        if name == NORMED or residual == "masked":
            gathered = gs.Variable(f"{name}_gathered", np.float32, ["rows", tokens, width])
            graph.nodes.append(gs.Node("Gather", inputs=[source, row_image], outputs=[gathered], attrs={"axis": 0}))
            graph.nodes.append(gs.Node("Mul", inputs=[gathered, weight], outputs=[target]))
        else:
            graph.nodes.append(gs.Node("Gather", inputs=[source, row_image], outputs=[target], attrs={"axis": 0}))
        new_inputs.append(source)
    graph.inputs = [*new_inputs, row_image, row_weight]
    return export_like(graph.cleanup().toposort(), suffix)


def _unsqueeze_last(graph: gs.Graph, tensor: gs.Variable) -> gs.Variable:
    """``tensor[..., None]`` as a Reshape (valid in every opset)."""
    out = gs.Variable(f"{tensor.name}_column", np.float32, ["rows", tensor.shape[1], 1])
    shape = gs.Constant(f"{tensor.name}_column_shape", np.array([0, 0, 1], dtype=np.int64))
    graph.nodes.append(gs.Node("Reshape", inputs=[tensor, shape], outputs=[out]))
    return out
