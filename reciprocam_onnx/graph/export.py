"""Between ONNX and onnx-graphsurgeon: export a graph like its source, fold constants."""

from __future__ import annotations

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
    """Fold constant subgraphs (shape arithmetic) in place, ONNX Runtime's warnings silenced."""
    import onnxruntime as ort

    ort.set_default_logger_severity(3)
    try:
        graph.fold_constants().cleanup()
    finally:
        ort.set_default_logger_severity(2)
