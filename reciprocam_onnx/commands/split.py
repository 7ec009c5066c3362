"""``reciprocam split``: cut a model into prefix and suffix graphs."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..options import CUT, Options
from .common import add_option_flags, first_sentence, given_options


class Split:
    """Split MODEL at a block into prefix.onnx, suffix.onnx and split.json (verified numerically)."""

    name = "split"

    @classmethod
    def register(cls, sub) -> None:
        parser = sub.add_parser(cls.name, help=first_sentence(cls.__doc__), description=cls.__doc__)
        parser.add_argument("model", type=Path, help="ViT classifier, .onnx")
        parser.add_argument("-o", "--output", type=Path, required=True, help="output folder")
        add_option_flags(parser, CUT)
        parser.set_defaults(run=cls.run)

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from ..contract import save_split
        from ..io.files import output_folder
        from ..split.pipeline import split_model

        options = Options(**given_options(args))
        output_folder(args.output)  # before any work
        split = split_model(args.model, options.block, optimize=options.optimize, input_size=options.input_size)
        folder = save_split(split, args.output)
        info = split.info
        stage = f" in its last stage ({info.all_blocks} blocks in all)" if (info.all_blocks or 0) > info.blocks else ""
        print(
            f"split {args.model} at block {info.block} of {info.blocks}{stage} "
            f"({info.tokens} tokens = {info.prefix_tokens} prefix + {info.grid[0]}x{info.grid[1]} grid, "
            f"width {info.width}, {_output(info)}) -> {folder}"
        )
        image = info.image
        print(f"input {image.name!r}: {image.layout} {image.dtype} {'x'.join(map(str, image.shape(1)[1:]))}")
        print(f"rewrites: {info.rewrites_line()}")
        return 0


def _output(info) -> str:
    if info.classes:
        return f"{info.classes} classes"
    return f"output {info.output_name!r} of shape {['B', *(info.output_shape or ())]}"
