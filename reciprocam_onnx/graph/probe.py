"""Read intermediate tensor shapes by running a model once in ONNX Runtime."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import onnx

from ..errors import onnxruntime_errors
from .model import ImageInput
from .runtime import lean_session, release_memory


def tensor_shapes(
    model: onnx.ModelProto, feeds: dict[str, np.ndarray], names: Iterable[str]
) -> dict[str, tuple[int, ...]]:
    """Run ``model`` on ``feeds`` on CPU and return the shapes of ``names`` and of its outputs."""
    return {name: shape for name, (shape, _) in tensor_specs(model, feeds, names).items()}


def tensor_specs(
    model: onnx.ModelProto, feeds: dict[str, np.ndarray], names: Iterable[str]
) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Run ``model`` on ``feeds`` on CPU and return the shape and dtype of ``names`` and of its outputs.

    The extra outputs are added to ``model`` for the run and removed again (no copy).
    """
    outputs = model.graph.output
    kept = len(outputs)
    existing = {o.name for o in outputs}
    outputs.extend(onnx.ValueInfoProto(name=n) for n in dict.fromkeys(names) if n not in existing)
    try:
        session = lean_session(model)
    finally:
        del outputs[kept:]
    wanted = [o.name for o in session.get_outputs()]
    with onnxruntime_errors("running the model to read its tensor shapes"):
        values = session.run(wanted, feeds)
    specs = {name: (tuple(v.shape), v.dtype) for name, v in zip(wanted, values)}
    del session
    release_memory()
    return specs


def probe_specs(
    model: onnx.ModelProto, image: ImageInput, names: Iterable[str]
) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Shapes and dtypes of ``names`` (and of the outputs) for one random image."""
    return tensor_specs(model, {image.name: image.random()}, names)
