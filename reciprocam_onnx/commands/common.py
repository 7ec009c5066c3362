"""Option bundles and helpers shared by the CLI verbs."""

from __future__ import annotations

import argparse
import json
from dataclasses import fields
from pathlib import Path
from typing import Any

from ..errors import ModelLoadError
from ..options import Options

MODEL_SUFFIXES = (".onnx",)


def add_option_flags(parser: argparse.ArgumentParser, names: tuple[str, ...]) -> None:
    """One flag per option in ``names``, generated from ``Options``: --NAME VALUE, or --no-NAME for
    options that default to True. Flags not given stay None (the option keeps its default)."""
    group = parser.add_argument_group("ViT-ReciproCAM options (docs/algorithm.md)")
    for item in fields(Options):
        if item.name not in names:
            continue
        flag, help = item.name.replace("_", "-"), item.metadata["help"]
        if item.default is True:
            group.add_argument(
                f"--no-{flag}", dest=item.name, action="store_false", default=None, help=f"do not {help}"
            )
        elif item.metadata["choices"] is not None:
            group.add_argument(f"--{flag}", choices=item.metadata["choices"], help=f"{help} (default {item.default})")
        elif item.metadata["metavar"] is not None:
            metavar = item.metadata["metavar"]
            group.add_argument(f"--{flag}", type=int, nargs=len(metavar), metavar=metavar, help=help)
        else:
            default = "" if item.default is None else f" (default {item.default})"
            group.add_argument(f"--{flag}", type=int, metavar="N", help=f"{help}{default}")


def add_runtime_flags(parser: argparse.ArgumentParser) -> None:
    """Where the ONNX Runtime sessions run."""
    group = parser.add_argument_group("runtime options")
    group.add_argument("--cpu", action="store_true", help="run on the CPU even if CUDA is available")


def given_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options the user gave on the command line, by name."""
    return {
        item.name: getattr(args, item.name) for item in fields(Options) if getattr(args, item.name, None) is not None
    }


def providers(args: argparse.Namespace) -> list[str] | None:
    """["CPUExecutionProvider"] for --cpu, else None (CUDA when it really starts)."""
    return ["CPUExecutionProvider"] if getattr(args, "cpu", False) else None


def looks_like_model(path: str) -> bool:
    """True for a folder written by ``reciprocam split``, an .onnx path, or any other existing file that is
    not an image or a .npy tensor (a model under another name: loading it says what is wrong, if anything)."""
    from ..io.images import IMAGE_SUFFIXES

    p = Path(path)
    if p.is_dir():
        return (p / "split.json").is_file()
    if p.suffix.lower() in MODEL_SUFFIXES:
        return True
    return p.is_file() and p.suffix.lower() not in (*IMAGE_SUFFIXES, ".npy")


def default_model() -> Path:
    """The bundled demo model: models/manifest.json in the working folder or the checkout."""
    for root in (Path.cwd(), Path(__file__).resolve().parents[2]):
        manifest = root / "models" / "manifest.json"
        if manifest.is_file():
            data = json.loads(manifest.read_text(encoding="utf-8"))
            return manifest.parent / data["models"][data["default"]]["file"]
    raise ModelLoadError("no model given and no bundled models/manifest.json found; pass MODEL.onnx first")
