"""Split a ViT graph at a target block into a prefix and a suffix graph.

    image ──prefix──► residual R = x_b, normed F = LN1_b(x_b)
    (R, F) ──suffix──► logits

The suffix accepts any batch of ``F`` with ``R`` of batch 1 (broadcast) or of
the same batch. Static-batch exports are made batch-dynamic (see batch.py).
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from ..errors import BlockIndexError, GraphStructureError, ModelLoadError
from ..fileio import write_bytes_atomic, write_text_atomic
from ..model_info import ModelInfo, read_model_info
from ..runtime import release_memory
from .axes import make_batch_dynamic
from .distinct import share_slots
from .hoist import hoist_projections
from .rows import keep_head_rows
from .facts import ModelFacts, analyse
from .model import ModelSource, load_model
from .probe import tensor_shapes

log = logging.getLogger(__name__)

RESIDUAL = "residual"
NORMED = "normed"
PREFIX_FILE, SUFFIX_FILE, INFO_FILE = "prefix.onnx", "suffix.onnx", "split.json"
SPLIT_FORMAT = "reciprocam-split/1"


@dataclass(frozen=True)
class SplitInfo:
    """Everything the engine needs besides the two graphs; saved as split.json."""

    block: int
    blocks: int
    input_name: str
    input_shape: tuple[int, int, int]
    static_batch: int | None
    output_name: str
    tokens: int
    prefix_tokens: int
    grid: tuple[int, int]
    width: int
    classes: int
    residual_tensor: str
    normed_tensor: str
    masked_inputs: tuple[str, ...] = (NORMED,)
    optimized: bool = False
    slots: bool = False  # masked inputs are a copy's distinct rows (graph/distinct.py)
    model: ModelInfo = ModelInfo()

    @property
    def cells(self) -> int:
        return self.grid[0] * self.grid[1]

    def to_json(self) -> str:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["model"] = self.model.to_dict()
        return json.dumps({"format": SPLIT_FORMAT, **data}, indent=2)

    @classmethod
    def from_json(cls, text: str) -> "SplitInfo":
        data = json.loads(text)
        if data.pop("format", None) != SPLIT_FORMAT:
            raise ModelLoadError(f"split.json is not in format {SPLIT_FORMAT!r}")
        data["model"] = ModelInfo.from_dict(data.get("model") or {})
        for key in ("input_shape", "grid", "masked_inputs"):
            data[key] = tuple(data[key])
        return cls(**data)


@dataclass(frozen=True)
class SplitModel:
    """The two halves of a model cut at a block, and the facts about it."""

    prefix: onnx.ModelProto
    suffix: onnx.ModelProto
    info: SplitInfo


def resolve_block(block: int, count: int) -> int:
    """Turn a Python-style block index into 0..count-1, or raise BlockIndexError."""
    if not -count <= block < count:
        raise BlockIndexError(f"block {block} is out of range: the model has {count} blocks "
                              f"(valid: {-count}..{count - 1})")
    return block % count


def split_model(source: ModelSource, block: int = -2, verify: bool = True, optimize: bool = True) -> SplitModel:
    """Cut ``source`` at ``block``; with ``verify``, check suffix(prefix(x)) == model(x).

    ``optimize`` rewrites the suffix to compute only what the logits need
    (rows.py), projects F once per image (hoist.py) and runs the target
    block's attention on each copy's distinct rows (distinct.py); the results
    are the same, the work is less.
    """
    from .verify import verify_split

    model = load_model(source)
    path = None if isinstance(source, onnx.ModelProto) else Path(source)
    facts = analyse(model)
    index = resolve_block(block, len(facts.blocks))
    target = facts.blocks[index]
    tokens = (facts.tokens, facts.width)
    tap = {target.residual: RESIDUAL, target.normed: NORMED}
    prefix = _cut(model, {facts.input.name: facts.input.name}, tap, tokens)
    suffix = _suffix(model, facts, tap, index, optimize)
    masked = [NORMED]
    slots = False
    if optimize:
        prefix, suffix, masked = hoist_projections(prefix, suffix, NORMED, export_like)
        compact = share_slots(suffix, tuple(masked), target.attention_output, facts.tokens, export_like)
        suffix, slots = (suffix, False) if compact is None else (compact, True)
    spec = facts.input
    info = SplitInfo(index, len(facts.blocks), spec.name, (spec.channels, *spec.size), spec.static_batch,
                     facts.output, facts.tokens, facts.prefix_tokens, facts.grid, facts.width,
                     facts.classes, target.residual, target.normed, tuple(masked), optimize, slots,
                     read_model_info(model, path))
    split = SplitModel(prefix, suffix, info)
    log.info("split at block %d of %d", index, len(facts.blocks))
    if verify:
        original = model if path is None else path
        del model  # verification reads the file again: no second copy of the weights in memory
        release_memory()
        verify_split(original, split)
    release_memory()
    return split


def save_split(split: SplitModel, folder: str | os.PathLike) -> Path:
    """Write prefix.onnx, suffix.onnx and split.json into ``folder`` (atomically each)."""
    folder = Path(folder)
    write_bytes_atomic(folder / PREFIX_FILE, split.prefix.SerializeToString())
    write_bytes_atomic(folder / SUFFIX_FILE, split.suffix.SerializeToString())
    write_text_atomic(folder / INFO_FILE, split.info.to_json() + "\n")
    return folder


def is_split_folder(path: str | os.PathLike) -> bool:
    """True if ``path`` is a folder written by :func:`save_split`."""
    return (Path(path) / INFO_FILE).is_file()


def load_split(folder: str | os.PathLike) -> SplitModel:
    """Read a folder written by :func:`save_split`."""
    folder = Path(folder)
    try:
        info = SplitInfo.from_json((folder / INFO_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise ModelLoadError(f"{folder / INFO_FILE} is not a readable split description ({exc})") from exc
    return SplitModel(load_model(folder / PREFIX_FILE), load_model(folder / SUFFIX_FILE), info)


def _suffix(model: onnx.ModelProto, facts: ModelFacts, tap: dict[str, str], index: int,
            optimize: bool) -> onnx.ModelProto:
    """The suffix with constant shapes, -1 on the batch axis, and (``optimize``) head rows only."""
    tokens = (facts.tokens, facts.width)
    suffix = _cut(model, tap, {facts.output: facts.output}, tokens, batch=1)
    graph = gs.import_onnx(suffix)
    feeds = {t.name: np.zeros((1, *tokens), np.float32) for t in graph.inputs}
    shapes = tensor_shapes(suffix, feeds, [t.name for t in graph.tensors().values() if t.name])
    for tensor in graph.tensors().values():
        if isinstance(tensor, gs.Variable) and tensor.name in shapes:
            tensor.shape = shapes[tensor.name]
    _fold_constants(graph)
    count = make_batch_dynamic(graph, shapes)
    if facts.input.static_batch is not None:
        log.info("static-batch model: rewrote %d batch-carrying Reshape constants in the suffix", count)
    if optimize:
        last = facts.blocks[-1]
        if index == len(facts.blocks) - 1:  # the target block is the last: its R and F are inputs here
            last = replace(last, residual=RESIDUAL, normed=NORMED)
        keep_head_rows(graph, shapes, last, facts.tokens)
    for tensor in graph.tensors().values():  # shapes were for batch 1; let ONNX Runtime infer them
        if isinstance(tensor, gs.Variable):
            tensor.shape = None
    for tensor in graph.inputs:
        tensor.shape = [f"{tensor.name}_batch", *tokens]
    graph.outputs[0].shape = ["batch", facts.classes]
    return export_like(graph.cleanup().toposort(), suffix)


def _fold_constants(graph: gs.Graph) -> None:
    """Fold constant subgraphs (shape arithmetic) with ONNX Runtime's warnings silenced."""
    import onnxruntime as ort

    ort.set_default_logger_severity(3)
    try:
        graph.fold_constants().cleanup()
    finally:
        ort.set_default_logger_severity(2)


def _cut(model: onnx.ModelProto, inputs: dict[str, str], outputs: dict[str, str],
         tokens: tuple[int, int], batch: int | str = "batch") -> onnx.ModelProto:
    """The subgraph from ``inputs`` to ``outputs``, tensors renamed by the dicts' values."""
    graph = gs.import_onnx(model)
    tensors = graph.tensors()
    new_inputs = [tensors[name] for name in inputs]
    for tensor in new_inputs:
        tensor.inputs.clear()
        if tensor not in graph.inputs:
            tensor.dtype, tensor.shape = np.float32, [batch, *tokens]
    graph.inputs = new_inputs
    graph.outputs = [tensors[name] for name in outputs]
    for tensor in graph.outputs:
        tensor.dtype = tensor.dtype or np.float32
    graph.cleanup(remove_unused_graph_inputs=True).toposort()
    _check_closed(graph)
    for old, new in {**inputs, **outputs}.items():
        tensors[old].name = new
    return export_like(graph, model)


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


def export_like(graph: gs.Graph, like: onnx.ModelProto) -> onnx.ModelProto:
    out = gs.export_onnx(graph)
    out.ir_version = like.ir_version
    del out.opset_import[:]
    out.opset_import.extend(like.opset_import)
    return out
