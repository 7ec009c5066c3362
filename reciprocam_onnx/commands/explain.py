"""``reciprocam explain``: saliency maps and overlays for image files."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from ..errors import ImageError, OptionError, OutputError, ReciproCamError
from ..io.images import RESIZE_MODES, load_npy, picture_of
from ..options import PRESETS
from .common import (
    add_model_and_images,
    add_option_flags,
    add_runtime_flags,
    expand_images,
    first_sentence,
    given_options,
    model_and_images,
    providers,
    unique_name,
)

OVERLAY_SUFFIX = ".overlay.png"

EXPLAIN_OPTIONS = (
    "block",
    "kernel",
    "window",
    "cls_token",
    "score",
    "residual",
    "optimize",
    "precision",
    "unresolved",
    "max_batch",
    "input_size",
    "cache",
)


class Explain:
    """Explain images with ViT-ReciproCAM: writes NAME.overlay.png and NAME.map.npy per image
    and prints the top-5 classes. A folder explains every image in it; bad images are reported
    and skipped, and the exit code is 1 if any failed."""

    name = "explain"

    @classmethod
    def register(cls, sub) -> None:
        parser = sub.add_parser(cls.name, help=first_sentence(cls.__doc__), description=cls.__doc__)
        add_model_and_images(parser, "image files, folders or preprocessed .npy tensors")
        parser.add_argument("-o", "--output", type=Path, required=True, help="output folder")
        parser.add_argument("--target", type=int, default=None, help="class to explain (default: predicted)")
        parser.add_argument("--labels", type=Path, default=None, help="class names, one per line")
        parser.add_argument(
            "--resize",
            choices=RESIZE_MODES,
            default=RESIZE_MODES[0],
            help="fit images to the model: shorter side + centre crop (default), "
            "plain resize, or none (sizes must match)",
        )
        parser.add_argument("--top", type=int, default=5, help="classes to print per image (default 5)")
        parser.add_argument(
            "--preset",
            choices=tuple(PRESETS),
            default=None,
            help="a named method: paper (the defaults) or reciprocam+ (four taps, localises better; "
            "docs/evaluation.md); the options it sets cannot be given too",
        )
        add_option_flags(parser, EXPLAIN_OPTIONS)
        add_runtime_flags(parser)
        parser.set_defaults(run=cls.run)

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from ..engine.fused_explainer import open_explainer
        from ..io.files import output_folder
        from ..io.labels import read_labels
        from ..io.progress import progress

        output_folder(args.output)  # before any work: a place that takes files
        if args.top < 1:
            raise OptionError(f"--top must be at least 1, not {args.top}")
        model, sources = model_and_images(args.inputs)
        explainer = open_explainer(model, providers=providers(args), preset=args.preset, **given_options(args))
        bundled = (
            " (the bundled demo model: give MODEL first to explain another)" if model != Path(args.inputs[0]) else ""
        )
        print(f"model: {model}{bundled}")
        labels = read_labels(args.labels) if args.labels else explainer.info.model.labels
        _check_run_options(args, explainer.info.classes, labels)
        files, missing = expand_images(sources, args.output, skip_suffix=OVERLAY_SUFFIX)
        failed = 0
        names: set[str] = set()
        for path in progress(files, len(files), "explaining"):
            try:
                _explain_one(explainer, path, args, labels, unique_name(path.stem, names))
            except OutputError as exc:
                failed += 1
                if exc.stops:  # a full or read-only disk: no later image can be written either
                    done = len(names) - failed
                    print(f"stopped: {exc}; {done} of {len(files)} images explained", file=sys.stderr)
                    return 1
                print(f"skipped {path}: {exc}", file=sys.stderr)
            except ReciproCamError as exc:
                failed += 1
                print(f"skipped {path}: {exc}", file=sys.stderr)
        if missing or failed:
            print(f"{missing + failed} inputs failed, {len(files) - failed} explained", file=sys.stderr)
            return 1
        return 0


def _check_run_options(args: argparse.Namespace, classes: int, labels) -> None:
    """--target and --labels against the model, before any image is computed."""
    if args.target is not None and not 0 <= args.target < classes:
        raise OptionError(f"--target must lie in 0..{classes - 1} (the model has {classes} classes), not {args.target}")
    if args.labels is not None and labels is not None and len(labels) != classes:
        raise OptionError(f"{args.labels} names {len(labels)} classes; the model has {classes}")


def _explain_one(explainer, path: Path, args, labels, name: str) -> None:
    from ..io.files import bytes_writer, npy_writer, write_all_atomic
    from ..io.overlay import overlay, png_bytes

    tensor, display = _load(explainer, path, args.resize)
    targets = None if args.target is None else [args.target]
    out = explainer.explain(tensor[None], targets=targets)
    picture = png_bytes(overlay(display, out.maps[0]))
    overlay_path, map_path = args.output / f"{name}{OVERLAY_SUFFIX}", args.output / f"{name}.map.npy"
    write_all_atomic(  # the pair, or neither
        {map_path: npy_writer(out.maps[0]), overlay_path: bytes_writer(picture)}
    )
    print(_summary(path, overlay_path, out, labels, args.top))


def _load(explainer, path: Path, resize: str) -> tuple[np.ndarray, np.ndarray]:
    """(one model input, RGB picture for the overlay) from an image or .npy file
    (a .npy holds one normalised float [3, H, W] tensor)."""
    info = explainer.info
    mean, std = info.model.mean, info.model.std
    if path.suffix.lower() != ".npy":
        return info.preprocess(path, resize)
    if info.image.takes_raw_pixels or info.input_layout != "NCHW":
        raise ImageError(f"{path}: .npy tensors are for float NCHW models; give this model an image file")
    tensor = load_npy(path, info.input_shape)
    return tensor, picture_of(tensor, mean, std)


def _summary(path: Path, written: Path, out, labels, top: int) -> str:
    scores = out.scores[0]
    order = np.argsort(-scores)[:top]

    def name(k: int) -> str:
        return labels[k] if labels is not None and k < len(labels) else str(k)

    ranked = ", ".join(f"{name(k)} {scores[k]:.3f}" for k in order)
    return f"{path} -> {written}\n  target: {name(int(out.targets[0]))}\n  top-{len(order)}: {ranked}"
