"""One ONNX graph that returns the prediction and every class's saliency map.

    image ─► the model itself ─────────────────────────────────────► logits [B, C]
                 │ R, F (and F's projections) at the target block
                 ▼
    copies of F (copies/build.py; constant slot tables [h*w, U])
    R broadcast (or masked, as slots where it can) ─► suffix ─► scores [B, h*w, C] ─► min-max per image and class
                                        ─► saliency [B, C, h, w], saliency_u8

The prefix runs once (it is the model's own first part) and the logits are
the model's own. The suffix is the same (optimised) one the Explainer runs,
sharing the model's weights. With ``chunk`` the copies go through it
``chunk`` at a time inside an ONNX ``Loop``, bounding peak memory. A
static-batch source model is wrapped in a ``Loop`` over the images, so the
fused graph takes any batch.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import numpy_helper

from ..contract import FUSED_OPTIONS_KEY, FUSED_OUTPUTS, FUSED_SPLIT_KEY, NORMED, RESIDUAL, SplitInfo, SplitModel
from ..copies.build import CopyTables, copy_inputs
from ..copies.masks import cell_weights
from ..copies.slots import EMPTY, Slots, copy_slots
from ..errors import ModelLoadError, OptionError
from ..graph.builder import OpBuilder
from ..graph.export import export_like
from ..graph.model import ModelSource, load_model, metadata
from ..options import PRECISIONS, SCORES, WINDOWS, Options, resolve
from ..split.pipeline import split_model
from .base import check_class_scores
from .suffix import suffix_for_residual

log = logging.getLogger(__name__)

IMAGE_LOOP = "reciprocam/images/"  # names the nodes that run a static-batch model once per image


def fuse(source: ModelSource, options: Options | None = None, **changes: Any) -> onnx.ModelProto:
    """The model plus its ViT-ReciproCAM branch: outputs logits, saliency, saliency_u8."""
    options = resolve(options, **changes)
    if options.max_batch is not None or options.precision != PRECISIONS[0]:
        raise OptionError(
            "a fused graph runs its copies in float32 inside one graph: max_batch and precision "
            "do not apply (chunk bounds its memory)"
        )
    model = load_model(source)
    if FUSED_OPTIONS_KEY in metadata(model):
        raise OptionError("this model is already a fused graph (it has saliency outputs); fuse the model itself")
    split = split_model(model, options.block, optimize=options.optimize, input_size=options.input_size)
    info = split.info
    check_class_scores(info)
    if info.copies_per_run is not None:
        if options.chunk is not None and options.chunk > info.copies_per_run:
            raise OptionError(f"this model quantizes at run time: it takes chunk={info.copies_per_run} at most")
        options = options.updated(chunk=info.copies_per_run)
    suffix, outcomes, slot_residual = suffix_for_residual(split.suffix, info, options.residual)
    info = replace(info, rewrites=info.rewrites + outcomes)
    split = SplitModel(split.prefix, suffix, info)
    weights = cell_weights(info.grid, info.prefix_tokens, options.kernel, options.cls_token, options.window)
    slots = copy_slots(weights, info.prefix_tokens, info.slots)
    graph = _core(model, split, slots, options, slot_residual)
    if info.static_batch is not None:
        graph = _loop_over_images(graph, info)
    fused = export_like(graph.cleanup().toposort(), model)
    baked = options.updated(block=info.block)
    _set_metadata(fused, {FUSED_OPTIONS_KEY: baked.fused_json(), FUSED_SPLIT_KEY: info.to_json()})
    log.info("fused graph: %d nodes, outputs %s", len(fused.graph.node), ", ".join(FUSED_OUTPUTS))
    return fused


def fused_options(model: onnx.ModelProto) -> tuple[Options, SplitInfo] | None:
    """(options, split info) recorded in a fused graph's metadata, or None for other models."""
    props = metadata(model)
    if FUSED_OPTIONS_KEY not in props:
        return None
    try:
        return Options.from_fused_json(props[FUSED_OPTIONS_KEY]), SplitInfo.from_json(props[FUSED_SPLIT_KEY])
    except (ModelLoadError, ValueError, TypeError, KeyError) as exc:
        raise ModelLoadError(f"the fused graph's metadata ({FUSED_SPLIT_KEY}) is not readable: {exc}") from None


def model_of(fused: onnx.ModelProto) -> onnx.ModelProto:
    """The model a fused graph was built from: the graph without its explanation branch, returning
    the logits alone (what eval scores with, at the model's own cost)."""
    graph = gs.import_onnx(fused)
    graph.outputs = graph.outputs[:1]
    for node in graph.nodes:
        if node.op == "Loop" and node.name.startswith(IMAGE_LOOP):  # a static-batch model's loop over images
            body = node.attrs["body"]
            body.outputs = body.outputs[:2]  # the loop's condition and the logits
            while len(node.outputs) > 1:
                del node.outputs[-1]
            body.cleanup()
    return export_like(graph.cleanup().toposort(), fused)


def _core(model: onnx.ModelProto, split: SplitModel, slots: Slots, options: Options, slot_residual: bool) -> gs.Graph:
    """The model itself (its logits, bit for bit) + masked copies of its tapped tensors
    through the suffix + scores and maps, for the source model's batch. ``slot_residual``: the suffix
    takes the masked residual as slots."""
    info = split.info
    graph = gs.import_onnx(model)
    logits = graph.outputs[0]
    c = OpBuilder(graph, "reciprocam/copies/", info.dtype)  # the copies compute in the model's dtype
    copies = _Copies(split, _tapped(c, split), options.residual, slot_residual)
    tables = copies.tables(slots)
    if options.chunk is None:
        cell_logits = copies.logits(c, {key: c.const(key, value) for key, value in tables.items()})
    else:
        cell_logits = _chunked(c, copies, tables, options.chunk)
    b = OpBuilder(graph, "reciprocam/")  # scores and maps in float32
    cells = b.cast(b.reshape(cell_logits, [-1, len(slots), info.classes]), "float32")
    scores = _softmax_for_maps(b, cells) if options.score == SCORES[0] else cells
    if options.window == WINDOWS[1]:  # a removed window's evidence is a lower score
        scores = b.op("Neg", [scores])
    saliency = _saliency(b, scores, info)
    saliency_u8 = b.op(
        "Cast",
        [b.op("Round", [b.op("Mul", [saliency, b.const("u8", np.array(255, np.float32))])])],
        {"to": onnx.TensorProto.UINT8},
        dtype=np.uint8,
    )
    shapes = ([info.classes], [info.classes, *info.grid], [info.classes, *info.grid])
    for tensor, name, shape in zip((logits, saliency, saliency_u8), FUSED_OUTPUTS, shapes):
        tensor.name, tensor.shape = name, ["batch", *shape]
    graph.outputs = [logits, saliency, saliency_u8]
    return graph


def _tapped(b: OpBuilder, split: SplitModel) -> dict[str, gs.Tensor]:
    """The suffix's inputs computed in the model's graph: R, F (as [B, T, D] tokens, also where the model
    lays them out as a grid), and F's hoisted projections."""
    tensors, info = b.graph.tensors(), split.info
    tapped = {
        RESIDUAL: b.reshape(tensors[info.residual_tensor], [0, -1, info.width]),
        NORMED: b.reshape(tensors[info.normed_tensor], [0, -1, info.width]),
    }
    producers = {node.output[0]: node for node in split.prefix.graph.node}
    weights = {init.name: init for init in split.prefix.graph.initializer}
    for name in info.masked_inputs:
        if name not in tapped:  # normed_projected_k = MatMul(F, W_k), as the prefix computes it
            weight = numpy_helper.to_array(weights[producers[name].input[1]])
            tapped[name] = b.op("MatMul", [tapped[NORMED], b.const("projection", weight)])
    return {name: tapped[name] for name in (RESIDUAL, *info.masked_inputs)}


class _Copies:
    """Runs the split's suffix on masked copies (copies/build.py) of the tapped tensors."""

    def __init__(self, split: SplitModel, tapped: dict[str, gs.Tensor], residual: str, slot_residual: bool):
        self.suffix, self.info, self.tapped, self.residual = split.suffix, split.info, tapped, residual
        self.slot_residual = slot_residual
        self.widths = {
            i.name: i.type.tensor_type.shape.dim[2].dim_value for i in split.suffix.graph.input if i.name in tapped
        }

    def tables(self, slots: Slots) -> dict[str, np.ndarray]:
        """The per-copy slot tables the copies are built from."""
        tables = {"token": slots.token, "weight": slots.weight}
        if self.info.slots:
            tables.update(log_count=slots.log_count, token_slot=slots.token_slot)
        return tables

    def logits(self, b: OpBuilder, tables: dict[str, gs.Tensor]) -> gs.Variable:
        """Suffix logits [B * n, C] for the n copies described by ``tables`` of every image."""
        built = copy_inputs(
            b, self.tapped, self.widths, CopyTables(**tables), self.residual, slot_residual=self.slot_residual
        )
        return _inline(b, self.suffix, built)


def _inline(b: OpBuilder, suffix: onnx.ModelProto, inputs: dict[str, gs.Tensor]) -> gs.Variable:
    """Copy the suffix's nodes into ``b.graph`` (renamed), reading ``inputs``; return its output.
    Weights the graph already holds under the same name are shared, not copied."""
    sub = gs.import_onnx(suffix)
    replace = {id(t): inputs[t.name] for t in sub.inputs}
    held = b.graph.tensors()
    for name, tensor in sub.tensors().items():
        if isinstance(tensor, gs.Constant) and isinstance(held.get(name), gs.Constant):
            replace[id(tensor)] = held[name]
    for tensor in sub.tensors().values():
        if tensor.name and id(tensor) not in replace:
            tensor.name = b.prefix + "suffix/" + tensor.name
    for node in sub.nodes:
        node.name = b.prefix + "suffix/" + node.name
        node.inputs = [replace.get(id(t), t) for t in node.inputs]
    b.graph.nodes.extend(sub.nodes)
    return sub.outputs[0]


def _chunked(b: OpBuilder, copies: _Copies, tables: dict[str, np.ndarray], chunk: int) -> gs.Variable:
    """As copies.logits, ``chunk`` copies per iteration of an ONNX Loop: [B * copies, C]."""
    count = len(tables["token"])
    steps = -(-count // chunk)
    body = gs.Graph(opset=b.opset)
    inner = OpBuilder(body, b.prefix + "chunk/", b.floats)
    step = gs.Variable(inner.name("step"), np.int64, [])
    keep = gs.Variable(inner.name("cond_in"), np.bool_, [])
    first = inner.reshape(inner.op("Mul", [step, inner.const("chunk", np.array(chunk, np.int64))], dtype=np.int64), [1])
    last = inner.op("Add", [first, inner.const("n", np.array([chunk]))], dtype=np.int64)
    sliced = {}
    for key, table in tables.items():  # padded to whole chunks; the padding's scores are dropped
        padded = np.zeros((steps * chunk, table.shape[1]), table.dtype)
        padded[:count] = table
        if key == "log_count":
            padded[count:] = EMPTY
        sliced[key] = inner.op(
            "Slice", [inner.const(key, padded), first, last, inner.const("axis", np.array([0]))], dtype=table.dtype
        )
        sliced[key].shape = [chunk, table.shape[1]]
    classes = copies.info.classes
    scores = inner.reshape(copies.logits(inner, sliced), [-1, chunk, classes])
    scores.shape = ["batch", chunk, classes]
    cond_out = inner.op("Identity", [keep], dtype=np.bool_)
    cond_out.shape = []
    body.inputs, body.outputs = [step, keep], [cond_out, scores]
    stacked = b.op(
        "Loop", [b.const("steps", np.array(steps, np.int64)), b.const("true", np.array(True))], {"body": body}
    )  # [steps, B, chunk, C]
    ordered = b.op("Transpose", [stacked], {"perm": [1, 0, 2, 3]})
    flat = b.reshape(ordered, [0, steps * chunk, classes])
    kept = b.op(
        "Slice", [flat, b.const("s", np.array([0])), b.const("e", np.array([count])), b.const("ax", np.array([1]))]
    )
    return b.reshape(kept, [-1, classes])


def _softmax_for_maps(b: OpBuilder, logits: gs.Variable) -> gs.Variable:
    """[B, cells, C] float32 logits -> float32 values whose per-class min-max over the cells is that of
    the softmax scores, in float32 only (WebGPU, TensorRT and many NPUs have no float64).

    A confident model's top score sits within float32 rounding of 1.0, where the cells' differences
    would vanish. So a class that scores above 0.5 on average over the cells is represented by
    ``-q = p - 1``, where ``q`` (the other classes' share) is summed from small terms without
    cancellation; other classes by ``p`` itself. Both forms have float32's relative precision, below
    the logits' own rounding.
    """
    top = b.reduce("ReduceMax", logits, [-1])
    shifted = b.op("Sub", [logits, top])
    exp = b.op("Exp", [shifted])
    total = b.reduce("ReduceSum", exp, [-1])
    zero, one = b.const("zero", np.array(0, np.float32)), b.const("one", np.array(1, np.float32))
    is_top = b.op("Equal", [shifted, zero], dtype=np.bool_)
    below_top = b.reduce("ReduceSum", b.op("Where", [is_top, zero, exp]), [-1])  # every class but the top(s)
    tied = b.op("Sub", [b.reduce("ReduceSum", b.cast(is_top), [-1]), one])  # other classes at the top: 1 each
    others = b.op(  # sum of exp over the classes other than each class
        "Where", [is_top, b.op("Add", [below_top, tied]), b.op("Sub", [total, exp])]
    )
    p = b.op("Div", [exp, total])
    q = b.op("Div", [others, total])
    half = b.const("half", np.array(0.5, np.float32))
    mostly = b.op("Greater", [b.reduce("ReduceMean", p, [1]), half], dtype=np.bool_)
    return b.op("Where", [mostly, b.op("Neg", [q]), p])


def _saliency(b: OpBuilder, cell_scores: gs.Variable, info: SplitInfo) -> gs.Variable:
    """[B, cells, C] float32 -> per image and class min-max over the cells -> float32 [B, C, h, w]."""
    dtype = cell_scores.dtype
    per_class = b.op("Transpose", [cell_scores], {"perm": [0, 2, 1]}, dtype=dtype)
    low = b.reduce("ReduceMin", per_class, [2])
    span = b.op("Sub", [b.reduce("ReduceMax", per_class, [2]), low], dtype=dtype)
    positive = b.op("Greater", [span, b.const("zero", np.array(0, dtype))], dtype=np.bool_)
    safe = b.op("Where", [positive, span, b.const("one", np.array(1, dtype))], dtype=dtype)
    scaled = b.op("Div", [b.op("Sub", [per_class, low], dtype=dtype), safe], dtype=dtype)
    flat = b.op("Where", [positive, scaled, b.const("zeros", np.array(0, dtype))], dtype=dtype)
    return b.reshape(flat, [-1, info.classes, *info.grid])


def _loop_over_images(core: gs.Graph, info: SplitInfo) -> gs.Graph:
    """Run a batch-1 core once per image of a dynamic batch (static-batch source models)."""
    outer = gs.Graph(opset=core.opset)
    b = OpBuilder(outer, IMAGE_LOOP)
    image = gs.Variable(info.input_name, np.dtype(info.input_dtype), ["batch", *info.image.shape(1)[1:]])
    core_input = core.inputs[0]
    step = gs.Variable(b.name("step"), np.int64, [])
    keep = gs.Variable(b.name("cond_in"), np.bool_, [])
    inner = OpBuilder(core, "reciprocam/images/body/")
    start = inner.reshape(step, [1])
    end = inner.op("Add", [start, inner.const("one", np.array([1]))], dtype=np.int64)
    inner.op("Slice", [image, start, end, inner.const("axis", np.array([0]))], out=core_input)
    core_input.name = b.name("image")
    cond_out = inner.op("Identity", [keep], dtype=np.bool_)
    cond_out.shape = []
    core.inputs = [step, keep]
    body_outputs = list(core.outputs)
    core.outputs = [cond_out, *body_outputs]
    count = b.op("Gather", [b.op("Shape", [image], dtype=np.int64), b.const("zero", np.array(0))], dtype=np.int64)
    names = [t.name for t in body_outputs]
    for tensor in body_outputs:
        tensor.name = b.name(tensor.name)
    stacked = [gs.Variable(b.name(n + "_stacked"), dtype=t.dtype) for n, t in zip(names, body_outputs)]
    outer.nodes.append(
        gs.Node("Loop", b.name("Loop"), {"body": core}, [count, b.const("true", np.array(True))], stacked)
    )
    outputs = []
    for name, tensor, body_out in zip(names, stacked, body_outputs):
        out = gs.Variable(name, tensor.dtype, ["batch", *body_out.shape[1:]])
        b.squeeze(tensor, [1], out)
        outputs.append(out)
    outer.inputs, outer.outputs = [image], outputs
    return outer


def _set_metadata(model: onnx.ModelProto, values: dict[str, str]) -> None:
    kept = [p for p in model.metadata_props if p.key not in values]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in values.items():
        model.metadata_props.add(key=key, value=value)
