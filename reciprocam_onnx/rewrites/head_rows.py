"""Compute only the token rows the head reads in the suffix's last block.

With CLS-token pooling (or any fixed prefix rows S), the logits depend on the
last block's output rows S only. The last block still needs keys and values
for every row, but its queries, attention output, projection, residual,
LayerNorm, MLP and final norm only for S::

    x ──LN1──► qkv ──► Q ──Gather(S)──► Q_S·Kᵀ ──Softmax──► ·V ──► proj ──► a_S
    x ──Gather(S)──► x_S ──────────────────────────────────────────────────Add──► y_S ──► MLP ...
    final norm ──Gather(i)──► head      (i remapped to its position in S)

Reshapes between the sliced queries and the head get their token dimension
scaled from T to |S| (the token axis is followed with axes.follow_axis).
Mean-pooling models read every row and are left as they are.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import onnx_graphsurgeon as gs

from ..analysis.blocks import Block
from ..analysis.layernorm import find_layernorms
from ..contract import NORMED, RESIDUAL
from ..errors import InternalError
from ..graph.axes import follow_axis
from ..graph.gsutil import ancestors, constant_value, consumers, dequantized, descendants, producer
from .base import NotApplicable, Surgery

log = logging.getLogger(__name__)

_PASS_THROUGH = {"Mul", "Div", "Add", "Sub", "Cast", "Where"}


def head_rows(surgery: Surgery) -> None:
    """Rewrite the suffix so its last block computes the head's rows S only."""
    facts = surgery.model_facts
    last = facts.blocks[-1]
    if surgery.index == len(facts.blocks) - 1:  # the target block is the last: its R and F are inputs here
        last = replace(last, residual=RESIDUAL, normed=NORMED)
    surgery.head_rows = _keep_rows(surgery.suffix, surgery.shapes(), last, facts.tokens)


def _keep_rows(graph: gs.Graph, shapes: dict[str, tuple[int, ...]], last: Block, tokens: int) -> list[str]:
    """Slice the queries and the residual of ``last`` to the head's rows; the names of the Gathers added."""
    tensors = graph.tensors()
    pools = _pooling_gathers(graph, tensors[last.output])
    if pools is None and _reads_quantized(graph, tensors[last.output]):
        raise NotApplicable("the head reads the tokens through QuantizeLinear/DequantizeLinear, not followed here")
    if pools is None:
        raise NotApplicable("the head reads every token row (mean pooling?)")
    rows = sorted({int(i) for node in pools for i in np.atleast_1d(_indices(node))})
    queries = _query_matmul(tensors[last.normed], tensors[last.attention_output])
    q = queries.inputs[0]
    axes = [k for k, size in enumerate(shapes[q.name]) if size == tokens]
    if len(axes) != 1:
        raise NotApplicable(f"cannot tell the token axis of the queries {shapes[q.name]}")
    index = gs.Constant("reciprocam/head_rows", np.array(rows, np.int64))
    q_rows = _gather(graph, q, index, axes[0], queries)
    add = producer(tensors[last.attention_output])
    x = tensors[last.residual]
    x_rows = _gather(graph, x, index, 1, add)
    for node in pools:
        old = _indices(node)
        node.inputs[1] = gs.Constant(f"{node.name}_row", np.vectorize(rows.index)(old).astype(np.int64))
    shapes = {**shapes, q_rows.name: shapes[q.name], x_rows.name: shapes[x.name]}
    start = {q_rows.name: (axes[0], 1), x_rows.name: (1, 1)}
    choices, failed = follow_axis(graph, shapes, start, frozenset(n.name for n in pools), len(rows))
    if choices is None:
        if failed is None:
            raise InternalError("follow_axis failed without naming the node where it failed")
        raise NotApplicable(f"token rows cannot be followed through {failed.op} node {failed.name!r}")
    _scale_reshapes(graph, choices, tokens, len(rows))
    log.info("last block computes %d of %d token rows (%d Reshapes rescaled)", len(rows), tokens, len(choices))
    return [_gather_name(q), _gather_name(x)]


def _pooling_gathers(graph: gs.Graph, block_output: gs.Variable) -> list[gs.Node] | None:
    """The Gather(axis=1, constant indices) nodes through which the head reads the tokens."""
    pooled = block_output
    for norm in find_layernorms(graph):
        if norm.input is block_output:
            pooled = norm.output
    readers = consumers(pooled)
    ok = readers and all(
        n.op == "Gather" and n.attrs.get("axis", 0) == 1 and constant_value(n.inputs[1]) is not None for n in readers
    )
    return readers if ok else None


def _reads_quantized(graph: gs.Graph, block_output: gs.Variable) -> bool:
    """The last block's output (or its final norm's) goes through a QuantizeLinear (QDQ graphs)."""
    tensors = [block_output, *(n.output for n in find_layernorms(graph) if dequantized(n.input) is block_output)]
    return any(n.op == "QuantizeLinear" for t in tensors for n in consumers(t))


def _indices(gather: gs.Node) -> np.ndarray:
    """The constant indices of a Gather kept by :func:`_pooling_gathers`."""
    value = constant_value(gather.inputs[1])
    if value is None:
        raise InternalError(f"pooling Gather {gather.name!r} has no constant indices")
    return value


def _query_matmul(normed: gs.Variable, attention_output: gs.Variable) -> gs.Node:
    """The MatMul computing Q·Kᵀ: the producer chain of the last block's Softmax input."""
    add = producer(attention_output)
    if add is None:
        raise NotApplicable("the last block's attention output is not computed in the suffix")
    region = ancestors(add.inputs[0], descendants(normed)) + ancestors(add.inputs[1], descendants(normed))
    softmax = [n for n in region if n.op == "Softmax"]
    if len(softmax) != 1:
        raise NotApplicable(f"{len(softmax)} Softmax nodes in the last block's attention, not one")
    node = producer(softmax[0].inputs[0])
    while node is not None and node.op in _PASS_THROUGH:
        variable = [t for t in node.inputs if constant_value(t) is None]
        node = producer(variable[0]) if len(variable) == 1 else None
    if node is None or node.op != "MatMul":
        raise NotApplicable("the last block's attention scores do not come from a MatMul")
    return node


def _gather(graph: gs.Graph, tensor: gs.Tensor, index: gs.Constant, axis: int, reader: gs.Node) -> gs.Variable:
    """Insert Gather(tensor, index, axis) and make ``reader`` read it instead of ``tensor``."""
    out = gs.Variable(f"{tensor.name}_head_rows", dtype=tensor.dtype)
    graph.nodes.append(gs.Node("Gather", _gather_name(tensor), {"axis": axis}, [tensor, index], [out]))
    reader.inputs = [out if t is tensor else t for t in reader.inputs]
    return out


def _gather_name(tensor: gs.Tensor) -> str:
    return f"{tensor.name}_head_rows_gather"


def _scale_reshapes(graph: gs.Graph, choices: dict[str, int], tokens: int, rows: int) -> None:
    for node in graph.nodes:
        if node.name not in choices:
            continue
        shape = np.array(constant_value(node.inputs[1]), dtype=np.int64)
        axis = choices[node.name]
        if shape[axis] != -1:
            if shape[axis] % tokens:
                raise NotApplicable(f"Reshape {node.name!r}: dimension {shape[axis]} does not hold {tokens} rows")
            shape[axis] = shape[axis] // tokens * rows
        node.inputs[1] = gs.Constant(f"{node.name}_head_rows_shape", shape)
