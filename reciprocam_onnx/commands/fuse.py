"""``reciprocam fuse``: one ONNX graph returning logits and saliency maps."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..contract import FUSED_OUTPUTS
from ..options import FUSED
from .common import add_option_flags, first_sentence, given_options


class Fuse:
    """Write MODEL plus its ViT-ReciproCAM branch as one ONNX graph with outputs logits [B,C],
    saliency [B,C,h,w] (float32, min-max per image and class) and saliency_u8."""

    name = "fuse"

    @classmethod
    def register(cls, sub) -> None:
        parser = sub.add_parser(cls.name, help=first_sentence(cls.__doc__), description=cls.__doc__)
        parser.add_argument("model", type=Path, help="ViT classifier, .onnx")
        parser.add_argument("-o", "--output", type=str, required=True, help="fused .onnx to write")
        add_option_flags(parser, (*FUSED, "input_size"))
        parser.set_defaults(run=cls.run)

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from ..engine.fused_graph import fuse
        from ..io.files import output_file, write_bytes_atomic

        output = output_file(args.output, inputs=(args.model,))  # before any work
        fused = fuse(args.model, **given_options(args))
        write_bytes_atomic(output, fused.SerializeToString())
        print(f"wrote {args.output}: outputs {', '.join(FUSED_OUTPUTS)} ({output.stat().st_size / 1e6:.1f} MB)")
        return 0
