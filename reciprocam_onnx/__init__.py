"""ViT-ReciproCAM saliency maps for ONNX Vision Transformers, on ONNX Runtime alone.

The package reads as its pipeline, each layer importing only those before it:
options and errors -> io -> graph (ONNX plumbing) -> analysis -> contract ->
copies -> rewrites -> split -> engine -> evaluation, ray_dataset, serve -> commands.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

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

# imported on first use, so that importing the package (or its CLI) loads no ONNX or NumPy until needed
_LAZY = {
    "SplitInfo": ".contract",
    "SplitModel": ".contract",
    "load_split": ".contract",
    "save_split": ".contract",
    "AttentionRollout": ".engine.rollout",
    "Explanation": ".engine.base",
    "SaliencyExplainer": ".engine.base",
    "Explainer": ".engine.explainer",
    "FusedExplainer": ".engine.fused_explainer",
    "MultiTapExplainer": ".engine.taps",
    "open_explainer": ".engine.fused_explainer",
    "fuse": ".engine.fused_graph",
    "preprocess": ".io.images",
    "overlay": ".io.overlay",
    "save_png": ".io.overlay",
    "Options": ".options",
    "split_model": ".split.pipeline",
}

if TYPE_CHECKING:
    from .contract import SplitInfo, SplitModel, load_split, save_split
    from .engine.base import Explanation, SaliencyExplainer
    from .engine.explainer import Explainer
    from .engine.fused_explainer import FusedExplainer, open_explainer
    from .engine.fused_graph import fuse
    from .engine.rollout import AttentionRollout
    from .engine.taps import MultiTapExplainer
    from .io.images import preprocess
    from .io.overlay import overlay, save_png
    from .options import Options
    from .split.pipeline import split_model


def __getattr__(name: str) -> object:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "AttentionRollout",
    "BlockIndexError",
    "Explainer",
    "Explanation",
    "FusedExplainer",
    "GraphStructureError",
    "ImageError",
    "InternalError",
    "ModelLoadError",
    "MultiTapExplainer",
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
