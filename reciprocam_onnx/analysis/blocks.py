"""Find the pre-norm transformer blocks of a ViT graph.

A pre-norm sublayer is a LayerNorm whose input ``x`` also feeds a residual
``Add`` whose other operand is computed from the LayerNorm's output::

    x ──LN──► f ──(attention | MLP)──► a ──┐
    └───────────────────────────────────Add──► x + a

A block is an attention sublayer (a ``Softmax`` between ``f`` and the Add)
followed by an MLP sublayer whose input is the attention sublayer's output.
The block's input ``x`` is the residual stream ``R``; the first LayerNorm's
output ``f`` is ``F``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import onnx_graphsurgeon as gs

from ..errors import NotAViTError
from ..graph.gsutil import ancestors, dequantized, descendants, float_readers, ops_of, producer
from .layernorm import LayerNormMatch, find_layernorms

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sublayer:
    """One residual branch: ``output = input + branch(LN(input))``; in QDQ graphs ``input`` is the
    float tensor before its QuantizeLinear -> DequantizeLinear copies."""

    norm: LayerNormMatch
    add: gs.Node
    is_attention: bool
    input: gs.Tensor

    @property
    def output(self) -> gs.Variable:
        return self.add.outputs[0]


@dataclass(frozen=True)
class Block:
    """One transformer block as tensor names: R (input), F (LN1 output), output."""

    index: int
    residual: str
    normed: str
    attention_output: str
    output: str


def find_blocks(graph: gs.Graph) -> list[Block]:
    """All pre-norm transformer blocks of ``graph``, in execution order.

    Raises NotAViTError when there is none.
    """
    graph.toposort()
    norms = find_layernorms(graph)
    sublayers = [s for s in map(_as_sublayer, norms) if s is not None]
    by_input = {id(_unreshaped(s.input)): s for s in sublayers if not s.is_attention}
    candidates = [(a, by_input.get(id(a.output))) for a in sublayers if a.is_attention]
    pairs = [(a, m) for a, m in candidates if m is not None]
    if not pairs:
        raise NotAViTError(f"no transformer blocks found: {_what_failed(graph, norms, sublayers, candidates)}")
    order = {id(n): i for i, n in enumerate(graph.nodes)}
    pairs.sort(key=lambda p: order[id(p[0].add)])
    blocks = [
        Block(i, a.input.name, a.norm.output.name, a.output.name, m.output.name) for i, (a, m) in enumerate(pairs)
    ]
    log.info("found %d transformer blocks", len(blocks))
    return blocks


# fused attention (ONNX Runtime contrib ops): the cut cannot see its queries, keys and Softmax
FUSED_OPS = ("Attention", "MultiHeadAttention", "PackedAttention", "GroupQueryAttention")


def _what_failed(
    graph: gs.Graph,
    norms: list[LayerNormMatch],
    sublayers: list[Sublayer],
    candidates: list[tuple[Sublayer, Sublayer | None]],
) -> str:
    """Which step of the block pattern failed, and what the graph has instead."""
    ops = [n.op for n in graph.nodes]
    found = {op: ops.count(op) for op in ("Softmax", "Conv", *FUSED_OPS) if op in ops}
    has = ", ".join(f"{count} {op}" for op, count in found.items()) or "none of Softmax, Conv or fused attention ops"
    has = f"{len(norms)} LayerNorms, {has}"
    if not norms and "Softmax" not in found and "Conv" in found:
        return f"the graph has {has}: it looks like a CNN rather than a Vision Transformer"
    quantized = sorted({op for op in ops if op.startswith("QLinear")})
    if quantized:
        step = (
            f"its int8 ops are in ONNX Runtime's QOperator format ({', '.join(quantized)}), which hides "
            "the LayerNorms' residual Adds; quantize with QuantFormat.QDQ (supported) instead"
        )
    elif any(op in found for op in FUSED_OPS):
        step = (
            "its attention is a fused ONNX Runtime op, which hides the Softmax the block finder looks for "
            "(optimize the model without attention fusion: FusionOptions.enable_attention = False)"
        )
    elif not norms:
        step = "no LayerNorm (the op or its decomposed form) was found"
    elif not sublayers and (post_norms := _post_norms(norms)):
        step = (
            f"{post_norms} of its LayerNorms close a branch before the residual Add (post-norm: "
            "x + LN(branch(x)), as in Swin V2), and only pre-norm blocks (x + branch(LN(x))) are supported"
        )
    elif not sublayers:
        step = "no LayerNorm's input also feeds a residual Add of a branch computed from its output (pre-norm)"
    elif not any(s.is_attention for s in sublayers):
        step = "no pre-norm branch holds a Softmax (attention)"
    else:
        step = f"none of the {len(candidates)} attention sublayers is followed by a pre-norm MLP sublayer"
    return f"{step}; the graph has {has}"


def _post_norms(norms: list[LayerNormMatch]) -> int:
    """How many LayerNorms end a residual branch: an Add reads their output and a tensor they descend from."""
    count = 0
    for norm in norms:
        upstream = {id(t) for node in ancestors(norm.input) for t in (*node.inputs, *node.outputs)}
        adds = [n for n in norm.output.outputs if n.op == "Add"]
        count += any(any(t is not norm.output and id(t) in upstream for t in add.inputs) for add in adds)
    return count


def _unreshaped(tensor: gs.Tensor) -> gs.Tensor:
    """The tensor before any Reshapes (Swin flattens its [B, H, W, C] grid between the sublayers)."""
    node = producer(tensor)
    while node is not None and node.op in ("Reshape", "Flatten"):
        tensor = node.inputs[0]
        node = producer(tensor)
    return tensor


def _as_sublayer(norm: LayerNormMatch) -> Sublayer | None:
    downstream = descendants(norm.output)
    x = dequantized(norm.input)
    for add in float_readers(x, "Add"):
        branches = [t for t in add.inputs if dequantized(t) is not x]
        if len(branches) != 1 or id(add) not in downstream:
            continue
        region = ancestors(branches[0], within=downstream)
        if region:
            return Sublayer(norm, add, "Softmax" in ops_of(region), x)
    return None
