"""Read intermediate tensor shapes by running a model once in ONNX Runtime."""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import onnx

from .model import image_input


def tensor_shapes(
    model: onnx.ModelProto, feeds: dict[str, np.ndarray], names: Iterable[str]
) -> dict[str, tuple[int, ...]]:
    """Run ``model`` on ``feeds`` on CPU and return the shapes of ``names`` and of its outputs."""
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    existing = {o.name for o in probe.graph.output}
    for name in dict.fromkeys(names):
        if name not in existing:
            probe.graph.output.append(onnx.ValueInfoProto(name=name))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    wanted = [o.name for o in session.get_outputs()]
    values = session.run(wanted, feeds)
    return {name: tuple(v.shape) for name, v in zip(wanted, values)}


def random_image(model: onnx.ModelProto, batch: int = 1, seed: int = 0) -> np.ndarray:
    """A standard-normal float32 batch of the model's input shape."""
    spec = image_input(model)
    rng = np.random.default_rng(seed)
    return rng.standard_normal((batch, spec.channels, *spec.size), dtype=np.float32)


def probe_shapes(model: onnx.ModelProto, names: Iterable[str]) -> dict[str, tuple[int, ...]]:
    """Shapes of ``names`` (and of the outputs) for one random image."""
    return tensor_shapes(model, {image_input(model).name: random_image(model)}, names)
