"""Run the masked suffix in float16 (CUDA): weights and activations in half precision.

Inputs and outputs stay float32 (the prefix's tensors go in, float32 logits come
out); ONNX Runtime's own converter casts at the borders.
"""
from __future__ import annotations

import onnx
import onnx_graphsurgeon as gs

from ..errors import OptionError
from .split import export_like

PRECISIONS = ("float32", "float16")


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise OptionError(f"precision must be one of {PRECISIONS}, not {precision!r}")


def to_float16(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` computing in float16 with float32 inputs and outputs."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    half = convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=True)
    return export_like(gs.import_onnx(half).toposort(), model)  # the converter appends its Casts
