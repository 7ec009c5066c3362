"""``reciprocam explain-dataset``: an image collection explained as a Ray Data job (ray_dataset.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..io.images import RESIZE_MODES
from .common import add_option_flags, default_model, first_sentence, given_options
from .explain import EXPLAIN_OPTIONS


class ExplainDataset:
    """Explain every image under a folder (or listed in a file) as a Ray Data job, on a local Ray or a
    cluster: a Parquet table of results (path, target, top classes, map) in OUTPUT/results, overlays if
    asked. A rerun skips what is done; an image that fails is a row saying why, never the end of the job."""

    name = "explain-dataset"

    @classmethod
    def register(cls, sub) -> None:
        parser = sub.add_parser(cls.name, help=first_sentence(cls.__doc__), description=cls.__doc__)
        parser.add_argument("input", type=Path, help="a folder of images (searched recursively) or a list file")
        parser.add_argument("-o", "--output", type=Path, required=True, help="output folder")
        parser.add_argument(
            "--model", type=Path, default=None, help="model, fused graph or split folder (default: the demo model)"
        )
        parser.add_argument("--ray-address", default=None, help="join this Ray cluster (default: start a local Ray)")
        parser.add_argument("--workers", type=int, default=2, help="explainer actors (default 2)")
        parser.add_argument("--cpus-per-worker", type=int, default=1, help="CPUs (and threads) per actor (default 1)")
        parser.add_argument("--gpu", action="store_true", help="one GPU per actor, CUDA sessions")
        parser.add_argument("--batch-size", type=int, default=16, help="images per batch and results part")
        parser.add_argument("--overlays", action="store_true", help="also write overlays under OUTPUT/overlays")
        parser.add_argument("--top", type=int, default=5, help="classes recorded per image (default 5)")
        parser.add_argument("--resize", choices=RESIZE_MODES, default=RESIZE_MODES[0], help="as for explain")
        add_option_flags(parser, EXPLAIN_OPTIONS)
        parser.set_defaults(run=cls.run)

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from ..io.files import output_folder
        from ..ray_dataset import RESULTS, explain_dataset

        output_folder(args.output)
        model = args.model or default_model()
        print(f"model: {model}")
        counts = explain_dataset(
            args.input,
            args.output,
            model,
            given_options(args),
            ray_address=args.ray_address,
            workers=args.workers,
            cpus_per_worker=args.cpus_per_worker,
            use_gpu=args.gpu,
            batch_size=args.batch_size,
            overlays=args.overlays,
            top=args.top,
            resize=args.resize,
        )
        print(
            f"{counts['explained']} explained, {counts['failed']} failed, {counts['skipped']} done before, "
            f"of {counts['images']} images -> {args.output / RESULTS}"
        )
        return 1 if counts["failed"] else 0
