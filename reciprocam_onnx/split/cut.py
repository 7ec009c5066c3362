"""Cut a graph between tensors: the prefix (image -> R, F) and the suffix (R, F -> logits)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import astuple

import numpy as np
import onnx_graphsurgeon as gs

from .. import contract
from ..analysis.facts import ModelFacts
from ..errors import GraphStructureError
from ..graph.export import fold_constants
from ..graph.simplify import drop_neutral_ops


def cut(
    graph: gs.Graph,
    inputs: dict[str, str],
    outputs: dict[str, str],
    tokens: tuple[int, int],
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
    """The model cut at block ``index``: prefix (image -> residual, normed) and suffix (-> logits, batch 1)."""
    target = facts.blocks[index]
    tokens = (facts.tokens, facts.width)
    tap = {target.residual: contract.RESIDUAL, target.normed: contract.NORMED}
    prefix = cut(graph, {facts.input.name: facts.input.name}, tap, tokens, facts.dtype)
    image = {facts.input.name: facts.input.shape(batch=1)}
    suffix = cut(graph, tap, {facts.output: facts.output}, tokens, facts.dtype, batch=1, known_shapes=image)
    return prefix, suffix


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
    """Replace each Shape node that reads a tensor from before the cut by its value (in place)."""
    inputs = {id(t) for t in graph.inputs}
    for node in graph.nodes:
        if node.op != "Shape" or id(node.inputs[0]) in inputs or node.inputs[0].inputs:
            continue
        shape = known.get(node.inputs[0].name)
        if shape is None:
            continue
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
