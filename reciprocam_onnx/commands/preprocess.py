"""``reciprocam preprocess``: images as the model's input tensors, for programs without Python."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import ReciproCamError
from ..io.images import RESIZE_MODES
from .common import (
    add_model_and_images,
    add_option_flags,
    expand_images,
    first_sentence,
    given_options,
    model_and_images,
    unique_name,
)

INPUT_SUFFIX = ".input.npy"


class Preprocess:
    """Write each image as the model's input, NAME.input.npy: [1, C, H, W] (or its NHWC layout) in the
    model's dtype, fitted and normalised exactly as `explain` does, for a program that runs the graph
    itself (examples/cpp). Bad images are reported and skipped."""

    name = "preprocess"

    @classmethod
    def register(cls, sub) -> None:
        parser = sub.add_parser(cls.name, help=first_sentence(cls.__doc__), description=cls.__doc__)
        add_model_and_images(parser, "images or folders")
        parser.add_argument("-o", "--output", type=Path, required=True, help="output folder")
        parser.add_argument("--resize", choices=RESIZE_MODES, default=RESIZE_MODES[0], help="as for explain")
        add_option_flags(parser, ("input_size",))
        parser.set_defaults(run=cls.run)

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from ..io.files import npy_writer, output_folder, write_all_atomic
        from ..io.images import preprocess

        output_folder(args.output)
        model, sources = model_and_images(args.inputs)
        image, facts = model_input(model, given_options(args).get("input_size"))
        files, failed = expand_images(sources, args.output, skip_suffix=INPUT_SUFFIX)
        names: set[str] = set()
        for path in files:
            try:
                tensor, _ = preprocess(path, image.size, facts.mean, facts.std, args.resize, image.layout, image.dtype)
                target = args.output / f"{unique_name(path.stem, names)}{INPUT_SUFFIX}"
                write_all_atomic({target: npy_writer(tensor[None])})
                print(f"{path} -> {target}")
            except ReciproCamError as exc:
                failed += 1
                print(f"skipped {path}: {exc}", file=sys.stderr)
        return 1 if failed else 0


def model_input(model: Path, input_size: tuple[int, int] | None):
    """(ImageInput, ModelInfo) of a model, split folder or fused graph, without splitting anything."""
    from ..analysis.model_info import read_model_info
    from ..contract import is_split_folder, load_split
    from ..engine.fused_graph import fused_options
    from ..graph.model import image_input, load_model

    if is_split_folder(model):
        info = load_split(model).info
        return info.image, info.model
    proto = load_model(model)
    fused = fused_options(proto)
    if fused is not None:
        return fused[1].image, fused[1].model
    facts = read_model_info(proto, model)
    return image_input(proto, input_size or facts.input_size), facts
