"""``reciprocam fuse``: one ONNX graph returning logits and saliency maps, or a Triton model repository."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..contract import FUSED_OUTPUTS
from ..errors import OptionError
from ..options import FUSED, PRESETS
from .common import add_option_flags, first_sentence, given_options


class Fuse:
    """Write MODEL plus its ViT-ReciproCAM branch as one ONNX graph with outputs logits [B,C],
    saliency [B,C,h,w] (float32, min-max per image and class) and saliency_u8; with --triton-repo,
    as a model of a Triton model repository (config.pbtxt, 1/model.onnx, labels.txt)."""

    name = "fuse"

    @classmethod
    def register(cls, sub) -> None:
        parser = sub.add_parser(cls.name, help=first_sentence(cls.__doc__), description=cls.__doc__)
        parser.add_argument("model", type=Path, help="ViT classifier, .onnx")
        parser.add_argument("-o", "--output", type=str, default=None, help="fused .onnx to write")
        triton = parser.add_argument_group("Triton model repository (docs/serving.md)")
        triton.add_argument("--triton-repo", type=Path, default=None, metavar="DIR", help="write DIR/NAME/... instead")
        triton.add_argument("--name", default=None, help="the model's name in the repository (default: the file's)")
        triton.add_argument("--max-batch-size", type=int, default=8, help="images per batch (default 8)")
        triton.add_argument("--instances", type=int, default=1, help="model instances (default 1)")
        triton.add_argument("--gpu", action="store_true", help="instances on GPUs (default: CPUs)")
        parser.add_argument(
            "--preset",
            choices=tuple(PRESETS),
            default=None,
            help="a named method, as for explain: reciprocam+ runs its four taps in the graph and returns "
            "their combined map; the options it sets cannot be given too",
        )
        add_option_flags(parser, (*FUSED, "input_size", "cache"))
        parser.set_defaults(run=cls.run)

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from ..engine.fused_graph import fuse
        from ..io.files import output_file, write_bytes_atomic
        from ..options import resolve

        if (args.output is None) == (args.triton_repo is None):
            raise OptionError("give -o OUT.onnx or --triton-repo DIR (one of them)")
        if args.triton_repo is not None:
            from ..serve.triton import name_of, write_triton_repository

            folder = write_triton_repository(
                args.model,
                args.triton_repo,
                args.name or name_of(args.model),
                resolve(**given_options(args)),
                max_batch_size=args.max_batch_size,
                instances=args.instances,
                gpu=args.gpu,
                preset=args.preset,
            )
            print(f"wrote {folder}: config.pbtxt and 1/model.onnx (Triton's onnxruntime backend)")
            return 0
        output = output_file(args.output, inputs=(args.model,))  # before any work
        fused = fuse(args.model, preset=args.preset, **given_options(args))
        write_bytes_atomic(output, fused.SerializeToString())
        print(f"wrote {args.output}: outputs {', '.join(FUSED_OUTPUTS)} ({output.stat().st_size / 1e6:.1f} MB)")
        return 0
