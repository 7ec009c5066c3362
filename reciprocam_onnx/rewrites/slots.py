"""Run the target block's attention on a copy's distinct rows only.

In a masked copy every zero-weight token is the same (zero) row, so its
query, key and value are the same too: all those rows get one attention
output, and as keys they count once, multiplied by how many they are. The
suffix therefore takes each copy as U slots (slots.py) instead of T rows::

    slots [B, U, k] ─► q, k, v ─► Q·Kᵀ + log count ─► Softmax ─► ·V ─► proj ─► a [B, U, D]
    a ──Gather(token_slot)──► [B, T, D] ──► + R ──► the rest of the network, unchanged

Reshapes that carry the token axis in the attention get U (read from the
input's shape at run time) in place of T, so one graph runs the compact
copies (U = P + 10 for a 3x3 kernel) and the unmasked model (U = T, every
count 1). When the target block is the last and only its head rows are
computed (rewrites/head_rows.py), the attention output already has just
those rows, which are prefix slots: no Gather is needed.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx_graphsurgeon as gs

from ..contract import SLOT_LOG_COUNT, TOKEN_SLOT
from ..errors import InternalError
from ..graph.axes import follow_axis
from ..graph.builder import OpBuilder
from ..graph.gsutil import ancestors, constant_value, descendants, producer
from .base import NotApplicable, Surgery

log = logging.getLogger(__name__)


def slots(surgery: Surgery) -> None:
    """The suffix taking its masked inputs as slots, plus slot_log_count and token_slot."""
    graph, shapes, masked = surgery.suffix, surgery.shapes(), tuple(surgery.masked)
    tokens = surgery.model_facts.tokens
    tensors = graph.tensors()
    add, branch, softmax, qk, pv, region = _attention(tensors, shapes, masked, surgery.target.attention_output)
    head_rows = [n for n in region if n.name in surgery.head_rows]
    sinks = {qk.name, pv.name, *(n.name for n in head_rows)}
    keys, failed = follow_axis(graph, shapes, {name: (1, 1) for name in masked}, frozenset(sinks), tokens)
    if keys is None:
        if failed is None:
            raise InternalError("follow_axis failed without naming the node where it failed")
        raise NotApplicable(f"the token axis cannot be followed through {failed.op} node {failed.name!r}")
    queries: dict[str, int] = {}
    if not head_rows:
        if shapes[branch.name][1] != tokens:
            raise NotApplicable(f"attention output of shape {shapes[branch.name]}")
        start = {qk.outputs[0].name: (len(shapes[qk.outputs[0].name]) - 2, 1)}
        found, failed = follow_axis(graph, shapes, start, frozenset({add.name}), tokens)
        if found is None:
            if failed is None:
                raise InternalError("follow_axis failed without naming the node where it failed")
            raise NotApplicable(f"the query axis cannot be followed through {failed.op} node {failed.name!r}")
        queries = found
    reshapes = {**keys, **queries}
    if any(token_dim(graph, name, axis, tokens) is None for name, axis in reshapes.items()):
        raise NotApplicable("a Reshape merges the token axis with another")

    b = OpBuilder(graph, "reciprocam/slots/", surgery.model_facts.dtype)
    log_count = gs.Variable(SLOT_LOG_COUNT, np.float32, ["batch", "slots"])
    token_slot = gs.Variable(TOKEN_SLOT, np.int64, ["batch", tokens])
    count = b.dim(tensors[masked[0]], 1)
    batch = b.dim(token_slot, 0)
    for node in graph.nodes:
        if node.name in reshapes:
            node.inputs[1] = slot_shape(b, node, reshapes[node.name], tokens, count)
    count_keys(b, softmax, log_count, batch, count)
    if not head_rows:
        add.inputs[add.inputs.index(branch)] = _expand(b, branch, token_slot, batch, count, shapes[branch.name][2])
    for name in masked:
        tensors[name].shape = ["batch", "slots", _width(tensors[name])]
    graph.inputs.extend([log_count, token_slot])
    surgery.slots = True
    log.info("target block attention runs on distinct rows (%d Reshapes take the slot count)", len(reshapes))


def count_keys(b: OpBuilder, softmax: gs.Node, log_count: gs.Tensor, batch: gs.Tensor, count: gs.Tensor) -> None:
    """Add each key slot's log count to the Softmax's scores [..., U]: the slot weighs as its tokens."""
    scores = softmax.inputs[0]
    kind = scores.dtype if scores.dtype is not None else b.floats  # a float16 model may keep Softmax in float32
    grouped = b.op(
        "Reshape",
        [scores, b.op("Concat", [batch, b.const("rest", np.array([-1])), count], {"axis": 0}, dtype=np.int64)],
        dtype=kind,
    )
    counted = b.op("Add", [grouped, b.cast(b.reshape(log_count, [0, 1, -1]), kind)], dtype=kind)
    softmax.inputs[0] = b.op("Reshape", [counted, b.op("Shape", [scores], dtype=np.int64)], dtype=kind)


def _attention(tensors: dict, shapes: dict, masked: tuple[str, ...], attention_output: str):
    """(residual Add, attention branch, Softmax, Q·Kᵀ MatMul, P·V MatMul, the branch's nodes)."""
    add = producer(tensors[attention_output])
    if add is None or add.op != "Add":
        raise NotApplicable("the target block's attention output is not an Add")
    downstream: set[int] = set()
    for name in masked:
        downstream |= descendants(tensors[name])
    branches = [t for t in add.inputs if t.inputs and id(producer(t)) in downstream]
    if len(branches) != 1:
        raise NotApplicable("cannot tell the attention branch from the residual")
    region = ancestors(branches[0], within=downstream)
    softmax = [n for n in region if n.op == "Softmax"]
    products = [n for n in region if n.op == "MatMul" and all(constant_value(t) is None for t in n.inputs)]
    if len(softmax) != 1 or len(products) != 2:
        raise NotApplicable(f"{len(softmax)} Softmax and {len(products)} activation MatMuls in the attention")
    before = {id(n) for n in ancestors(softmax[0].outputs[0])}
    qk = [n for n in products if id(n) in before]
    pv = [n for n in products if id(n) not in before]
    if len(qk) != 1 or len(pv) != 1:
        raise NotApplicable("cannot tell Q·Kᵀ from P·V")
    if softmax[0].attrs.get("axis", -1) not in (-1, len(shapes[softmax[0].inputs[0].name]) - 1):
        raise NotApplicable("the Softmax is not over the last (key) axis")
    return add, branches[0], softmax[0], qk[0], pv[0], region


def _width(tensor: gs.Variable) -> int:
    return int(tensor.shape[-1])


def token_dim(graph: gs.Graph, name: str, axis: int, tokens: int) -> int | None:
    """The Reshape's target size on the token axis (-1 when merged with the batch), or None."""
    node = next(n for n in graph.nodes if n.name == name)
    shape = constant_value(node.inputs[1])
    if shape is None:
        raise InternalError(f"follow_axis chose Reshape {name!r}, whose shape is not a constant")
    size = int(shape[axis])
    return size if size == -1 or size % tokens == 0 else None


def slot_shape(b: OpBuilder, node: gs.Node, axis: int, tokens: int, slots: gs.Variable) -> gs.Tensor:
    """The Reshape's shape with ``slots`` (times the same factor) in place of ``tokens`` rows."""
    shape = np.asarray(constant_value(node.inputs[1]), np.int64)
    if shape[axis] == -1:
        return node.inputs[1]
    parts = [b.op("Mul", [slots, b.const("factor", np.array([shape[axis] // tokens]))], dtype=np.int64)]
    if axis:
        parts.insert(0, b.const("head", shape[:axis]))
    if axis + 1 < len(shape):
        parts.append(b.const("tail", shape[axis + 1 :]))
    return b.op("Concat", parts, {"axis": 0}, dtype=np.int64)


def _expand(
    b: OpBuilder, branch: gs.Tensor, token_slot: gs.Variable, batch: gs.Variable, slots: gs.Variable, width: int
) -> gs.Variable:
    """[B, U, D] slot rows -> [B, T, D] token rows: row t of copy c is slot token_slot[c, t]."""
    flat = b.reshape(branch, [-1, width])
    scalar = np.array(0, np.int64)
    count = b.op("Gather", [batch, b.const("first", scalar)], {"axis": 0}, dtype=np.int64)
    start = b.op("Range", [b.const("zero", scalar), count, b.const("step", np.array(1, np.int64))], dtype=np.int64)
    offsets = b.op("Mul", [b.reshape(start, [-1, 1]), slots], dtype=np.int64)
    index = b.op("Add", [token_slot, offsets], dtype=np.int64)
    return b.op("Gather", [flat, index], {"axis": 0})
