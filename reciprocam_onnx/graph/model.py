"""Loading ONNX models and describing their image input."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import onnx

from ..errors import GraphStructureError, ModelLoadError

ModelSource = str | os.PathLike | onnx.ModelProto


def load_model(source: ModelSource) -> onnx.ModelProto:
    """Load an ONNX model from a path (or pass a ModelProto through), with clear errors."""
    if isinstance(source, onnx.ModelProto):
        return source
    path = Path(source)
    if not path.is_file():
        raise ModelLoadError(f"model file not found: {path}")
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # protobuf raises several unrelated types
        raise ModelLoadError(f"{path} is not a valid ONNX model ({type(exc).__name__}: {exc})") from exc
    if not model.graph.node:
        raise ModelLoadError(f"{path} is not a valid ONNX model (its graph has no nodes)")
    return model


@dataclass(frozen=True)
class ImageInput:
    """The model's image input: name, [C, H, W] and whether its batch is fixed."""

    name: str
    channels: int
    height: int
    width: int
    static_batch: int | None

    @property
    def size(self) -> tuple[int, int]:
        return self.height, self.width


def image_input(model: onnx.ModelProto) -> ImageInput:
    """The single NCHW image input of ``model`` (H and W must be fixed)."""
    initializers = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        names = ", ".join(i.name for i in inputs)
        raise GraphStructureError(f"expected one image input, found {len(inputs)}: {names}")
    value = inputs[0]
    dims = [d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim]
    fixed = [d for d in dims[1:] if d is not None]
    if len(dims) != 4 or len(fixed) != 3:
        raise GraphStructureError(f"input {value.name!r} must be NCHW with fixed C, H, W; its shape is {dims}")
    channels, height, width = fixed
    return ImageInput(value.name, channels, height, width, dims[0])


def output_name(model: onnx.ModelProto) -> str:
    """The name of the model's first output (the logits)."""
    return model.graph.output[0].name


def metadata(model: onnx.ModelProto) -> dict[str, str]:
    """The model's metadata_props as a dict."""
    return {p.key: p.value for p in model.metadata_props}
