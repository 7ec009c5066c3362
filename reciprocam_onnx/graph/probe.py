"""Read intermediate tensor shapes by running a model once in ONNX Runtime."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import onnx

from ..errors import onnxruntime_errors
from .model import image_input
from .runtime import lean_session, release_memory


def tensor_shapes(
    model: onnx.ModelProto, feeds: dict[str, np.ndarray], names: Iterable[str]
) -> dict[str, tuple[int, ...]]:
    """Run ``model`` on ``feeds`` on CPU and return the shapes of ``names`` and of its outputs.

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
    shapes = {name: tuple(v.shape) for name, v in zip(wanted, values)}
    del session
    release_memory()
    return shapes


def random_image(model: onnx.ModelProto, batch: int = 1, seed: int = 0) -> np.ndarray:
    """A standard-normal float32 batch of the model's input shape."""
    spec = image_input(model)
    rng = np.random.default_rng(seed)
    return rng.standard_normal((batch, spec.channels, *spec.size), dtype=np.float32)


def probe_shapes(model: onnx.ModelProto, names: Iterable[str]) -> dict[str, tuple[int, ...]]:
    """Shapes of ``names`` (and of the outputs) for one random image."""
    return tensor_shapes(model, {image_input(model).name: random_image(model)}, names)
