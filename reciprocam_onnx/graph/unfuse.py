"""Standard ops in place of ONNX Runtime's fused normalisations (transformer optimizer output).

``onnxruntime.transformers.optimizer`` fuses each residual Add with the
LayerNorm after it::

    SkipLayerNormalization(x, skip, gamma, beta, bias) ─► LN(x + skip + bias), …, x + skip + bias
    ──────────────────────────────────────────────────────────────────────────────────────────────
    Add(x, bias) ─► Add(skip) ─► s ─► LayerNormalization(s, gamma, beta) ─► LN(s)
                                 └──► (the fused op's 4th output: the residual stream)

(the bias belongs to the branch's last MatMul: adding it first gives the
residual Add the block finder looks for).

which hides the residual stream the block finder and the cut need. The same
math in standard ops makes the optimized graph look like any export;
SkipSimplifiedLayerNormalization becomes Add + SimplifiedLayerNormalization
the same way. ONNX Runtime fuses them again when it loads the halves.
"""

from __future__ import annotations

import logging

import onnx_graphsurgeon as gs

from ..errors import GraphStructureError
from .builder import OpBuilder

log = logging.getLogger(__name__)

_NORMS = {
    "SkipLayerNormalization": "LayerNormalization",
    "SkipSimplifiedLayerNormalization": "SimplifiedLayerNormalization",
}


def unfuse_normalisations(graph: gs.Graph) -> int:
    """Replace every Skip(Simplified)LayerNormalization of ``graph`` in place; returns how many."""
    b = OpBuilder(graph, "reciprocam/unfused/")
    fused = [node for node in graph.nodes if node.op in _NORMS]
    for node in fused:
        simplified = node.op == "SkipSimplifiedLayerNormalization"
        inputs = [t if t.name else None for t in node.inputs] + [None] * 5
        x, skip, gamma = inputs[:3]
        if x is None or skip is None:
            raise GraphStructureError(f"{node.op} node {node.name!r} lacks its input or skip tensor")
        beta, bias = (None, inputs[3]) if simplified else (inputs[3], inputs[4])
        outputs = list(node.outputs) + [None] * 4
        total_out = outputs[3] if outputs[3] is not None and outputs[3].name else None
        node.outputs.clear()
        branch = x if bias is None else b.op("Add", [x, bias], dtype=x.dtype)  # the bias is the branch's
        total = b.op("Add", [branch, skip], out=total_out, dtype=x.dtype)
        norm_inputs = [total, gamma] + ([beta] if beta is not None else [])
        attrs = {"epsilon": node.attrs.get("epsilon", 1e-5), "axis": -1}
        stats = [t for t in outputs[1:3] if t is not None and t.name]
        norm_outputs = [outputs[0], *stats] if len(stats) == 2 else [outputs[0]]
        graph.nodes.append(gs.Node(_NORMS[node.op], b.name("norm"), attrs, norm_inputs, norm_outputs))
    if fused:
        graph.cleanup().toposort()
        log.info("unfused %d skip-normalisations into Add + LayerNorm", len(fused))
    return len(fused)
