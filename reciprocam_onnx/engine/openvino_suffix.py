"""The masked copies in bfloat16 on the CPU: the engine suffix compiled by OpenVINO (``precision="bfloat16"``).

ONNX Runtime's CPU kernels have no bfloat16 matrix products on x86; OpenVINO's CPU
plugin runs an ONNX graph in bfloat16 on processors with AVX512-BF16 or AMX when
asked (``INFERENCE_PRECISION_HINT``). Measured on the same suffix and copies
(docs/benchmarks.md), it was faster than every other candidate, so the Explainer
keeps its prefix and the exact float32 suffix in ONNX Runtime and hands the masked
copies to this runner. OpenVINO is an optional extra (``reciprocam-onnx[openvino]``).
"""

from __future__ import annotations

import functools
import os

import numpy as np

from ..errors import OpenVINOError, OptionError
from ..graph.runtime import threads
from ..io.limits import limit

INSTALL = "pip install 'reciprocam-onnx[openvino]'"


@functools.lru_cache(maxsize=1)
def _core():
    try:
        import openvino as ov
    except ImportError:
        raise OptionError(
            f"precision='bfloat16' runs the masked copies in OpenVINO, which is not installed: {INSTALL}"
        ) from None
    return ov.Core()


def bfloat16_supported() -> bool:
    """True when OpenVINO's CPU plugin computes bfloat16 natively on this processor."""
    return "BF16" in _core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


class OpenVINOSuffix:
    """The engine suffix (an ONNX file) compiled for the CPU in bfloat16, run like the ONNX Runtime one."""

    def __init__(self, path: str | os.PathLike, output: str):
        core = _core()
        config = {"INFERENCE_PRECISION_HINT": "bf16", "PERFORMANCE_HINT": "LATENCY"}
        if limit("RECIPROCAM_THREADS"):
            config["INFERENCE_NUM_THREADS"] = str(threads())
        try:
            self._compiled = core.compile_model(str(path), "CPU", config)
        except RuntimeError as exc:
            raise OpenVINOError(f"OpenVINO could not compile the suffix: {_first_line(exc)}") from exc
        self._request = self._compiled.create_infer_request()
        self._output = self._compiled.output(output)

    def run(self, feeds: dict[str, np.ndarray], out: np.ndarray) -> None:
        """Logits of the copies described by ``feeds``, written into ``out`` [rows, C]."""
        try:
            result = self._request.infer(feeds, share_inputs=True)
        except RuntimeError as exc:
            raise OpenVINOError(f"OpenVINO failed while running the masked copies: {_first_line(exc)}") from exc
        out[...] = result[self._output]


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
