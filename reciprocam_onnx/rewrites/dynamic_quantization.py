"""Dynamically quantized suffixes run one masked copy at a time.

``onnxruntime.quantization.quantize_dynamic`` graphs quantize activations at
run time with one scale for the whole tensor (``DynamicQuantizeLinear``). In a
batch of masked copies that scale would come from every copy at once, a scale
that no copy has when run alone. So such a suffix keeps its batch of 1 and the
engine runs one copy per run (``SplitInfo.copies_per_run``), through the
model's own operations; the prefix likewise takes one image at a time.

A rewrite that quantizes each batch row on its own was tried and dropped
(docs/design.md): exact by the ONNX definitions, it still differed from ONNX
Runtime's fused int8 kernels on 4 of 394 copies by up to 3% of the logit scale.
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from .base import NothingToDo, Surgery


def quantizes_at_run_time(graph: gs.Graph | None) -> bool:
    """True when ``graph`` quantizes some activation with a scale computed at run time."""
    return graph is not None and any(node.op == "DynamicQuantizeLinear" for node in graph.nodes)


def one_copy_per_run(surgery: Surgery) -> None:
    """Mark a suffix that quantizes at run time to run one copy at a time."""
    if not quantizes_at_run_time(surgery.suffix):
        raise NothingToDo("the suffix quantizes nothing at run time")
    surgery.copies_per_run = 1
