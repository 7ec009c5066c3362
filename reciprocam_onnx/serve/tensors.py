"""Tensors on the wire (the Open Inference Protocol, v2): datatypes, raw and JSON contents, checked.

A request or answer is a list of named tensors, each with a datatype ("FP32", "BYTES", ...) and a shape.
Their contents travel as raw little-endian bytes (gRPC's raw contents, REST's binary extension), BYTES
elements each prefixed with their 4-byte length, or as JSON lists. REST and gRPC (rest.py, grpc_api.py)
turn their messages into these records and back; signature.py reads and builds them. Every way a tensor
can be malformed is a ``RequestError`` (400) naming the tensor.
"""

from __future__ import annotations

import base64
import binascii
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import RequestError

DATATYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
}
BYTES = "BYTES"
MAX_ELEMENTS = 2**31  # a declared shape beyond this is refused before anything is allocated


@dataclass(frozen=True)
class Tensor:
    """One named tensor of a request or answer. BYTES data is an object array of ``bytes`` (or ``str`` for
    text, and for what JSON carried: its strings as sent)."""

    name: str
    datatype: str
    data: np.ndarray
    parameters: Mapping[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> list[int]:
        return list(self.data.shape)


@dataclass(frozen=True)
class WireRequest:
    """An inference request as it arrived: ``outputs`` maps each requested output to its parameters (None:
    the client named none)."""

    id: str | None
    inputs: tuple[Tensor, ...]
    parameters: Mapping[str, Any] = field(default_factory=dict)
    outputs: Mapping[str, Mapping[str, Any]] | None = None


@dataclass(frozen=True)
class WireAnswer:
    """An inference answer: its id (the request's, or one made for it) and its output tensors."""

    id: str
    outputs: tuple[Tensor, ...]


def datatype_of(dtype: np.dtype) -> str:
    """The protocol's name for a NumPy dtype ("FP32" for float32, "BYTES" for objects)."""
    for name, known in DATATYPES.items():
        if known == dtype:
            return name
    raise ValueError(f"no protocol datatype for {dtype}")


def checked_shape(name: str, shape: object) -> tuple[int, ...]:
    """``shape`` as whole numbers from 0 up, of a size this server would ever take, else RequestError."""
    if not isinstance(shape, Sequence) or isinstance(shape, (str, bytes)):
        raise RequestError(f"input {name!r}: shape must be a list of whole numbers, not {shape!r:.60}")
    dims = tuple(shape)
    if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in dims):
        raise RequestError(f"input {name!r}: shape {list(dims)!r:.60} must hold whole numbers from 0 up")
    if math.prod(dims) > MAX_ELEMENTS:
        raise RequestError(f"input {name!r}: shape {list(dims)} holds more elements than this server takes")
    return dims


def _dtype(name: str, datatype: object) -> np.dtype:
    if not isinstance(datatype, str) or datatype not in DATATYPES:
        raise RequestError(f"input {name!r}: unknown datatype {datatype!r:.40}; known: {', '.join(DATATYPES)}")
    return DATATYPES[datatype]


def from_raw(name: str, datatype: object, shape: object, raw: bytes) -> np.ndarray:
    """A tensor from its raw contents; RequestError when they do not fill ``shape`` exactly."""
    dtype, dims = _dtype(name, datatype), checked_shape(name, shape)
    count = math.prod(dims)
    if datatype == BYTES:
        items = split_bytes(name, raw)
        if len(items) != count:
            raise RequestError(f"input {name!r}: {len(items)} BYTES elements for shape {list(dims)} ({count})")
        array = np.empty(count, object)
        array[:] = items
        return array.reshape(dims)
    if len(raw) != count * dtype.itemsize:
        raise RequestError(
            f"input {name!r}: {len(raw)} bytes of data, but {datatype} {list(dims)} takes {count * dtype.itemsize}"
        )
    return np.frombuffer(raw, dtype.newbyteorder("<")).astype(dtype).reshape(dims)


def from_list(name: str, datatype: object, shape: object, data: object) -> np.ndarray:
    """A tensor from JSON (or gRPC typed) contents: a flat or nested list in row-major order."""
    dtype, dims = _dtype(name, datatype), checked_shape(name, shape)
    count = math.prod(dims)
    if datatype == BYTES:
        items = list(_flatten(data))
        if not all(isinstance(item, (str, bytes)) for item in items):
            raise RequestError(f"input {name!r}: BYTES data must be strings")
        array = np.empty(len(items), object)
        array[:] = items
    else:
        if datatype == "FP16":
            raise RequestError(f"input {name!r}: FP16 data cannot travel as JSON; send it as binary data")
        try:
            array = np.asarray(data, dtype=dtype).reshape(-1)
        except (TypeError, ValueError, OverflowError) as exc:
            raise RequestError(f"input {name!r}: data is not a list of {datatype} numbers ({exc})") from None
        if datatype == "BOOL" and not all(isinstance(v, bool) for v in _flatten(data)):
            raise RequestError(f"input {name!r}: BOOL data must be true or false")
    if array.size != count:
        raise RequestError(f"input {name!r}: {array.size} values for shape {list(dims)} ({count})")
    return array.reshape(dims)


def _flatten(data: object) -> list:
    if isinstance(data, (list, tuple)):
        return [item for part in data for item in _flatten(part)]
    return [data]


def split_bytes(name: str, raw: bytes) -> list[bytes]:
    """BYTES raw contents -> its elements (each a 4-byte little-endian length, then that many bytes)."""
    items, offset = [], 0
    view = memoryview(raw)
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise RequestError(f"input {name!r}: BYTES data ends inside an element's length")
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise RequestError(f"input {name!r}: a BYTES element of {length} bytes runs past the data")
        items.append(bytes(view[offset : offset + length]))
        offset += length
    return items


def to_raw(tensor: Tensor) -> bytes:
    """The raw contents of an answer's tensor (BYTES: length-prefixed elements, text as UTF-8)."""
    if tensor.datatype != BYTES:
        return np.ascontiguousarray(tensor.data, tensor.data.dtype.newbyteorder("<")).tobytes()
    parts = []
    for item in tensor.data.reshape(-1):
        blob = item.encode("utf-8") if isinstance(item, str) else bytes(item)
        parts += [struct.pack("<I", len(blob)), blob]
    return b"".join(parts)


def to_list(tensor: Tensor) -> list:
    """JSON contents of an answer's tensor, flat in row-major order; binary BYTES elements (PNG files) as
    base64 text, text elements as they are."""
    flat = tensor.data.reshape(-1)
    if tensor.datatype != BYTES:
        return flat.tolist()
    return [item if isinstance(item, str) else base64.b64encode(bytes(item)).decode("ascii") for item in flat]


def from_base64(name: str, text: str) -> bytes:
    """Base64 text (how JSON carries a file) as bytes; RequestError if it is not base64."""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(f"{name}: not base64 text (JSON carries a file's bytes as base64)") from None


def parse_json(body: bytes) -> object:
    """A JSON request body, parsed; RequestError if it is not JSON."""
    import orjson  # the [serve] extra's; the rest of this module loads without it (triton.py)

    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RequestError(f"the request body is not JSON: {exc}") from None
