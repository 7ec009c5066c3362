"""One prefix for a model cut at several blocks, and the tapped tensors of a cut in a graph that holds the
model's own tensors (the model itself, or a later cut's prefix).

    image ──prefix──► block_9/residual, block_9/normed_projected_0, ... block_11/residual, ...
    (block b's inputs) ──suffix of block b──► logits

The deepest cut's prefix already computes every earlier block's R and F: it
returns them too (with the projections each earlier cut hoisted), so a method
that taps several blocks runs the model's first part once per image and the
blocks between its taps once, unmasked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import onnx_graphsurgeon as gs
from onnx import numpy_helper

from ..contract import NORMED, RESIDUAL, SharedSplit, SplitModel, prefix_outputs, tap_input
from ..graph.builder import OpBuilder
from ..graph.export import export_like


def tapped_tensors(b: OpBuilder, split: SplitModel) -> dict[str, gs.Tensor]:
    """The suffix inputs of ``split`` computed in ``b.graph``, which holds the model's tensors by their names:
    R, F (as [B, T, D] tokens, also where the model lays them out as a grid), and F's hoisted projections
    (MatMul(F, W_k) with the weights the split's prefix, its own or a shared one, holds)."""
    tensors, info, prefix = b.graph.tensors(), split.info, split.prefix.graph
    tapped = {
        RESIDUAL: b.reshape(tensors[info.residual_tensor], [0, -1, info.width]),
        NORMED: b.reshape(tensors[info.normed_tensor], [0, -1, info.width]),
    }
    shared = tap_input(info.block, RESIDUAL) in {output.name for output in prefix.output}
    feeds = prefix_outputs(info, shared)
    producers = {output: node for node in prefix.node for output in node.output}
    weights = {init.name: init for init in prefix.initializer}
    for name in info.masked_inputs:
        if name not in tapped:  # normed_projected_k = MatMul(F, W_k), as the prefix computes it
            node = producers[feeds[name]]
            while node.op_type == "Identity":  # a shared prefix's output
                node = producers[node.input[0]]
            weight = numpy_helper.to_array(weights[node.input[1]])
            tapped[name] = b.op("MatMul", [tapped[NORMED], b.const("projection", weight)])
    return {name: tapped[name] for name in (RESIDUAL, *info.masked_inputs)}


def shared_split(splits: Sequence[SplitModel]) -> SharedSplit:
    """One prefix for ``splits`` (cuts of one model, earliest block first): the deepest cut's prefix,
    returning every cut's suffix inputs under ``tap_input`` names."""
    deepest = splits[-1]
    graph = gs.import_onnx(deepest.prefix)
    own = {tensor.name: tensor for tensor in graph.outputs}
    outputs: list[gs.Tensor] = []
    for split in splits:
        b = OpBuilder(graph, f"reciprocam/tap_{split.info.block}/")
        tapped = own if split is deepest else tapped_tensors(b, split)
        for name in (RESIDUAL, *split.info.masked_inputs):
            out = gs.Variable(tap_input(split.info.block, name), tapped[name].dtype)
            outputs.append(b.op("Identity", [tapped[name]], out=out))
    graph.outputs = outputs
    prefix = export_like(graph.cleanup().toposort(), deepest.prefix)
    batch = deepest.info.static_batch  # the shared prefix's: one image a run if it quantizes at run time
    cuts = tuple(replace(split, prefix=prefix, info=replace(split.info, static_batch=batch)) for split in splits)
    return SharedSplit(prefix, cuts)
