"""Follow one axis of the data (the batch, or the token rows) through a graph.

Exports bake sizes into Reshape shape constants, sometimes merging the axis
with another (``[197, 1*heads, 64]`` in torchvision's attention). We track
where the axis lives in every tensor — an ``(axis, inner)`` pair: the tensor
axis that holds it and the product of the factors of that axis inside it —
from the start tensors forward, op by op. A Reshape may place it in more than
one output axis consistently with memory layout; those choices are searched
depth-first, and a choice that a later op contradicts (a contraction, a
normalisation or a constant over that axis) is abandoned.

Three rewrites use this: :func:`make_batch_dynamic` (a fixed batch of 1 becomes
``-1`` in every batch-carrying Reshape), the row slicing of rewrites/head_rows.py and the
distinct-row attention of rewrites/slots.py (an axis of ``size`` elements only fits
a Reshape output axis that can hold them).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import numpy as np
import onnx_graphsurgeon as gs

from ..errors import GraphStructureError, InternalError
from .builder import OpBuilder
from .gsutil import constant_value

log = logging.getLogger(__name__)

Place = tuple[int, int]  # (axis, inner factor)
Option = tuple[dict[str, Place], dict[str, int]]  # (tensor places, Reshape name -> chosen axis)

_ELEMENTWISE = {
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Pow",
    "Where",
    "Equal",
    "Greater",
    "Less",
    "And",
    "Or",
    "Not",
    "Max",
    "Min",
    "Erf",
    "Sqrt",
    "Exp",
    "Log",
    "Tanh",
    "Sigmoid",
    "Relu",
    "Gelu",
    "Cast",
    "Identity",
    "Neg",
    "Abs",
    "Reciprocal",
    "Clip",
    "Dropout",
    "Softplus",
    "HardSigmoid",
    "HardSwish",
    "Mish",
    "Floor",
    "Ceil",
    "Round",
    "Sign",
    "Mod",
    "IsNaN",
    "IsInf",
    "LeakyRelu",
    "Elu",
    "Selu",
    "Celu",
    "PRelu",
    "Softsign",
    "ThresholdedRelu",
    "BiasGelu",  # ONNX Runtime's fused activations (transformer optimizer output)
    "FastGelu",
    "QuickGelu",
}
_REDUCE = {"ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL2"}
_SEARCH_BUDGET = 20_000
_WHOLE = 2**31 - 1  # a Slice end at least this large runs to the end of its axis


def follow_axis(
    graph: gs.Graph,
    shapes: dict[str, tuple[int, ...]],
    start: dict[str, Place],
    sinks: frozenset[str] = frozenset(),
    size: int = 1,
) -> tuple[dict[str, int] | None, gs.Node | None]:
    """Follow an axis of ``size`` elements from ``start`` (tensor name -> place) through ``graph``.

    ``shapes`` holds every tensor's shape as the graph runs now; nodes named in
    ``sinks`` consume the axis without passing it on. Returns ({Reshape node
    name: output axis that holds it}, None), or (None, the node where every
    choice failed).
    """
    search = _Search(list(graph.toposort().nodes), shapes, sinks, size)
    choices = search.solve(0, dict(start), {})
    return choices, (None if choices is not None else search.failed_at)


def make_batch_dynamic(graph: gs.Graph, shapes: dict[str, tuple[int, ...]]) -> int:
    """Put -1 on the batch axis of every batch-carrying Reshape of ``graph`` (in place).

    ``shapes`` holds every tensor's shape at batch 1; every graph input carries
    the batch on axis 0. Returns the number of Reshape constants rewritten.
    """
    choices, failed = follow_axis(graph, shapes, {t.name: (0, 1) for t in graph.inputs})
    if choices is None:
        if failed is None:
            raise InternalError("follow_axis failed without naming the node where it failed")
        raise GraphStructureError(
            "cannot make this model's suffix accept a batch of masked copies: "
            f"the batch axis cannot be followed through {failed.op} node {failed.name!r}"
        )
    carriers = _batch_carriers(graph)
    for node in list(graph.nodes):
        if node.name in choices and node.op == "Resize":
            node.inputs[3] = _sizes_of_any_batch(graph, node)
        elif node.name in choices and node.op == "Concat":
            _expand_to_batch(graph, node, choices[node.name], carriers)
        elif node.name in choices:
            shape = np.array(shapes[node.outputs[0].name], dtype=np.int64)
            shape[choices[node.name]] = -1
            node.inputs[1] = gs.Constant(f"{node.name}_dynamic_batch_shape", shape)
    return len(choices)


def _batch_carriers(graph: gs.Graph) -> set[int]:
    """ids of the tensors computed from the graph's inputs."""
    seen: set[int] = {id(t) for t in graph.inputs}
    for node in graph.toposort().nodes:
        if any(id(t) in seen for t in node.inputs):
            seen.update(id(t) for t in node.outputs)
    return seen


def _expand_to_batch(graph: gs.Graph, concat: gs.Node, axis: int, carriers: set[int]) -> None:
    """Expand the Concat's inputs that carry no batch to the batch of one that does (in place)."""
    carrier = next(t for t in concat.inputs if id(t) in carriers)
    b = OpBuilder(graph, f"{concat.name}_dynamic_batch/")
    for k, tensor in enumerate(concat.inputs):
        if id(tensor) not in carriers:
            value = constant_value(tensor)
            rank = value.ndim if value is not None else len(tensor.shape)
            ones = [b.const("one", np.array([1], np.int64))] * rank
            ones[axis] = b.dim(carrier, axis)
            shape = b.op("Concat", ones, {"axis": 0}, dtype=np.int64)
            concat.inputs[k] = b.op("Expand", [tensor, shape], dtype=tensor.dtype)


def _sizes_of_any_batch(graph: gs.Graph, resize: gs.Node) -> gs.Variable:
    """A Resize's constant ``sizes`` with the batch read from its input at run time."""
    fixed = np.asarray(constant_value(resize.inputs[3]), np.int64)
    b = OpBuilder(graph, f"{resize.name}_dynamic_batch/")
    return b.op("Concat", [b.dim(resize.inputs[0], 0), b.const("rest", fixed[1:])], {"axis": 0}, dtype=np.int64)


class _Search:
    """Depth-first search over the Reshape choices, pruned by contradictions."""

    def __init__(self, nodes: list[gs.Node], shapes: dict[str, tuple[int, ...]], sinks: frozenset[str], size: int):
        self.nodes, self.shapes, self.sinks, self.size = nodes, shapes, sinks, size
        self.steps, self.failed_at = 0, nodes[0] if nodes else None
        self.furthest = -1

    def solve(self, i: int, places: dict[str, Place], rewrites: dict) -> dict | None:
        while i < len(self.nodes):
            self.steps += 1
            if self.steps > _SEARCH_BUDGET:
                return None
            node = self.nodes[i]
            options = [({}, {})] if node.name in self.sinks else _transfer(node, places, self.shapes, self.size)
            if not options:
                if i > self.furthest:
                    self.furthest, self.failed_at = i, self.nodes[i]
                return None
            if len(options) > 1:
                for update, rewrite in options:
                    found = self.solve(i + 1, {**places, **update}, {**rewrites, **rewrite})
                    if found is not None:
                        return found
                return None
            update, rewrite = options[0]
            places, rewrites = {**places, **update}, {**rewrites, **rewrite}
            i += 1
        return rewrites


def _transfer(node: gs.Node, places: dict[str, Place], shapes: dict, size: int) -> list[Option]:
    """Where the axis goes through ``node``: [] if contradicted, several for Reshape."""
    carried = [(k, t) for k, t in enumerate(node.inputs) if t.name in places]
    if not carried:
        return [({}, {})]
    if node.op == "Reshape":
        return _reshape(node, places, shapes, size)
    if node.op == "Concat" and size == 1:
        return _concat_batch(node, places, shapes)
    rule = _RULES.get(node.op)
    if rule is None and node.op in _ELEMENTWISE:
        rule = _elementwise
    if rule is None and node.op in _REDUCE:
        rule = _reduce
    if rule is None:
        return []
    return rule(node, places, shapes)


def _same_place(node: gs.Node, place: Place | None) -> list[Option]:
    if place is None:
        return []
    return [({out.name: place for out in node.outputs if out.name}, {})]


def _rank(shapes: dict, tensor: gs.Tensor) -> int:
    if isinstance(tensor, gs.Constant):
        return len(tensor.shape)
    return len(shapes[tensor.name])


def _dims(shapes: dict, tensor: gs.Tensor) -> tuple[int, ...]:
    value = constant_value(tensor)
    return tuple(value.shape) if value is not None else shapes[tensor.name]


def _broadcast_place(node, places, shapes, inputs) -> Place | None:
    """The output place of a broadcasting op, or None if an input contradicts it."""
    out_rank = len(shapes[node.outputs[0].name])
    found: set[Place] = set()
    for tensor in inputs:
        if tensor.name in places:
            axis, inner = places[tensor.name]
            found.add((axis + out_rank - _rank(shapes, tensor), inner))
    if len(found) != 1:
        return None
    place = found.pop()
    for tensor in inputs:
        if tensor.name not in places and tensor.name:
            dims = _dims(shapes, tensor)
            aligned = place[0] - (out_rank - len(dims))
            if 0 <= aligned < len(dims) and dims[aligned] != 1:
                return None
    return place


def _elementwise(node, places, shapes) -> list[Option]:
    return _same_place(node, _broadcast_place(node, places, shapes, node.inputs))


def _axis_attr(node, shapes, default: int) -> int:
    axis = node.attrs.get("axis", default)
    rank = len(shapes[node.inputs[0].name])
    return axis + rank if axis < 0 else axis


def _quantize(node, places, shapes) -> list[Option]:
    """(De)QuantizeLinear with one scale for the whole tensor is elementwise; per-axis scales stop the axis
    (they are for weights)."""
    scale = constant_value(node.inputs[1])
    if scale is None or scale.size != 1 or any(t.name in places for t in node.inputs[1:]):
        return []
    return _same_place(node, places[node.inputs[0].name])


def _image_op(node, places, shapes) -> list[Option]:
    """Conv, pooling, normalisation, pixel shuffles and Resize (dense heads) mix the channel and spatial
    axes: only the batch passes."""
    if [t.name for t in node.inputs if t.name in places] != [node.inputs[0].name]:
        return []
    place = places[node.inputs[0].name]
    if place[0] != 0:
        return []
    if node.op == "Resize" and "axes" not in node.attrs:
        scales, sizes = _optional_constant(node, 2), _optional_constant(node, 3)
        if sizes is not None and sizes.size:  # a fixed batch size in ``sizes``: rewritten like a Reshape's
            return [({out.name: place for out in node.outputs}, {node.name: 0})]
        if scales is None or not scales.size or float(scales[0]) != 1.0:
            return []
    return _same_place(node, place)


def _softmax(node, places, shapes) -> list[Option]:
    axis, _ = places[node.inputs[0].name]
    return _same_place(node, places[node.inputs[0].name] if axis < _axis_attr(node, shapes, -1) else None)


def _layernorm(node, places, shapes) -> list[Option]:
    if any(t.name in places for t in node.inputs[1:]):
        return []
    return _softmax(node, places, shapes)


def _reduce_axes(node, shapes) -> list[int] | None:
    rank = len(shapes[node.inputs[0].name])
    axes = node.attrs.get("axes")
    if axes is None and len(node.inputs) > 1:
        value = constant_value(node.inputs[1])
        axes = None if value is None else value.tolist()
    return None if axes is None else [a + rank if a < 0 else a for a in axes]


def _reduce(node, places, shapes) -> list[Option]:
    axis, inner = places[node.inputs[0].name]
    axes = _reduce_axes(node, shapes)
    if axes is None or axis in axes:
        return []
    if not node.attrs.get("keepdims", 1):
        axis -= sum(a < axis for a in axes)
    return _same_place(node, (axis, inner))


def _matmul(node, places, shapes) -> list[Option]:
    """MatMul, and MatMulInteger whose zero points do not carry the axis."""
    if any(t.name in places for t in node.inputs[2:]):
        return []
    a, b = node.inputs[:2]
    out_rank = len(shapes[node.outputs[0].name])
    found = set()
    for tensor, contracted, kept in ((a, -1, -2), (b, -2, -1)):
        if tensor.name not in places:
            continue
        axis, inner = places[tensor.name]
        rank = _rank(shapes, tensor)
        if axis == rank + contracted or rank < 2:
            return []
        shift = out_rank - rank
        found.add((out_rank + kept if axis == rank + kept else axis + shift, inner))
    if len(found) != 1:
        return []
    place = found.pop()
    if place[0] >= out_rank - 2:
        return _same_place(node, place)
    return _same_place(node, _broadcast_place(node, places, shapes, [a, b]))


def _gemm(node, places, shapes) -> list[Option]:
    a = node.inputs[0]
    if [t.name for t in node.inputs if t.name in places] != [a.name] or node.attrs.get("transA", 0):
        return []
    return _same_place(node, places[a.name] if places[a.name][0] == 0 else None)


def _transpose(node, places, shapes) -> list[Option]:
    axis, inner = places[node.inputs[0].name]
    perm = list(node.attrs.get("perm", reversed(range(len(shapes[node.inputs[0].name])))))
    return _same_place(node, (perm.index(axis), inner))


def _gather(node, places, shapes) -> list[Option]:
    data, indices = node.inputs
    if indices.name in places:
        return []
    axis, inner = places[data.name]
    g = _axis_attr(node, shapes, 0)
    if axis == g:
        return []
    return _same_place(node, (axis if axis < g else axis + _rank(shapes, indices) - 1, inner))


def _slice(node, places, shapes) -> list[Option]:
    """The axis passes a Slice that does not cut it: not sliced, or sliced over its whole range."""
    if any(t.name in places for t in node.inputs[1:]):
        return []
    place = places[node.inputs[0].name]
    rank = len(shapes[node.inputs[0].name])
    if len(node.inputs) > 1:  # opset >= 10: starts, ends, axes, steps are inputs
        starts, ends, axes, steps = (
            constant_value(node.inputs[k]) if k < len(node.inputs) else None for k in range(1, 5)
        )
    else:
        starts, ends, axes, steps = (node.attrs.get(key) for key in ("starts", "ends", "axes", "steps"))
    if starts is None or ends is None:
        return []
    size = shapes[node.inputs[0].name][place[0]]  # 1 for the batch axis: a fixed end of 1 may cut it
    for k, axis in enumerate(range(len(starts)) if axes is None else axes):
        step = 1 if steps is None else int(steps[k])
        end = int(ends[k])
        whole = int(starts[k]) == 0 and step == 1 and (end >= _WHOLE or (size > 1 and end >= size))
        if (int(axis) + rank) % rank == place[0] and not whole:
            return []
    return _same_place(node, place)


def _concat_or_split(node, places, shapes) -> list[Option]:
    axis = _axis_attr(node, shapes, 0)
    data = node.inputs if node.op == "Concat" else node.inputs[:1]
    if any(t.name not in places for t in data) or len({places[t.name] for t in data}) != 1:
        return []
    place = places[data[0].name]
    return _same_place(node, place if place[0] != axis else None)


def _concat_batch(node, places, shapes) -> list[Option]:
    """A Concat of batch-carrying tensors with batch-1 tensors that carry no batch (CaiT's class token,
    expanded to a batch baked in at export): those get expanded to the batch (make_batch_dynamic)."""
    carried = [t for t in node.inputs if t.name in places]
    if len(carried) == len(node.inputs):
        return _concat_or_split(node, places, shapes)
    place = places[carried[0].name]
    if len({places[t.name] for t in carried}) != 1 or place[0] == _axis_attr(node, shapes, 0) or place[1] != 1:
        return []
    if any(_dims(shapes, t)[place[0]] != 1 for t in node.inputs if t.name not in places):
        return []
    return [({out.name: place for out in node.outputs}, {node.name: place[0]})]


def _optional_constant(node: gs.Node, k: int) -> np.ndarray | None:
    """The value of the node's optional input ``k``, or None when absent or not constant."""
    return constant_value(node.inputs[k]) if len(node.inputs) > k and node.inputs[k].name else None


def _pad(node, places, shapes) -> list[Option]:
    """The axis passes a Pad that adds nothing to it (Swin pads its grid to whole windows)."""
    if any(t.name in places for t in node.inputs[1:]):
        return []
    pads = node.attrs.get("pads") if len(node.inputs) < 2 else constant_value(node.inputs[1])
    given = _optional_constant(node, 3)
    if pads is None:
        return []
    rank = len(shapes[node.inputs[0].name])
    axes = list(range(rank)) if given is None else [int(a) % rank for a in given]
    axis = places[node.inputs[0].name][0]
    if axis in axes and (int(pads[axes.index(axis)]) or int(pads[len(axes) + axes.index(axis)])):
        return []
    return _same_place(node, places[node.inputs[0].name])


def _squeeze(node, places, shapes) -> list[Option]:
    axes = _reduce_axes(node, shapes)
    axis, inner = places[node.inputs[0].name]
    if axes is None or axis in axes:
        return []
    return _same_place(node, (axis - sum(a < axis for a in axes), inner))


def _unsqueeze(node, places, shapes) -> list[Option]:
    out_rank = len(shapes[node.outputs[0].name])
    axes = _reduce_axes(node, shapes)
    if axes is None:
        return []
    axes = sorted(a + out_rank if a < 0 else a for a in axes)
    kept = [k for k in range(out_rank) if k not in axes]
    axis, inner = places[node.inputs[0].name]
    return _same_place(node, (kept[axis], inner))


def _expand(node, places, shapes) -> list[Option]:
    if node.inputs[1].name in places:
        return []
    return _same_place(node, _broadcast_place(node, places, shapes, node.inputs[:1]))


def _flatten(node, places, shapes) -> list[Option]:
    dims = shapes[node.inputs[0].name]
    k = _axis_attr(node, shapes, 1)
    axis, inner = places[node.inputs[0].name]
    if axis < k:
        return _same_place(node, (0, inner * math.prod(dims[axis + 1 : k])))
    return _same_place(node, (1, inner * math.prod(dims[axis + 1 :])))


def _reshape(node, places, shapes, size: int) -> list[Option]:
    data, target = node.inputs
    if target.name in places or constant_value(target) is None:
        return []
    axis, inner = places[data.name]
    stride = inner * math.prod(shapes[data.name][axis + 1 :])
    out = shapes[node.outputs[0].name]
    options = []
    for j in range(len(out)):
        below = math.prod(out[j + 1 :])
        if stride % below or out[j] % (stride // below * size):
            continue
        options.append(({node.outputs[0].name: (j, stride // below)}, {node.name: j}))
    options.sort(key=lambda o: (out[next(iter(o[0].values()))[0]] != 1,))
    return options


_RULES: dict[str, Callable[..., list[Option]]] = {
    "Softmax": _softmax,
    "LogSoftmax": _softmax,
    "LayerNormalization": _layernorm,
    "SimplifiedLayerNormalization": _layernorm,
    "MatMul": _matmul,
    "MatMulInteger": _matmul,
    "Gemm": _gemm,
    "Transpose": _transpose,
    "Gather": _gather,
    "Slice": _slice,
    "Concat": _concat_or_split,
    "Split": _concat_or_split,
    "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
    "Expand": _expand,
    "Flatten": _flatten,
    "Pad": _pad,
    "Conv": _image_op,
    "ConvTranspose": _image_op,
    "MaxPool": _image_op,
    "AveragePool": _image_op,
    "GlobalAveragePool": _image_op,
    "BatchNormalization": _image_op,
    "InstanceNormalization": _image_op,
    "DepthToSpace": _image_op,
    "SpaceToDepth": _image_op,
    "GlobalMaxPool": _image_op,
    "Resize": _image_op,
    "QuantizeLinear": _quantize,
    "DequantizeLinear": _quantize,
}
