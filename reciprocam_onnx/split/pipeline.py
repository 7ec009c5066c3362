"""Split a ViT graph at a target block: analyse, cut, rewrite (the declared passes), verify.

    image ──prefix──► residual R = x_b, normed F = LN1_b(x_b)
    (R, F) ──suffix──► logits

The graph is imported and analysed once and each half exported once;
contract.py says what the halves take and promise. ``split_blocks`` cuts at
several blocks behind one shared prefix (shared.py); both keep verified
splits in the user's cache when asked (cache.py).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import onnx
import onnx_graphsurgeon as gs

from ..analysis.facts import analyse
from ..analysis.model_info import read_model_info
from ..contract import (
    FUSED_OPTIONS_KEY,
    SharedSplit,
    SplitInfo,
    SplitModel,
    load_shared,
    load_split,
    save_shared,
    save_split,
)
from ..errors import BlockIndexError, OptionError
from ..graph.export import export_like
from ..graph.model import ModelSource, load_model, metadata
from ..graph.runtime import release_memory
from ..graph.unfuse import unfuse_normalisations
from ..options import Options
from ..rewrites import Surgery, run_passes, split_passes
from ..rewrites.dynamic_quantization import quantizes_at_run_time
from .cache import cached
from .cut import free_shapes, prefix_and_suffix, set_shapes
from .shared import shared_split
from .verify import verify_shared, verify_split

log = logging.getLogger(__name__)


def resolve_block(block: int, count: int, owner: str = "the model") -> int:
    """Turn a Python-style block index into 0..count-1, or raise BlockIndexError."""
    if not -count <= block < count:
        raise BlockIndexError(
            f"block {block} is out of range: {owner} has {count} blocks (valid: {-count}..{count - 1})"
        )
    return block % count


def split_model(
    source: ModelSource,
    block: int = Options.block,
    verify: bool = True,
    optimize: bool = Options.optimize,
    input_size: tuple[int, int] | None = Options.input_size,
    cache: bool = False,
) -> SplitModel:
    """Cut ``source`` at ``block``; with ``verify``, check suffix(prefix(x)) == model(x).

    ``optimize`` adds the rewrites that compute less for the same logits
    (rewrites/: head rows, hoisted projections, distinct-row slots).
    ``input_size`` (H, W) is for models whose input leaves them open; the
    default is the size the model's metadata or preprocessor config gives.
    With ``cache`` (and ``verify``), a verified split is kept in, and read from, the user's cache (cache.py).
    """
    if cache and verify:
        cut = {"blocks": [block], "optimize": optimize, "input_size": input_size}
        return cached(
            source, cut, lambda: split_model(source, block, True, optimize, input_size), save_split, load_split
        )
    source_model = _Source(source, input_size)
    split = source_model.cut(resolve_block(block, len(source_model.facts.blocks), source_model.owner), optimize)
    if verify:
        verify_split(source_model.release(), split)
    release_memory()
    return split


def split_blocks(
    source: ModelSource,
    blocks: Sequence[int],
    verify: bool = True,
    optimize: bool = Options.optimize,
    input_size: tuple[int, int] | None = Options.input_size,
    cache: bool = False,
) -> SharedSplit:
    """Cut ``source`` at each of ``blocks`` (analysed once) behind one prefix that computes every cut's
    suffix inputs in one run (split/shared.py); with ``verify``, check every suffix(prefix(x)) == model(x)
    from one run of the model and of the prefix. ``cache``: as for split_model."""
    if cache and verify:
        cut = {"blocks": sorted(set(blocks)), "optimize": optimize, "input_size": input_size, "shared": True}
        make = lambda: split_blocks(source, blocks, True, optimize, input_size)  # noqa: E731
        return cached(source, cut, make, save_shared, load_shared)
    source_model = _Source(source, input_size)
    count, owner = len(source_model.facts.blocks), source_model.owner
    indices = sorted({resolve_block(block, count, owner) for block in blocks})
    splits = [source_model.cut(index, optimize, index == indices[-1], index == indices[-1]) for index in indices]
    shared = shared_split(splits)
    del splits
    if verify:
        verify_shared(source_model.release(), shared)
    release_memory()
    return shared


class _Source:
    """A model loaded and analysed once, to be cut at one block or several."""

    def __init__(self, source: ModelSource, input_size: tuple[int, int] | None):
        model = load_model(source)
        if FUSED_OPTIONS_KEY in metadata(model):
            raise OptionError("this model is a fused graph (it has saliency outputs); split the model itself")
        if len(model.graph.output) > 1:
            log.warning(
                "the model has %d outputs (%s): explaining the first, %r",
                len(model.graph.output),
                ", ".join(o.name for o in model.graph.output),
                model.graph.output[0].name,
            )
        self.path = None if isinstance(source, onnx.ModelProto) else Path(source)
        self.model_info = read_model_info(model, self.path)
        self.graph: gs.Graph | None = gs.import_onnx(model)
        self.given = model
        if unfuse_normalisations(self.graph):  # analyse the graph in standard ops; verify against the model as given
            model = export_like(self.graph, model)
        self.model = model
        self.facts = analyse(model, self.graph, input_size or self.model_info.input_size)
        staged = self.facts.all_blocks > len(self.facts.blocks)
        self.owner = "the model's last stage (whose token grid the map has)" if staged else "the model"

    def cut(self, index: int, optimize: bool, last: bool = True, whole_prefix: bool = True) -> SplitModel:
        """The split at block ``index`` (0..blocks-1), not verified; the ``last`` cut drops the graph
        before its rewrites run (their copies of it then need no room beside it). Without ``whole_prefix``,
        the prefix holds only F's hoisted projections (all a cut behind a shared prefix adds to it)."""
        facts = self.facts
        assert self.graph is not None, "cut after the last cut"
        prefix, suffix = prefix_and_suffix(self.graph, facts, index)
        if last:
            self.graph = None
        surgery = Surgery(suffix, self.model, prefix, facts, index)
        del prefix, suffix  # only the surgery holds graphs now: the passes' copies replace them
        set_shapes(surgery.suffix, surgery.shapes(), facts)
        free_shapes(surgery.suffix, facts.output_shape)
        surgery, rewrites = run_passes(surgery, split_passes(optimize))
        target, spec = facts.blocks[index], facts.input
        per_image = quantizes_at_run_time(surgery.prefix)  # one scale for a batch: one image at a time
        info = SplitInfo(
            index,
            len(facts.blocks),
            spec.name,
            (spec.channels, *spec.size),
            1 if per_image else spec.static_batch,
            facts.output,
            facts.tokens,
            facts.prefix_tokens,
            facts.grid,
            facts.width,
            facts.classes,
            target.residual,
            target.normed,
            tuple(surgery.masked),
            optimize,
            surgery.slots,
            self.model_info,
            rewrites,
            spec.dtype,
            spec.layout,
            facts.dtype,
            surgery.copies_per_run,
            facts.output_shape,
            facts.all_blocks,
        )
        prefix_graph = surgery.export_prefix() if whole_prefix else _projections(surgery)
        split = SplitModel(prefix_graph, surgery.export_suffix(), info)
        log.info("split at block %d of %d; rewrites: %s", index, len(facts.blocks), info.rewrites_line())
        return split

    def release(self) -> onnx.ModelProto | Path:
        """The model as given, for verification (its file where it has one), with this object's graphs
        dropped: verification reads the file again, with no second copy of the weights in memory."""
        original = self.given if self.path is None else self.path
        del self.model, self.given, self.graph
        release_memory()
        return original


def _projections(surgery: Surgery) -> onnx.ModelProto:
    """The prefix's MatMuls that compute the suffix's masked inputs from F (rewrites/hoist.py), alone."""
    assert surgery.prefix is not None
    masked = set(surgery.masked)
    nodes = [node for node in surgery.prefix.nodes if node.outputs and node.outputs[0].name in masked]
    normed = [tensor for node in nodes for tensor in node.inputs if isinstance(tensor, gs.Variable)][:1]
    graph = gs.Graph(
        nodes=nodes, inputs=normed, outputs=[node.outputs[0] for node in nodes], opset=surgery.prefix.opset
    )
    return export_like(graph, surgery.like)
