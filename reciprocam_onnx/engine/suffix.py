"""The engine's suffix: copies built inside the graph from one image's prefix outputs.

    inputs: the prefix outputs of a batch of images [images, T, k], image_index [1],
            slot tables of n copies (slot_token, slot_weight[, slot_log_count, token_slot])
    X[image] ─► copies/build.py ─► the split's suffix ─► logits [n, C]

so copies are built where the data lives (on the GPU under CUDA), the
unmasked residual is never copied, and only the small tables travel.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from ..contract import IMAGE_INDEX, RESIDUAL, SLOT_LOG_COUNT, SLOT_TOKEN, SLOT_WEIGHT, TOKEN_SLOT, Rewrite, SplitInfo
from ..copies.build import CopyTables, copy_inputs
from ..graph.builder import OpBuilder
from ..graph.export import export_like
from ..options import RESIDUALS
from ..rewrites import SLOTS_THROUGH, Surgery, residual_passes, run_passes


def suffix_for_residual(
    suffix: onnx.ModelProto, info: SplitInfo, residual: str
) -> tuple[onnx.ModelProto, tuple[Rewrite, ...], bool]:
    """The split's suffix rewritten for ``residual`` (rewrites.residual_passes), the passes' outcomes,
    and whether it takes the residual as slots."""
    if not info.slots:
        return suffix, (), False
    surgery, outcomes = run_passes(
        Surgery(gs.import_onnx(suffix), suffix), residual_passes(residual, info.prefix_tokens)
    )
    slot_residual = any(r.name == SLOTS_THROUGH and r.applied for r in outcomes)
    return (surgery.export_suffix() if slot_residual else suffix), outcomes, slot_residual


def engine_suffix(
    suffix: onnx.ModelProto, residual: str = RESIDUALS[0], slot_residual: bool = False
) -> onnx.ModelProto:
    """The split's suffix behind the copy builder: (prefix outputs, image_index, slot tables) -> logits.
    ``slot_residual``: the suffix takes the masked residual as slots (rewrites/slots_through.py)."""
    graph = gs.import_onnx(suffix)
    old = {t.name: t for t in graph.inputs}
    b = OpBuilder(graph, "reciprocam/", old[RESIDUAL].dtype)
    tokens = int(old[TOKEN_SLOT].shape[1] if TOKEN_SLOT in old else old[RESIDUAL].shape[1])
    for tensor in old.values():  # the new inputs take these names
        tensor.name = b.name(f"{tensor.name}_copies")
    tables = CopyTables(
        gs.Variable(SLOT_TOKEN, np.int64, ["rows", "slots"]), gs.Variable(SLOT_WEIGHT, np.float32, ["rows", "slots"])
    )
    if SLOT_LOG_COUNT in old:
        tables = replace(
            tables,
            log_count=gs.Variable(SLOT_LOG_COUNT, np.float32, ["rows", "slots"]),
            token_slot=gs.Variable(TOKEN_SLOT, np.int64, ["rows", tokens]),
        )
    image = gs.Variable(IMAGE_INDEX, np.int64, [1])
    widths = {name: int(t.shape[2]) for name, t in old.items() if name not in (SLOT_LOG_COUNT, TOKEN_SLOT)}
    sources = {name: gs.Variable(name, old[name].dtype, ["images", tokens, width]) for name, width in widths.items()}
    tapped = {name: b.op("Gather", [source, image], {"axis": 0}) for name, source in sources.items()}  # [1, T, k]
    built = copy_inputs(b, tapped, widths, tables, residual, one_image=True, slot_residual=slot_residual)
    reads = {id(old[name]): tensor for name, tensor in built.items()}
    for node in graph.nodes:
        node.inputs = [reads.get(id(t), t) for t in node.inputs]
    table_inputs = [t for t in (tables.token, tables.weight, tables.log_count, tables.token_slot) if t is not None]
    graph.inputs = [*sources.values(), image, *table_inputs]
    graph.outputs = [_as_float32(b, out) for out in graph.outputs]
    return export_like(graph.cleanup().toposort(), suffix)


def _as_float32(b: OpBuilder, logits: gs.Variable) -> gs.Variable:
    """The logits as float32 (the engine reads float32), under their own name."""
    if np.dtype(logits.dtype) == np.float32:
        return logits
    name, logits.name = logits.name, b.name("logits_model_dtype")
    return b.op("Cast", [logits], {"to": onnx.TensorProto.FLOAT}, gs.Variable(name, np.float32, logits.shape))
