"""``reciprocam fuse``: one ONNX graph returning logits and saliency maps."""
from __future__ import annotations

import argparse
from pathlib import Path

from .common import add_explainer_options, explainer_kwargs


class Fuse:
    """Write MODEL plus its ViT-ReciproCAM branch as one ONNX graph with outputs logits [B,C],
    saliency [B,C,h,w] (float32, min-max per image and class) and saliency_u8."""

    name = "fuse"

    @classmethod
    def register(cls, sub) -> None:
        parser = sub.add_parser(cls.name, help=cls.__doc__.splitlines()[0], description=cls.__doc__)
        parser.add_argument("model", type=Path, help="ViT classifier, .onnx")
        parser.add_argument("-o", "--output", type=Path, required=True, help="fused .onnx to write")
        parser.add_argument("--chunk", type=int, default=None,
                            help="run the masked copies this many cells at a time in an ONNX Loop "
                                 "(bounds peak memory; default: all at once)")
        add_explainer_options(parser)
        parser.set_defaults(run=cls.run)

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from ..fileio import write_bytes_atomic
        from ..graph.fuse import fuse

        options = explainer_kwargs(args)
        options.pop("max_batch", None)
        fused = fuse(args.model, chunk=args.chunk, **options)
        write_bytes_atomic(args.output, fused.SerializeToString())
        print(f"wrote {args.output}: outputs logits, saliency, saliency_u8 "
              f"({args.output.stat().st_size / 1e6:.1f} MB)")
        return 0
