"""Split a ViT graph at a target block: analyse, cut, rewrite (the declared passes), verify.

    image ──prefix──► residual R = x_b, normed F = LN1_b(x_b)
    (R, F) ──suffix──► logits

The graph is imported once and each half exported once; contract.py says what
the halves take and promise.
"""

from __future__ import annotations

import logging
from pathlib import Path

import onnx
import onnx_graphsurgeon as gs

from ..analysis.facts import analyse
from ..analysis.model_info import read_model_info
from ..contract import FUSED_OPTIONS_KEY, SplitInfo, SplitModel
from ..errors import BlockIndexError, OptionError
from ..graph.export import export_like
from ..graph.model import ModelSource, load_model, metadata
from ..graph.runtime import release_memory
from ..graph.unfuse import unfuse_normalisations
from ..options import Options
from ..rewrites import Surgery, run_passes, split_passes
from ..rewrites.dynamic_quantization import quantizes_at_run_time
from .cut import free_shapes, prefix_and_suffix, set_shapes
from .verify import verify_split

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
) -> SplitModel:
    """Cut ``source`` at ``block``; with ``verify``, check suffix(prefix(x)) == model(x).

    ``optimize`` adds the rewrites that compute less for the same logits
    (rewrites/: head rows, hoisted projections, distinct-row slots).
    ``input_size`` (H, W) is for models whose input leaves them open; the
    default is the size the model's metadata or preprocessor config gives.
    """
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
    path = None if isinstance(source, onnx.ModelProto) else Path(source)
    model_info = read_model_info(model, path)
    graph = gs.import_onnx(model)
    given = model
    if unfuse_normalisations(graph):  # analyse the graph in standard ops; verify against the model as given
        model = export_like(graph, model)
    facts = analyse(model, graph, input_size or model_info.input_size)
    staged = facts.all_blocks > len(facts.blocks)
    owner = "the model's last stage (whose token grid the map has)" if staged else "the model"
    index = resolve_block(block, len(facts.blocks), owner)
    prefix, suffix = prefix_and_suffix(graph, facts, index)
    surgery = Surgery(suffix, model, prefix, facts, index)
    del graph, prefix, suffix  # only the surgery holds graphs now: the passes' copies replace them
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
        model_info,
        rewrites,
        spec.dtype,
        spec.layout,
        facts.dtype,
        surgery.copies_per_run,
        facts.output_shape,
        facts.all_blocks,
    )
    split = SplitModel(surgery.export_prefix(), surgery.export_suffix(), info)
    del surgery
    log.info("split at block %d of %d; rewrites: %s", index, len(facts.blocks), info.rewrites_line())
    if verify:
        original = given if path is None else path
        del model, given  # verification reads the file again: no second copy of the weights in memory
        release_memory()
        verify_split(original, split)
    release_memory()
    return split
