"""Loading ONNX models and describing their image input."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from ..errors import GraphStructureError, ModelLoadError
from ..io.limits import limit

ModelSource = str | os.PathLike | onnx.ModelProto


def load_model(source: ModelSource) -> onnx.ModelProto:
    """Load an ONNX model from a path (or pass a ModelProto through), with clear errors."""
    if isinstance(source, onnx.ModelProto):
        return source
    if not isinstance(source, (str, os.PathLike)):
        raise ModelLoadError(f"a model is a file path or an onnx.ModelProto, not {type(source).__name__}")
    path = Path(source)
    if not path.is_file():
        raise ModelLoadError(f"model file not found: {path}")
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # protobuf raises several unrelated types
        raise ModelLoadError(f"{path} is not a valid ONNX model ({type(exc).__name__}: {exc})") from exc
    if not model.graph.node:
        raise ModelLoadError(f"{path} is not a valid ONNX model (its graph has no nodes)")
    where = _not_text(model)
    if where:
        raise ModelLoadError(f"{path} is not a valid ONNX model (its {where} is not UTF-8 text: a corrupt file?)")
    return model


def _not_text(message) -> str | None:
    """The first string field of ``message`` (or of a message inside it) holding bytes that are not UTF-8;
    protobuf hands those back as bytes, and they would fail later, far from here."""
    from google.protobuf.descriptor import FieldDescriptor

    for field, value in message.ListFields():
        if field.type not in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_MESSAGE):
            continue
        repeated = field.is_repeated if hasattr(field, "is_repeated") else field.label == field.LABEL_REPEATED
        for item in value if repeated else [value]:
            if field.type == FieldDescriptor.TYPE_STRING:
                if not isinstance(item, str):
                    return f"{message.DESCRIPTOR.name}.{field.name}"
            elif where := _not_text(item):
                return where
    return None


LAYOUTS = ("NCHW", "NHWC")


@dataclass(frozen=True)
class ImageInput:
    """The model's image input: name, channels, size, fixed batch (or None), dtype and layout.

    Float inputs take normalised pixels; integer (uint8) inputs take raw pixels
    and normalise inside the graph.
    """

    name: str
    channels: int
    height: int
    width: int
    static_batch: int | None
    dtype: str = "float32"
    layout: str = LAYOUTS[0]

    @property
    def size(self) -> tuple[int, int]:
        return self.height, self.width

    def shape(self, batch: int) -> tuple[int, int, int, int]:
        """The input's shape for ``batch`` images, in its layout."""
        if self.layout == "NHWC":
            return batch, self.height, self.width, self.channels
        return batch, self.channels, self.height, self.width

    @property
    def takes_raw_pixels(self) -> bool:
        return np.dtype(self.dtype).kind in "iu"

    def random(self, batch: int = 1, seed: int = 0) -> np.ndarray:
        """A random input batch: standard normal for float inputs, 0..255 for integer ones."""
        rng = np.random.default_rng(seed)
        if self.takes_raw_pixels:
            return rng.integers(0, 256, self.shape(batch)).astype(self.dtype)
        return rng.standard_normal(self.shape(batch), dtype=np.float32).astype(self.dtype)


def image_input(model: onnx.ModelProto, size: tuple[int, ...] | None = None) -> ImageInput:
    """The single image input of ``model``: NCHW, or NHWC when its last axis holds 1 or 3 channels.

    ``size`` (H, W) is needed when the graph leaves height and width open, and
    must match them when it fixes them.
    """
    initializers = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        names = ", ".join(i.name for i in inputs)
        raise GraphStructureError(f"expected one image input, found {len(inputs)}: {names}")
    value = inputs[0]
    tensor = value.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
    if len(dims) != 4:
        raise GraphStructureError(
            f"input {value.name!r} must be an image batch [N, C, H, W] or [N, H, W, C]; its shape is {dims}"
        )
    layout = "NHWC" if dims[3] in (1, 3) and dims[1] not in (1, 3) else "NCHW"
    channels, height, width = (dims[3], dims[1], dims[2]) if layout == "NHWC" else dims[1:]
    channels = channels or _conv_channels(model)
    if size is not None:
        if (height or size[0], width or size[1]) != tuple(size):
            raise GraphStructureError(
                f"input {value.name!r} is {height}x{width} (HxW); it cannot take {size[0]}x{size[1]}"
            )
        height, width = size
    if height is None or width is None or channels is None:
        raise GraphStructureError(
            f"input {value.name!r} leaves its size open ({dims}): give it (--input-size H W, or input_size=(H, W))"
        )
    most = limit("RECIPROCAM_MAX_INPUT_PIXELS")  # refused before anything runs: the probe would allocate it
    if height * width > most:
        raise GraphStructureError(
            f"input {value.name!r} is {height}x{width} (HxW), above the {most:,} pixels that "
            "reciprocam-onnx runs a ViT at (RECIPROCAM_MAX_INPUT_PIXELS); give a smaller --input-size if it allows one"
        )
    dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name
    return ImageInput(value.name, channels, height, width, dims[0], dtype, layout)


def _conv_channels(model: onnx.ModelProto) -> int | None:
    """Input channels of the first Conv (the patch embedding), from its weight."""
    weights = {i.name: i for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Conv" and node.input[1] in weights:
            return int(weights[node.input[1]].dims[1])
    return None


def output_name(model: onnx.ModelProto) -> str:
    """The name of the model's first output (the logits)."""
    return model.graph.output[0].name


def metadata(model: onnx.ModelProto) -> dict[str, str]:
    """The model's metadata_props as a dict."""
    return {p.key: p.value for p in model.metadata_props}


_METADATA_FIELD = onnx.ModelProto.DESCRIPTOR.fields_by_name["metadata_props"].number


def file_metadata(path: str | os.PathLike) -> dict[str, str] | None:
    """The metadata_props of the ONNX file at ``path``, read without reading its graph (protobuf's wire
    format: the top-level fields, the graph's bytes skipped); None where the file does not read so."""
    try:
        with Path(path).open("rb") as file:
            size, props = os.fstat(file.fileno()).st_size, {}
            while file.tell() < size:
                key = _varint(file)
                field, kind = key >> 3, key & 7
                if kind == 0:
                    _varint(file)
                elif kind == 2:
                    length = _varint(file)
                    if field == _METADATA_FIELD:
                        entry = onnx.StringStringEntryProto.FromString(file.read(length))
                        props[entry.key] = entry.value
                    else:
                        file.seek(length, os.SEEK_CUR)
                elif kind in (1, 5):
                    file.seek(8 if kind == 1 else 4, os.SEEK_CUR)
                else:
                    return None
            return props if file.tell() == size else None
    except Exception:  # noqa: BLE001 - OSError, ValueError, protobuf's DecodeError: not readable so
        return None


def _varint(file) -> int:
    """One protobuf varint from ``file``."""
    value, shift = 0, 0
    while True:
        byte = file.read(1)
        if not byte or shift > 63:
            raise ValueError("truncated or overlong varint")
        value |= (byte[0] & 0x7F) << shift
        if byte[0] < 0x80:
            return value
        shift += 7
