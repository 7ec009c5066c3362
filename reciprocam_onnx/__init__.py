"""ViT-ReciproCAM saliency maps for ONNX Vision Transformers, on ONNX Runtime alone.

The package reads as its pipeline, each layer importing only those before it:
options and errors -> io -> graph (ONNX plumbing) -> analysis -> contract ->
copies -> rewrites -> split -> engine -> evaluation -> commands.
"""

from .contract import SplitInfo, SplitModel, load_split, save_split
from .engine.base import Explanation, SaliencyExplainer
from .engine.explainer import Explainer
from .engine.fused_explainer import FusedExplainer, open_explainer
from .engine.fused_graph import fuse
from .errors import (
    BlockIndexError,
    GraphStructureError,
    ImageError,
    InternalError,
    ModelLoadError,
    NotAViTError,
    OnnxRuntimeError,
    OptionError,
    ReciproCamError,
    SplitMismatchError,
    UserError,
)
from .io.images import preprocess
from .io.overlay import overlay, save_png
from .options import Options
from .split.pipeline import split_model

__all__ = [
    "BlockIndexError",
    "Explainer",
    "Explanation",
    "FusedExplainer",
    "GraphStructureError",
    "ImageError",
    "InternalError",
    "ModelLoadError",
    "NotAViTError",
    "OnnxRuntimeError",
    "OptionError",
    "Options",
    "ReciproCamError",
    "SaliencyExplainer",
    "SplitInfo",
    "SplitMismatchError",
    "SplitModel",
    "UserError",
    "fuse",
    "load_split",
    "open_explainer",
    "overlay",
    "preprocess",
    "save_png",
    "save_split",
    "split_model",
]
__version__ = "0.1.0"
