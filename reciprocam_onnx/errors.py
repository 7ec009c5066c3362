"""The one exception family of reciprocam-onnx: catch ``ReciproCamError``."""


class ReciproCamError(Exception):
    """Base class of every error this package raises on purpose."""


class ModelLoadError(ReciproCamError):
    """The model file is missing, unreadable or not a valid ONNX model."""


class NotAViTError(ReciproCamError):
    """The graph holds no pre-norm transformer blocks (a CNN, say)."""


class GraphStructureError(ReciproCamError):
    """The graph has blocks, but a fact the explainer needs cannot be derived."""


class BlockIndexError(ReciproCamError):
    """The requested target block does not exist."""


class SplitMismatchError(ReciproCamError):
    """suffix(prefix(x)) does not reproduce the original model's logits."""


class ImageError(ReciproCamError):
    """An image cannot be read, or has the wrong size or layout."""


class OptionError(ReciproCamError):
    """An option has a value outside its allowed set."""
