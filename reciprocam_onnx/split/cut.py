"""Cut a graph between tensors: the prefix (image -> R, F) and the suffix (R, F -> logits)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import astuple

import numpy as np
import onnx_graphsurgeon as gs

from .. import contract
from ..analysis.facts import ModelFacts
from ..errors import GraphStructureError
from ..graph.builder import OpBuilder
from ..graph.export import fold_constants
from ..graph.simplify import drop_neutral_ops


def cut(
    graph: gs.Graph,
    inputs: dict[str, str],
    outputs: dict[str, str],
    tokens: tuple[int, ...],
    dtype: str,
    batch: int | str = "batch",
    known_shapes: Mapping[str, tuple[int, ...]] | None = None,
) -> gs.Graph:
    """A copy of the subgraph from ``inputs`` to ``outputs``, tensors renamed by the dicts' values.

    Cut-open inputs become ``dtype`` [batch, T, D]. A ``Shape`` read of a
    tensor computed before the cut (the image input's, in dynamo exports) becomes a
    constant, from ``known_shapes`` (tensor name -> shape at batch 1).
    """
    graph = graph.copy()
    tensors = graph.tensors()
    new_inputs = [tensors[name] for name in inputs]
    for tensor in new_inputs:
        tensor.inputs.clear()
        if tensor not in graph.inputs:
            tensor.dtype, tensor.shape = np.dtype(dtype), [batch, *tokens]
    graph.inputs = new_inputs
    graph.outputs = [tensors[name] for name in outputs]
    for tensor in graph.outputs:
        tensor.dtype = tensor.dtype or np.float32
    graph.cleanup(remove_unused_graph_inputs=True).toposort()
    _constant_shape_reads(graph, known_shapes or {})
    _check_closed(graph)
    for old, new in {**inputs, **outputs}.items():
        tensors[old].name = new
    return graph


def prefix_and_suffix(graph: gs.Graph, facts: ModelFacts, index: int) -> tuple[gs.Graph, gs.Graph]:
    """The model cut at block ``index``: prefix (image -> residual, normed) and suffix (-> logits, batch 1).

    A residual stream laid out as a grid [B, h, w, D] (timm's Swin) leaves the
    prefix as [B, h*w, D] tokens and is laid out again inside the suffix.
    """
    target = facts.blocks[index]
    tokens = facts.token_shape or (facts.tokens, facts.width)
    tap = {target.residual: contract.RESIDUAL, target.normed: contract.NORMED}
    prefix = cut(graph, {facts.input.name: facts.input.name}, tap, tokens, facts.dtype)
    known = {**facts.shape_reads, facts.input.name: facts.input.shape(batch=1)}
    suffix = cut(graph, tap, {facts.output: facts.output}, tokens, facts.dtype, batch=1, known_shapes=known)
    if len(tokens) == 3:
        _grid_as_tokens(prefix, suffix, tokens)
    return prefix, suffix


def _grid_as_tokens(prefix: gs.Graph, suffix: gs.Graph, grid: tuple[int, ...]) -> None:
    """Flatten the prefix's [B, h, w, D] outputs to [B, h*w, D]; the suffix takes them so (in place)."""
    b = OpBuilder(prefix, "reciprocam/tokens/")
    flat = [b.reshape(t, [0, -1, grid[-1]]) for t in prefix.outputs]
    for old, new in zip(prefix.outputs, flat):
        new.name, old.name = old.name, f"{old.name}_grid"
        new.shape = ["batch", math.prod(grid[:-1]), grid[-1]]
    prefix.outputs = flat
    b = OpBuilder(suffix, "reciprocam/grid/")
    inputs = []
    for old in suffix.inputs:
        new = gs.Variable(old.name, old.dtype, [1, math.prod(grid[:-1]), grid[-1]])
        old.name = f"{old.name}_grid"
        b.op("Reshape", [new, b.const("shape", np.array([1, *grid], np.int64))], out=old)
        inputs.append(new)
    suffix.inputs = inputs
    suffix.toposort()


def set_shapes(graph: gs.Graph, shapes: dict[str, tuple[int, ...]], facts: ModelFacts) -> None:
    """Give every variable its probed shape, fold the constant subgraphs (shape arithmetic),
    then drop the operations that do nothing (graph/simplify.py) but keep the blocks' tensors."""
    for tensor in graph.tensors().values():
        if isinstance(tensor, gs.Variable) and tensor.name in shapes:
            tensor.shape = shapes[tensor.name]
    fold_constants(graph)
    named = frozenset(name for block in facts.blocks for name in astuple(block)[1:])
    drop_neutral_ops(graph, shapes, named)


def free_shapes(graph: gs.Graph, output_shape: tuple[int, ...]) -> None:
    """Forget the batch-1 shapes inside (ONNX Runtime infers them); inputs and output get a free batch."""
    for tensor in graph.tensors().values():
        if isinstance(tensor, gs.Variable) and tensor not in graph.inputs:
            tensor.shape = None
    for tensor in graph.inputs:
        tensor.shape = [f"{tensor.name}_batch", *tensor.shape[1:]]
    graph.outputs[0].shape = ["batch", *output_shape]


def _constant_shape_reads(graph: gs.Graph, known: Mapping[str, tuple[int, ...]]) -> None:
    """Replace each Shape node that reads a tensor computed before the cut by its value at batch 1
    from ``known`` (in place); the nodes before the cut that only fed it go."""
    after = {id(t) for t in graph.inputs}
    for node in graph.nodes:  # toposorted: the tensors computed from the cut's inputs
        if any(id(t) in after for t in node.inputs):
            after.update(id(t) for t in node.outputs)
    for node in graph.nodes:
        tensor = node.inputs[0] if node.op == "Shape" else None
        if tensor is None or id(tensor) in after or tensor.name not in known:
            continue
        shape = known[tensor.name]
        start, end = node.attrs.get("start", 0), node.attrs.get("end", len(shape))
        value = gs.Constant(f"{node.outputs[0].name}_before_cut", np.array(shape[start:end], np.int64))
        for reader in list(node.outputs[0].outputs):
            reader.inputs = [value if t is node.outputs[0] else t for t in reader.inputs]
    graph.cleanup(remove_unused_graph_inputs=True).toposort()


def _check_closed(graph: gs.Graph) -> None:
    """Raise if some node reads a tensor that nothing in the cut graph provides."""
    inputs = {id(t) for t in graph.inputs}
    for node in graph.nodes:
        for tensor in node.inputs:
            dangling = isinstance(tensor, gs.Variable) and not tensor.inputs and tensor.name
            if dangling and id(tensor) not in inputs:
                raise GraphStructureError(
                    f"cannot split here: node {node.name!r} of the cut graph reads "
                    f"{tensor.name!r}, computed before the cut"
                )
