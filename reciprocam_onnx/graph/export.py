"""Between ONNX and onnx-graphsurgeon: export a graph like its source, fold constants."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs


def export_like(graph: gs.Graph, like: onnx.ModelProto) -> onnx.ModelProto:
    """``graph`` as a ModelProto with the IR version and opsets of ``like``."""
    out = gs.export_onnx(graph)
    out.ir_version = like.ir_version
    del out.opset_import[:]
    out.opset_import.extend(like.opset_import)
    return out


def fold_constants(graph: gs.Graph) -> None:
    """Fold constant subgraphs (shape arithmetic) in place, ONNX Runtime's warnings silenced.

    Float16 and bfloat16 results stay unfolded: ONNX Runtime computes a chain of
    them (an attention scale ``1/sqrt(sqrt(d))``) in float32 at run time, and the
    model's own run uses that value, not its float16 rounding.
    """
    import onnxruntime as ort

    ort.set_default_logger_severity(3)
    try:
        graph.fold_constants(should_exclude_node=_reduced_float).cleanup()
    finally:
        ort.set_default_logger_severity(2)


def _reduced_float(node: gs.Node) -> bool:
    """Does ``node`` compute a float16 or bfloat16 tensor?"""
    return any(out.dtype in (np.float16, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16) for out in node.outputs)
