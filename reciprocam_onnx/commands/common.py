"""Option bundles and helpers shared by the CLI verbs."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

from ..errors import ImageError, ModelLoadError
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


def add_model_and_images(parser: argparse.ArgumentParser, images: str) -> None:
    """The positional [MODEL] IMAGE... arguments (read back with model_and_images); ``images`` says what
    the images may be."""
    parser.add_argument(
        "inputs",
        nargs="+",
        metavar="[MODEL] IMAGE",
        help=f"model (.onnx, fused .onnx or split folder; default: the bundled demo model), then {images}",
    )


def model_and_images(inputs: list[str]) -> tuple[Path, list[Path]]:
    """([MODEL] IMAGE...) -> (the model, or the bundled one when the first input is not a model; the images)."""
    if looks_like_model(inputs[0]):
        return Path(inputs[0]), [Path(p) for p in inputs[1:]]
    return default_model(), [Path(p) for p in inputs]


def expand_images(sources: list[Path], output: Path, skip_suffix: str) -> tuple[list[Path], int]:
    """Image files from files and folders, and how many sources were missing or empty (each reported
    on stderr). In the output folder, files ending in ``skip_suffix`` (the command's own) are not inputs."""
    from ..io.images import list_images

    if not sources:
        raise ImageError("no images given")
    files, missing = [], 0
    for source in sources:
        found = list_images(source) if source.is_dir() else [source] if source.is_file() or source.is_symlink() else []
        if source.is_dir() and source.resolve() == output.resolve():
            found = [path for path in found if not path.name.endswith(skip_suffix)]
        if not found:
            missing += 1
            print(f"skipped {source}: {'no images in folder' if source.is_dir() else 'not found'}", file=sys.stderr)
        files.extend(found)
    return files, missing


def unique_name(stem: str, used: set[str]) -> str:
    """``stem``, or stem-2, stem-3, ... when an earlier input had the same stem."""
    name, k = stem, 1
    while name in used:
        k += 1
        name = f"{stem}-{k}"
    used.add(name)
    return name


def first_sentence(doc: str | None) -> str:
    """A verb's one-line help: its docstring's first sentence, without the full stop."""
    text = " ".join((doc or "").split())
    return text.split(". ")[0].split(": ")[0].rstrip(".")
