"""Derive the facts the explainer needs (T, P, grid, D, C) from a ViT graph."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace

import onnx
import onnx_graphsurgeon as gs

from ..errors import GraphStructureError
from ..graph.gsutil import ancestors
from ..graph.model import ImageInput, image_input, output_name
from ..graph.probe import probe_specs
from .blocks import Block, find_blocks

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelFacts:
    """What ViT-ReciproCAM needs to know about a model, all read off its graph."""

    input: ImageInput
    output: str
    blocks: tuple[Block, ...]
    tokens: int
    prefix_tokens: int
    grid: tuple[int, int]
    width: int
    classes: int  # 0 when the output is not class scores [B, C] (a dense head)
    dtype: str = "float32"  # of the residual stream (float16 in half-precision graphs)
    output_shape: tuple[int, ...] = ()  # per image
    token_shape: tuple[int, ...] = ()  # the tapped residual stream per image: (T, D) or (h, w, D)
    all_blocks: int = 0  # blocks in every stage (``blocks`` holds the last stage's)
    shape_reads: dict[str, tuple[int, ...]] = field(default_factory=dict)  # tensors read by Shape nodes, at batch 1

    @property
    def cells(self) -> int:
        return self.grid[0] * self.grid[1]


def analyse(
    model: onnx.ModelProto, graph: gs.Graph | None = None, input_size: tuple[int, ...] | None = None
) -> ModelFacts:
    """Find the blocks, then read T, D, C and the token grid; P = T - h*w.

    Hierarchical models (Swin) are tapped in their last stage, whose token grid
    is the map's: ``blocks`` holds only the blocks whose residual stream has the
    last block's shape. A stream of [1, h, w, C] (timm's Swin) is a grid of
    h*w tokens. ``graph``: the model already imported into graphsurgeon, if at
    hand; ``input_size``: (H, W) for a model whose input leaves them open.
    """
    spec = image_input(model, input_size)
    graph = graph if graph is not None else gs.import_onnx(model)
    found = find_blocks(graph)
    patch_conv = _patch_embedding_conv(graph, found[0].residual)
    out = output_name(model)
    read = {n.inputs[0].name for n in graph.nodes if n.op == "Shape" and n.inputs[0].inputs}
    specs = probe_specs(model, spec, [*(b.residual for b in found), patch_conv, out, *sorted(read)])
    shapes = {name: shape for name, (shape, _) in specs.items()}
    stream, grid_shape, logits = shapes[found[-1].residual], shapes[patch_conv], shapes[out]
    if len(stream) not in (3, 4) or len(grid_shape) != 4 or not logits or logits[0] != 1:
        raise GraphStructureError(
            f"unexpected shapes: tokens {stream}, patch embedding {grid_shape}, output {logits}; "
            "expected [1, T, D] or [1, h, w, D], [1, D, h, w] and an output with a batch axis first"
        )
    stage = [b for b in found if shapes[b.residual] == stream]
    blocks = tuple(replace(b, index=i) for i, b in enumerate(stage))
    tokens, width = math.prod(stream[1:-1]), stream[-1]
    if len(stream) == 4:
        grid, prefix = (stream[1], stream[2]), 0
    elif len(stage) == len(found):
        grid = (grid_shape[2], grid_shape[3])
        prefix = tokens - grid[0] * grid[1]
    else:
        grid, prefix = _grid_of(tokens, spec.size), 0
    if prefix < 0:
        raise GraphStructureError(f"{tokens} tokens cannot hold a {grid[0]}x{grid[1]} patch grid")
    dtype = specs[found[-1].residual][1].name
    classes = logits[1] if len(logits) == 2 else 0
    facts = ModelFacts(
        spec,
        out,
        blocks,
        tokens,
        prefix,
        grid,
        width,
        classes,
        dtype,
        tuple(logits[1:]),
        tuple(stream[1:]),
        len(found),
        {name: shapes[name] for name in read if name in shapes},
    )
    stages = f" (the last stage; {len(found)} in all)" if len(stage) < len(found) else ""
    log.info(
        "T=%d tokens (%d prefix + %dx%d grid), D=%d, C=%d, %d blocks%s",
        tokens,
        prefix,
        *grid,
        width,
        facts.classes,
        len(blocks),
        stages,
    )
    return facts


def _grid_of(tokens: int, size: tuple[int, int]) -> tuple[int, int]:
    """The h x w grid of ``tokens`` patches over an image of ``size``, for square patches."""
    stride = math.isqrt(size[0] * size[1] // tokens)
    if stride * stride * tokens != size[0] * size[1] or size[0] % stride or size[1] % stride:
        raise GraphStructureError(f"cannot tell the token grid of the last stage: {tokens} tokens for {size}")
    return size[0] // stride, size[1] // stride


def _patch_embedding_conv(graph: gs.Graph, first_residual: str) -> str:
    """Output name of the last Conv before the first block: it sets the grid."""
    upstream = {id(n) for n in ancestors(graph.tensors()[first_residual])}
    convs = [n for n in graph.nodes if n.op in ("Conv", "ConvInteger") and id(n) in upstream]
    if not convs:
        raise GraphStructureError("no patch-embedding Conv found before the first transformer block")
    return convs[-1].outputs[0].name
