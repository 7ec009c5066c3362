"""The attention probabilities of each block: the Softmax inside its attention sublayer."""

from __future__ import annotations

import onnx_graphsurgeon as gs

from ..errors import GraphStructureError
from ..graph.gsutil import ancestors, descendants
from .blocks import Block


def attention_probabilities(graph: gs.Graph, blocks: tuple[Block, ...] | list[Block]) -> list[str]:
    """Per block, the name of the Softmax output between its normed input F and its attention output.

    Raises GraphStructureError naming the block when it has no single such Softmax
    (a fused attention op hides it, or the block computes several).
    """
    tensors = graph.tensors()
    names = []
    for index, block in enumerate(blocks):
        after_f = descendants(tensors[block.normed])
        found = [n for n in ancestors(tensors[block.attention_output], after_f) if n.op == "Softmax"]
        if len(found) != 1:
            what = "no Softmax (a fused attention op?)" if not found else f"{len(found)} Softmax nodes"
            raise GraphStructureError(
                f"block {index}'s attention has {what} between its input and output: attention rollout "
                "reads one attention Softmax per block"
            )
        names.append(found[0].outputs[0].name)
    return names
