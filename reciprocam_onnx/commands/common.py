"""Option bundles and helpers shared by the CLI verbs."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import ModelLoadError

MODEL_SUFFIXES = (".onnx",)


def add_explainer_options(parser: argparse.ArgumentParser, kernel_and_score: bool = True) -> None:
    """The ViT-ReciproCAM options of the explaining verbs (eval sets kernel and score per method)."""
    group = parser.add_argument_group("ViT-ReciproCAM options")
    group.add_argument("--block", type=int, default=None,
                       help="target block, Python-style index (default -2, the second-to-last)")
    if kernel_and_score:
        group.add_argument("--kernel", choices=["3x3", "1x1"], help="mask kernel (default 3x3)")
        group.add_argument("--score", choices=["softmax", "logits"], help="(default softmax)")
    group.add_argument("--no-cls-token", dest="cls_token", action="store_false", default=None,
                       help="zero the prefix tokens (CLS etc.) in the masked copies")
    group.add_argument("--residual", choices=["unmasked", "masked"],
                       help="mask the residual stream too (default: unmasked, as the paper)")


def add_runtime_options(parser: argparse.ArgumentParser) -> None:
    """Where and how the ONNX Runtime sessions run."""
    group = parser.add_argument_group("runtime options")
    group.add_argument("--cpu", action="store_true", help="run on the CPU even if CUDA is available")
    group.add_argument("--max-batch", type=int, default=None,
                       help="masked copies per suffix run (default: from a memory budget)")


def explainer_kwargs(args: argparse.Namespace) -> dict:
    """Keyword arguments for Explainer/fuse: only the options the user gave (else the defaults)."""
    names = ("block", "kernel", "cls_token", "score", "residual", "max_batch")
    given = {name: getattr(args, name, None) for name in names}
    if getattr(args, "cpu", False):
        given["providers"] = ["CPUExecutionProvider"]
    return {name: value for name, value in given.items() if value is not None}


def looks_like_model(path: str) -> bool:
    """True for an .onnx file or a folder written by ``reciprocam split``."""
    p = Path(path)
    return p.suffix.lower() in MODEL_SUFFIXES or (p / "split.json").is_file()


def default_model() -> Path:
    """The bundled demo model: models/manifest.json in the working folder or the checkout."""
    for root in (Path.cwd(), Path(__file__).resolve().parents[2]):
        manifest = root / "models" / "manifest.json"
        if manifest.is_file():
            data = json.loads(manifest.read_text(encoding="utf-8"))
            return manifest.parent / data["models"][data["default"]]["file"]
    raise ModelLoadError("no model given and no bundled models/manifest.json found; pass MODEL.onnx first")
