"""The one exception family of reciprocam-onnx: catch ``ReciproCamError``.

``UserError`` and its subclasses say what is wrong with a model, an image, an
option or an output location; the CLI prints them as one line. ``InternalError``
is a bug in reciprocam-onnx; the CLI says so and how to report it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


class ReciproCamError(Exception):
    """Base class of every error this package raises on purpose."""


class UserError(ReciproCamError):
    """Something the user gave cannot be used: the message says what and why."""


class InternalError(ReciproCamError):
    """An invariant of reciprocam-onnx itself broke: a bug to report."""


class ModelLoadError(UserError):
    """The model file is missing, unreadable or not a valid ONNX model."""


class NotAViTError(UserError):
    """The graph holds no pre-norm transformer blocks (a CNN, say)."""


class GraphStructureError(UserError):
    """The graph has blocks, but a fact the explainer needs cannot be derived."""


class BlockIndexError(UserError):
    """The requested target block does not exist."""


class SplitMismatchError(UserError):
    """suffix(prefix(x)) does not reproduce the original model's logits."""


class ImageError(UserError, ValueError):
    """An image (or a map, or an array of them) cannot be read, or has the wrong size or layout."""


class OptionError(UserError, ValueError):
    """An option or parameter has a value outside its allowed set, or does not apply here."""


class OutputError(UserError):
    """An output cannot be written where asked (not a folder, read-only, full disk). ``stops``: no
    later write to that place can succeed either (full, read-only, no permission)."""

    def __init__(self, message: str, stops: bool = False):
        super().__init__(message)
        self.stops = stops


class OnnxRuntimeError(UserError):
    """ONNX Runtime refused to load or run a graph."""


class RequestError(UserError):
    """A request to the model server that it cannot answer: ``status`` is the HTTP status it answers with
    (400 a bad request, 404 no such model or route, 413 too large, 503 not ready or too busy)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


class OpenVINOError(UserError):
    """OpenVINO refused to compile or run a graph (precision='bfloat16')."""


@contextlib.contextmanager
def onnxruntime_errors(doing: str) -> Iterator[None]:
    """Turn ONNX Runtime's exceptions raised inside the block into one-line OnnxRuntimeErrors."""
    try:
        yield
    except ReciproCamError:
        raise
    except Exception as exc:  # onnxruntime raises its own pybind types and RuntimeError
        if not type(exc).__module__.startswith("onnxruntime") and not isinstance(exc, RuntimeError):
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise OnnxRuntimeError(f"ONNX Runtime failed while {doing}: {first}") from exc
