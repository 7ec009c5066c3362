"""Run the engine's suffix in float16 (meant for CUDA): weights and activations in half precision.

Inputs and outputs stay float32 (the prefix's tensors go in, float32 logits come
out); ONNX Runtime's own converter casts at the borders.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from .base import NotApplicable, Surgery


def float16(surgery: Surgery) -> None:
    """The suffix computing in float16 with float32 inputs and outputs."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    if any(t.dtype is not None and np.dtype(t.dtype) == np.float16 for t in surgery.suffix.inputs):
        raise NotApplicable("the model already computes in float16")
    half = convert_float_to_float16(surgery.export_suffix(), keep_io_types=True, disable_shape_infer=True)
    surgery.suffix = gs.import_onnx(half).toposort()  # the converter appends its Casts
