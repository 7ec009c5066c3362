"""Derive the facts the explainer needs (T, P, grid, D, C) from a ViT graph."""

from __future__ import annotations

import logging
from dataclasses import dataclass

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

    @property
    def cells(self) -> int:
        return self.grid[0] * self.grid[1]


def analyse(
    model: onnx.ModelProto, graph: gs.Graph | None = None, input_size: tuple[int, ...] | None = None
) -> ModelFacts:
    """Find the blocks, then read T, D, C and the patch grid; P = T - h*w.
    ``graph``: the model already imported into graphsurgeon, if at hand;
    ``input_size``: (H, W) for a model whose input leaves them open."""
    spec = image_input(model, input_size)
    graph = graph if graph is not None else gs.import_onnx(model)
    blocks = find_blocks(graph)
    patch_conv = _patch_embedding_conv(graph, blocks[0].residual)
    out = output_name(model)
    specs = probe_specs(model, spec, [blocks[0].residual, patch_conv, out])
    shapes = {name: shape for name, (shape, _) in specs.items()}
    stream, grid_shape, logits = shapes[blocks[0].residual], shapes[patch_conv], shapes[out]
    if len(stream) != 3 or len(grid_shape) != 4 or not logits or logits[0] != 1:
        raise GraphStructureError(
            f"unexpected shapes: tokens {stream}, patch embedding {grid_shape}, output {logits}; "
            "expected [1, T, D], [1, D, h, w] and an output with a batch axis first"
        )
    tokens, width = stream[1], stream[2]
    grid = (grid_shape[2], grid_shape[3])
    prefix = tokens - grid[0] * grid[1]
    if prefix < 0:
        raise GraphStructureError(f"{tokens} tokens cannot hold a {grid[0]}x{grid[1]} patch grid")
    dtype = specs[blocks[0].residual][1].name
    classes = logits[1] if len(logits) == 2 else 0
    facts = ModelFacts(spec, out, tuple(blocks), tokens, prefix, grid, width, classes, dtype, tuple(logits[1:]))
    log.info(
        "T=%d tokens (%d prefix + %dx%d grid), D=%d, C=%d, %d blocks",
        tokens,
        prefix,
        *grid,
        width,
        facts.classes,
        len(blocks),
    )
    return facts


def _patch_embedding_conv(graph: gs.Graph, first_residual: str) -> str:
    """Output name of the last Conv before the first block: it sets the grid."""
    upstream = {id(n) for n in ancestors(graph.tensors()[first_residual])}
    convs = [n for n in graph.nodes if n.op in ("Conv", "ConvInteger") and id(n) in upstream]
    if not convs:
        raise GraphStructureError("no patch-embedding Conv found before the first transformer block")
    return convs[-1].outputs[0].name
