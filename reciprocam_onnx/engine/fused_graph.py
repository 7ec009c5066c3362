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

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from ..contract import FUSED_OPTIONS_KEY, FUSED_OUTPUTS, FUSED_PRESET_KEY, FUSED_SPLIT_KEY, SplitInfo, SplitModel
from ..copies.build import CopyTables, copy_inputs
from ..copies.masks import cell_weights
from ..copies.slots import EMPTY, Slots, copy_slots
from ..errors import ModelLoadError, OptionError
from ..graph.builder import OpBuilder
from ..graph.export import export_like
from ..graph.model import ModelSource, load_model, metadata
from ..options import PRECISIONS, PRESETS, SCORES, WINDOWS, Options, preset_taps, resolve
from ..split.pipeline import resolve_block, split_blocks, split_model
from ..split.shared import tapped_tensors
from .base import check_class_scores
from .explainer import bytes_per_copy
from .suffix import suffix_for_residual

log = logging.getLogger(__name__)

IMAGE_LOOP = "reciprocam/images/"  # names the nodes that run a static-batch model once per image
# the default chunk keeps a Loop step's activations of one image within this (ViT-S/16 at 384 px: 8 copies);
# on the CPU, chunked copies also run faster than all at once (docs/benchmarks.md)
FUSED_BUDGET_BYTES = 256 << 20


def fuse(
    source: ModelSource, options: Options | None = None, *, preset: str | None = None, **changes: Any
) -> onnx.ModelProto:
    """The model plus its ViT-ReciproCAM branch: outputs logits, saliency, saliency_u8. With ``preset``
    (options.PRESETS, e.g. "reciprocam+"), every tap of the preset runs in the graph and ``saliency`` is their
    combined map (engine/taps.py's arithmetic, in float32). ``chunk`` defaults to what fits
    FUSED_BUDGET_BYTES of activations per image."""
    asked = resolve(options, **changes)
    if asked.max_batch is not None or asked.precision != PRECISIONS[0]:
        raise OptionError(
            "a fused graph runs its copies in float32 inside one graph: max_batch and precision "
            "do not apply (chunk bounds its memory)"
        )
    model = load_model(source)
    if FUSED_OPTIONS_KEY in metadata(model):
        raise OptionError("this model is already a fused graph (it has saliency outputs); fuse the model itself")
    explicit = set(changes) | set(asked.changed() if options is not None else {})
    taps = (asked,) if preset is None else preset_taps(preset, asked, explicit)
    cut: dict[str, Any] = {"optimize": asked.optimize, "input_size": asked.input_size, "cache": asked.cache}
    if len(taps) == 1:
        cuts: tuple[SplitModel, ...] = (split_model(source, taps[0].block, **cut),)
    else:
        cuts = split_blocks(source, [tap.block for tap in taps], **cut).cuts
    check_class_scores(cuts[0].info)
    branches = [_branch(cuts, tap) for tap in taps]
    chosen = PRESETS[preset] if preset is not None and PRESETS[preset].combines else None
    weights, gamma = (chosen.tap_weights(), chosen.gamma) if chosen is not None else ((1.0,), 1.0)
    graph = _core(model, branches, weights, gamma)
    info = branches[0].split.info
    if info.static_batch is not None:
        graph = _loop_over_images(graph, info)
    fused = export_like(graph.cleanup().toposort(), model)
    values = {FUSED_OPTIONS_KEY: branches[0].options.fused_json(), FUSED_SPLIT_KEY: info.to_json()}
    if chosen is not None:
        taps_json = [json.loads(branch.options.fused_json()) for branch in branches]
        values[FUSED_PRESET_KEY] = json.dumps(
            {"name": preset, "taps": taps_json, "weights": list(weights), "gamma": gamma}
        )
    _set_metadata(fused, values)
    log.info("fused graph: %d nodes, outputs %s", len(fused.graph.node), ", ".join(FUSED_OUTPUTS))
    return fused


@dataclass(frozen=True)
class _Branch:
    """One tap of a fused graph: its cut (suffix rewritten for its residual option), baked options, copies."""

    split: SplitModel
    options: Options
    slots: Slots
    slot_residual: bool


def _branch(cuts: Sequence[SplitModel], options: Options) -> _Branch:
    """The tap ``options`` on its block's cut: the suffix for its residual option, its copies' slot
    tables, and the options to bake (its block as an index, its chunk resolved)."""
    blocks = cuts[0].info.blocks
    split = next(cut for cut in cuts if cut.info.block == resolve_block(options.block, blocks))
    info = split.info
    if info.copies_per_run is not None:
        if options.chunk is not None and options.chunk > info.copies_per_run:
            raise OptionError(f"this model quantizes at run time: it takes chunk={info.copies_per_run} at most")
        options = options.updated(chunk=info.copies_per_run)
    suffix, outcomes, slot_residual = suffix_for_residual(split.suffix, info, options.residual)
    info = replace(info, rewrites=info.rewrites + outcomes)
    weights = cell_weights(info.grid, info.prefix_tokens, options.kernel, options.cls_token, options.window)
    slots = copy_slots(weights, info.prefix_tokens, info.slots)
    chunk = options.chunk if options.chunk is not None else default_chunk(info, len(slots))
    baked = options.updated(block=info.block, chunk=chunk)
    return _Branch(SplitModel(split.prefix, suffix, info), baked, slots, slot_residual)


def default_chunk(info: SplitInfo, copies: int) -> int | None:
    """Copies per Loop step within FUSED_BUDGET_BYTES of activations per image (None: all at once fit), in as
    few steps as that allows, evened out so that the last step is not mostly padding."""
    most = max(1, FUSED_BUDGET_BYTES // bytes_per_copy(info))
    if most >= copies:
        return None
    steps = -(-copies // most)
    return -(-copies // steps)


def fused_options(model: onnx.ModelProto) -> tuple[Options, SplitInfo] | None:
    """(options, split info) recorded in a fused graph's metadata, or None for other models."""
    props = metadata(model)
    if FUSED_OPTIONS_KEY not in props:
        return None
    try:
        return Options.from_fused_json(props[FUSED_OPTIONS_KEY]), SplitInfo.from_json(props[FUSED_SPLIT_KEY])
    except (ModelLoadError, ValueError, TypeError, KeyError) as exc:
        raise ModelLoadError(f"the fused graph's metadata ({FUSED_SPLIT_KEY}) is not readable: {exc}") from None


def fused_preset(model: onnx.ModelProto) -> str | None:
    """The preset a fused graph combines the maps of (FUSED_PRESET_KEY), or None for one tap."""
    text = metadata(model).get(FUSED_PRESET_KEY)
    if text is None:
        return None
    try:
        name = json.loads(text)["name"]
    except (ValueError, TypeError, KeyError) as exc:
        raise ModelLoadError(f"the fused graph's metadata ({FUSED_PRESET_KEY}) is not readable: {exc}") from None
    if name not in PRESETS:
        raise ModelLoadError(f"the fused graph combines preset {name!r}, which this version does not know")
    return name


def fused_score(model: onnx.ModelProto) -> str:
    """The scores a fused graph's logits stand for: its option score, or softmax for a preset's (as
    MultiTapExplainer's scores are)."""
    found = fused_options(model)
    if found is None:
        raise OptionError("not a fused graph: build one with `reciprocam fuse`")
    return SCORES[0] if fused_preset(model) is not None else found[0].score


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


def _core(model: onnx.ModelProto, branches: Sequence[_Branch], weights: Sequence[float], gamma: float) -> gs.Graph:
    """The model itself (its logits, bit for bit) + for each branch, masked copies of its tapped tensors
    through its suffix, scores and per-class min-max maps; several branches' maps weighted, summed, min-max
    normalised again and raised to ``gamma`` (engine/taps.py's combine_maps), for the source model's batch."""
    graph = gs.import_onnx(model)
    logits = graph.outputs[0]
    maps = []
    for k, branch in enumerate(branches):
        tag = "reciprocam/" if len(branches) == 1 else f"reciprocam/tap_{k}/"
        maps.append(_branch_maps(graph, branch, tag))
    info = branches[0].split.info
    b = OpBuilder(graph, "reciprocam/")
    saliency = maps[0]
    if len(maps) > 1:
        scaled = [b.op("Mul", [m, b.const("weight", np.array(w, np.float32))]) for m, w in zip(maps, weights)]
        summed = b.reshape(b.op("Sum", scaled), [0, info.classes, info.cells])
        saliency = b.reshape(_minmax(b, summed), [-1, info.classes, *info.grid])
        if gamma != 1.0:
            saliency = b.op("Pow", [saliency, b.const("gamma", np.array(gamma, np.float32))])
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


def _branch_maps(graph: gs.Graph, branch: _Branch, tag: str) -> gs.Variable:
    """One tap's per-class min-max maps float32 [B, C, h, w], its nodes named under ``tag``."""
    info, options = branch.split.info, branch.options
    c = OpBuilder(graph, tag + "copies/", info.dtype)  # the copies compute in the model's dtype
    copies = _Copies(branch.split, tapped_tensors(c, branch.split), options.residual, branch.slot_residual)
    tables = copies.tables(branch.slots)
    if options.chunk is None:
        cell_logits = copies.logits(c, {key: c.const(key, value) for key, value in tables.items()})
    else:
        cell_logits = _chunked(c, copies, tables, options.chunk)
    b = OpBuilder(graph, tag)  # scores and maps in float32
    cells = b.cast(b.reshape(cell_logits, [-1, len(branch.slots), info.classes]), "float32")
    scores = _softmax_for_maps(b, cells) if options.score == SCORES[0] else cells
    if options.window == WINDOWS[1]:  # a removed window's evidence is a lower score
        scores = b.op("Neg", [scores])
    return _saliency(b, scores, info)


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

    def logits(self, b: OpBuilder, tables: dict[str, gs.Tensor], outer: gs.Graph | None = None) -> gs.Variable:
        """Suffix logits [B * n, C] for the n copies described by ``tables`` of every image; ``outer``: the
        graph whose weights ``b.graph`` (a Loop body) reads."""
        built = copy_inputs(
            b, self.tapped, self.widths, CopyTables(**tables), self.residual, slot_residual=self.slot_residual
        )
        return _inline(b, self.suffix, built, outer)


def _inline(
    b: OpBuilder, suffix: onnx.ModelProto, inputs: dict[str, gs.Tensor], outer: gs.Graph | None = None
) -> gs.Variable:
    """Copy the suffix's nodes into ``b.graph`` (renamed), reading ``inputs``; return its output.
    Weights the graph, or the ``outer`` graph of a Loop body, already holds under the same name are shared,
    not copied (a body reads the outer one's by name)."""
    sub = gs.import_onnx(suffix)
    replace = {id(t): inputs[t.name] for t in sub.inputs}
    held = (outer or b.graph).tensors()
    for name, tensor in sub.tensors().items():
        found = held.get(name)
        if isinstance(tensor, gs.Constant) and isinstance(found, gs.Constant):
            replace[id(tensor)] = found if outer is None else gs.Variable(name, found.dtype, found.shape)
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
    scores = inner.reshape(copies.logits(inner, sliced, b.graph), [-1, chunk, classes])
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
    per_class = b.op("Transpose", [cell_scores], {"perm": [0, 2, 1]}, dtype=cell_scores.dtype)
    return b.reshape(_minmax(b, per_class), [-1, info.classes, *info.grid])


def _minmax(b: OpBuilder, values: gs.Variable) -> gs.Variable:
    """[B, C, cells] -> (v - min) / (max - min) over the cells; 0 where all cells are equal."""
    dtype = values.dtype
    low = b.reduce("ReduceMin", values, [2])
    span = b.op("Sub", [b.reduce("ReduceMax", values, [2]), low], dtype=dtype)
    positive = b.op("Greater", [span, b.const("zero", np.array(0, dtype))], dtype=np.bool_)
    safe = b.op("Where", [positive, span, b.const("one", np.array(1, dtype))], dtype=dtype)
    scaled = b.op("Div", [b.op("Sub", [values, low], dtype=dtype), safe], dtype=dtype)
    return b.op("Where", [positive, scaled, b.const("zeros", np.array(0, dtype))], dtype=dtype)


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
