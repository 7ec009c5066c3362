"""ViT-ReciproCAM saliency maps for ONNX Vision Transformers, on ONNX Runtime alone."""
from .errors import (BlockIndexError, GraphStructureError, ImageError, ModelLoadError, NotAViTError,
                     OptionError, ReciproCamError, SplitMismatchError)
from .explainer import Explainer, Explanation
from .fused_explainer import FusedExplainer, open_explainer
from .graph.fuse import fuse
from .graph.split import load_split, save_split, split_model

__all__ = [
    "BlockIndexError", "Explainer", "Explanation", "FusedExplainer", "GraphStructureError", "ImageError",
    "ModelLoadError", "NotAViTError", "OptionError", "ReciproCamError", "SplitMismatchError", "fuse",
    "load_split", "open_explainer", "save_split", "split_model",
]
__version__ = "0.1.0"
