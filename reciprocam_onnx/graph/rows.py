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

import numpy as np
import onnx_graphsurgeon as gs

from .axes import follow_axis
from .blocks import Block
from .gsutil import ancestors, constant_value, consumers, descendants, producer
from .layernorm import find_layernorms

log = logging.getLogger(__name__)

_PASS_THROUGH = {"Mul", "Div", "Add", "Sub", "Cast", "Where"}
HEAD_ROWS = "_head_rows_gather"  # name suffix of the Gathers that pick the head rows


def keep_head_rows(graph: gs.Graph, shapes: dict[str, tuple[int, ...]], last: Block, tokens: int) -> list[int] | None:
    """Rewrite ``graph`` (in place) so its last block computes rows S only; returns S, or None."""
    tensors = graph.tensors()
    pools = _pooling_gathers(graph, tensors[last.output])
    if pools is None:
        log.info("the head reads every token row (mean pooling?): no row slicing")
        return None
    rows = sorted({int(i) for node in pools for i in np.atleast_1d(constant_value(node.inputs[1]))})
    queries = _query_matmul(tensors[last.normed], tensors[last.attention_output])
    if queries is None:
        return None
    q = queries.inputs[0]
    axes = [k for k, size in enumerate(shapes[q.name]) if size == tokens]
    if len(axes) != 1:
        log.info("cannot tell the token axis of the queries %s: no row slicing", shapes[q.name])
        return None
    index = gs.Constant("reciprocam/head_rows", np.array(rows, np.int64))
    q_rows = _gather(graph, q, index, axes[0], queries)
    add = producer(tensors[last.attention_output])
    x = tensors[last.residual]
    x_rows = _gather(graph, x, index, 1, add)
    for node in pools:
        old = np.asarray(constant_value(node.inputs[1]))
        node.inputs[1] = gs.Constant(f"{node.name}_row", np.vectorize(rows.index)(old).astype(np.int64))
    shapes = {**shapes, q_rows.name: shapes[q.name], x_rows.name: shapes[x.name]}
    start = {q_rows.name: (axes[0], 1), x_rows.name: (1, 1)}
    choices, failed = follow_axis(graph, shapes, start, frozenset(n.name for n in pools), len(rows))
    if choices is None:
        raise ValueError(f"token rows cannot be followed through {failed.op} node {failed.name!r}")
    _scale_reshapes(graph, choices, tokens, len(rows))
    log.info("last block computes %d of %d token rows (%d Reshapes rescaled)", len(rows), tokens, len(choices))
    return rows


def _pooling_gathers(graph: gs.Graph, block_output: gs.Variable) -> list[gs.Node] | None:
    """The Gather(axis=1, constant indices) nodes through which the head reads the tokens."""
    pooled = block_output
    for norm in find_layernorms(graph):
        if norm.input is block_output:
            pooled = norm.output
    readers = consumers(pooled)
    ok = readers and all(n.op == "Gather" and n.attrs.get("axis", 0) == 1
                         and constant_value(n.inputs[1]) is not None for n in readers)
    return readers if ok else None


def _query_matmul(normed: gs.Variable, attention_output: gs.Variable) -> gs.Node | None:
    """The MatMul computing Q·Kᵀ: the producer chain of the last block's Softmax input."""
    add = producer(attention_output)
    region = ancestors(add.inputs[0], descendants(normed)) + ancestors(add.inputs[1], descendants(normed))
    softmax = [n for n in region if n.op == "Softmax"]
    if len(softmax) != 1:
        log.info("no single Softmax in the last block: no row slicing")
        return None
    node = producer(softmax[0].inputs[0])
    while node is not None and node.op in _PASS_THROUGH:
        variable = [t for t in node.inputs if constant_value(t) is None]
        node = producer(variable[0]) if len(variable) == 1 else None
    return node if node is not None and node.op == "MatMul" else None


def _gather(graph: gs.Graph, tensor: gs.Tensor, index: gs.Constant, axis: int, reader: gs.Node) -> gs.Variable:
    """Insert Gather(tensor, index, axis) and make ``reader`` read it instead of ``tensor``."""
    out = gs.Variable(f"{tensor.name}_head_rows", dtype=tensor.dtype)
    graph.nodes.append(gs.Node("Gather", f"{tensor.name}{HEAD_ROWS}", {"axis": axis}, [tensor, index], [out]))
    reader.inputs = [out if t is tensor else t for t in reader.inputs]
    return out


def _scale_reshapes(graph: gs.Graph, choices: dict[str, int], tokens: int, rows: int) -> None:
    for node in graph.nodes:
        if node.name not in choices:
            continue
        shape = np.array(constant_value(node.inputs[1]), dtype=np.int64)
        axis = choices[node.name]
        if shape[axis] != -1:
            if shape[axis] % tokens:
                raise ValueError(f"Reshape {node.name!r}: dimension {shape[axis]} does not hold {tokens} rows")
            shape[axis] = shape[axis] // tokens * rows
        node.inputs[1] = gs.Constant(f"{node.name}_head_rows_shape", shape)
