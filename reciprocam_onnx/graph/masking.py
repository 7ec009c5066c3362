"""Put the masked-copy construction inside the suffix graph.

The engine's suffix takes the prefix outputs of a batch of images, the index
of one image and the slot tables (slots.py) of a chunk of its copies::

    X[image][slot_token] * slot_weight[..., None]   for F (or its projections, hoist.py)
    residual[image], broadcast (or * the per-token weights if residual="masked") ──► R

so copies are built where the data lives (on the GPU under CUDA), the
unmasked residual is never copied, and only the small tables travel. A
suffix that takes slots (distinct.py) also reads slot_log_count and
token_slot; any other takes one slot per token (slots.identity_slots).
"""
from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from ..errors import OptionError
from .builder import OpBuilder
from .distinct import SLOT_LOG_COUNT, TOKEN_SLOT
from .split import RESIDUAL, export_like

IMAGE = "image_index"
SLOT_TOKEN = "slot_token"
SLOT_WEIGHT = "slot_weight"
RESIDUAL_MODES = ("unmasked", "masked")


def check_residual(residual: str) -> None:
    if residual not in RESIDUAL_MODES:
        raise OptionError(f"residual must be one of {RESIDUAL_MODES}, not {residual!r}")


def masked_suffix(suffix: onnx.ModelProto, residual: str = "unmasked") -> onnx.ModelProto:
    """The suffix with inputs (its prefix tensors per image, image_index, slot tables) -> logits per row."""
    check_residual(residual)
    graph = gs.import_onnx(suffix)
    b = OpBuilder(graph, "reciprocam/")
    image = gs.Variable(IMAGE, np.int64, [1])
    slot_token = gs.Variable(SLOT_TOKEN, np.int64, ["rows", "slots"])
    slot_weight = gs.Variable(SLOT_WEIGHT, np.float32, ["rows", "slots"])
    tables = {t.name: t for t in graph.inputs if t.name in (SLOT_LOG_COUNT, TOKEN_SLOT)}
    inputs = list(tables.values())
    tokens = next(t.shape[1] for t in graph.inputs if t.name == RESIDUAL)
    for tensor in [t for t in graph.inputs if t.name not in tables]:
        name = tensor.name
        source = gs.Variable(name, np.float32, ["images", tokens, tensor.shape[2]])
        tensor.name = b.name(f"{name}_rows")
        inputs.append(source)
        if name != RESIDUAL:  # F or a projection of it: the copies' slots
            picked = b.op("Gather", [source, b.squeeze(image, [0])], {"axis": 0})  # [T, k]
            rows = b.op("Gather", [picked, slot_token], {"axis": 0})  # [rows, U, k]
            b.op("Mul", [rows, b.reshape(slot_weight, [0, 0, 1])], out=tensor)
        elif residual == "unmasked":
            b.op("Gather", [source, image], {"axis": 0}, out=tensor)  # [1, T, D], broadcast
        else:  # weighted per token like the copy
            weight = slot_weight
            if TOKEN_SLOT in tables:
                weight = b.op("GatherElements", [slot_weight, tables[TOKEN_SLOT]], {"axis": 1})
            picked = b.op("Gather", [source, image], {"axis": 0})
            b.op("Mul", [picked, b.reshape(weight, [0, 0, 1])], out=tensor)
    graph.inputs = [*inputs, image, slot_token, slot_weight]
    return export_like(graph.cleanup().toposort(), suffix)
