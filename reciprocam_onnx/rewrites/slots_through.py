"""With a masked residual, run every block after the cut on a copy's distinct rows.

rewrites/slots.py runs the target block's attention on slots and expands its
output to T rows before the residual R is added, because the paper's copies
keep R whole. When the copies mask R too (``residual="masked"``), R's
zero-weight rows are zero like F's, so every zero-weight token still has the
same row after the Add, the MLP and every later block: the whole suffix can
run on the U slots. R is taken as slots, the expansion goes, and each later
block's attention adds the keys' log counts as slots.py does::

    R slots [B, U, D] ─────────────────┐
    F slots ─► target attention ─► a ─► + ─► MLP ─► block ─► ... ─► head rows ─► logits

The head's rows are prefix tokens, whose slot numbers are their token numbers,
so the head reads the slots as they are; a head that reads every row (mean
pooling) is left to the expanded suffix. The explainer and the fused graph
run this pass on the split's suffix for ``residual="masked"`` only
(engine/suffix.suffix_for_residual).
"""

from __future__ import annotations

import logging

import onnx_graphsurgeon as gs

from ..contract import RESIDUAL, SLOT_LOG_COUNT, TOKEN_SLOT
from ..errors import InternalError
from ..graph.axes import follow_axis
from ..graph.builder import OpBuilder
from ..graph.gsutil import constant_value, consumers, descendants, producer
from .base import NotApplicable, NothingToDo, Surgery
from .slots import count_keys, slot_shape, token_dim

log = logging.getLogger(__name__)

_ATTENTION_HOPS = 8  # ops between an attention's Q·Kᵀ MatMul and its Softmax (scale, bias, mask, casts)


def slots_through(surgery: Surgery, prefix_tokens: int) -> None:
    """The suffix taking R as slots and running every block after the target block's attention on slots."""
    graph = surgery.suffix
    tensors = graph.tensors()
    if TOKEN_SLOT not in tensors or RESIDUAL not in tensors:
        raise NotApplicable("the suffix does not take slots")
    tokens = int(tensors[TOKEN_SLOT].shape[1])
    expansion = _expansion(tensors[TOKEN_SLOT])
    if expansion is None:
        raise NothingToDo("the target block's attention output is not expanded: nothing runs on rows after it")
    add, gather, branch = expansion
    shapes = surgery.shapes()
    head_rows = _head_row_gathers(graph, shapes, tokens, prefix_tokens)
    if not head_rows:
        raise NotApplicable("the head reads every token row (mean pooling?)")
    later = descendants(tensors[RESIDUAL])
    found = [_attention(node, shapes) for node in graph.nodes if node.op == "Softmax" and id(node) in later]
    attentions = [attention for attention in found if attention is not None]
    start = {RESIDUAL: (1, 1), gather.outputs[0].name: (1, 1)}  # the expanded rows become the slots
    for qk, pv, _ in attentions:
        for product in (qk, pv):
            out = product.outputs[0].name
            if shapes[out][-2] == tokens:  # queries of every row (the last block may compute the head's only)
                start[out] = (len(shapes[out]) - 2, 1)
    sinks = frozenset({gather.name, *head_rows, *(n.name for qk, pv, _ in attentions for n in (qk, pv))})
    reshapes, failed = follow_axis(graph, shapes, start, sinks, tokens)
    if reshapes is None:
        if failed is None:
            raise InternalError("follow_axis failed without naming the node where it failed")
        raise NotApplicable(f"the token axis cannot be followed through {failed.op} node {failed.name!r}")
    if any(token_dim(graph, name, axis, tokens) is None for name, axis in reshapes.items()):
        raise NotApplicable("a Reshape merges the token axis with another")

    residual = tensors[RESIDUAL]
    b = OpBuilder(graph, "reciprocam/slots-through/", residual.dtype)
    count = b.dim(residual, 1)
    batch = b.dim(tensors[TOKEN_SLOT], 0)
    for node in graph.nodes:
        if node.name in reshapes:
            node.inputs[1] = slot_shape(b, node, reshapes[node.name], tokens, count)
    for _, _, softmax in attentions:
        count_keys(b, softmax, tensors[SLOT_LOG_COUNT], batch, count)
    add.inputs[add.inputs.index(gather.outputs[0])] = branch
    residual.shape = ["batch", "slots", int(residual.shape[-1])]
    log.info("every block after the cut runs on distinct rows (%d later attentions)", len(attentions))


def _expansion(token_slot: gs.Tensor) -> tuple[gs.Node, gs.Node, gs.Tensor] | None:
    """(the Add reading the expanded attention output, the expanding Gather, the slot rows [B, U, D]) that
    rewrites/slots.py made, or None."""
    for offset in consumers(token_slot, "Add"):
        for gather in consumers(offset.outputs[0], "Gather"):
            flat = producer(gather.inputs[0])
            adds = consumers(gather.outputs[0], "Add")
            if flat is not None and flat.op == "Reshape" and len(adds) == 1:
                return adds[0], gather, flat.inputs[0]
    return None


def _head_row_gathers(graph: gs.Graph, shapes: dict, tokens: int, prefix_tokens: int) -> set[str]:
    """Gathers that pick fixed prefix rows off a token axis (rewrites/head_rows.py): their slot numbers are
    their token numbers."""
    found = set()
    for node in graph.nodes:
        if node.op != "Gather" or node.inputs[0].name not in shapes:
            continue
        rows = constant_value(node.inputs[1])
        dims = shapes[node.inputs[0].name]
        axis = node.attrs.get("axis", 0) % len(dims)
        if rows is not None and rows.size and dims[axis] == tokens and 0 <= rows.min() and rows.max() < prefix_tokens:
            found.add(node.name)
    return found


def _attention(softmax: gs.Node, shapes: dict) -> tuple[gs.Node, gs.Node, gs.Node] | None:
    """(Q·Kᵀ MatMul, P·V MatMul, Softmax) of a later block's attention, found next to its Softmax; None for
    a Softmax of no two activations (one over the logits)."""
    products = _activation_products(softmax.inputs[0], _ATTENTION_HOPS)
    if not products:
        return None
    if softmax.attrs.get("axis", -1) not in (-1, len(shapes[softmax.inputs[0].name]) - 1):
        raise NotApplicable(f"Softmax {softmax.name!r} is not over the last (key) axis")
    readers = [n for n in softmax.outputs[0].outputs if n.op in ("MatMul", "Cast", "Dropout", "Identity")]
    while len(readers) == 1 and readers[0].op != "MatMul":
        readers = list(readers[0].outputs[0].outputs)
    if len(products) != 1 or len(readers) != 1 or not _is_product(readers[0]):
        raise NotApplicable(f"cannot tell Q·Kᵀ and P·V around Softmax {softmax.name!r}")
    return next(iter(products.values())), readers[0], softmax


def _activation_products(tensor: gs.Tensor, hops: int) -> dict[int, gs.Node]:
    """The MatMuls of two activations nearest above ``tensor`` (not through another MatMul or a Softmax),
    by id."""
    node = producer(tensor)
    if node is None or hops == 0 or node.op in ("Softmax", "LayerNormalization"):
        return {}
    if _is_product(node):
        return {id(node): node}
    if node.op in ("MatMul", "Gemm"):
        return {}
    found: dict[int, gs.Node] = {}
    for source in node.inputs:
        if constant_value(source) is None:
            found.update(_activation_products(source, hops - 1))
    return found


def _is_product(node: gs.Node) -> bool:
    return node.op == "MatMul" and all(constant_value(t) is None for t in node.inputs)
