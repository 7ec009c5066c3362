"""``reciprocam eval``: the paper's metrics for ViT-ReciproCAM and baselines on a labelled dataset."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import OptionError
from ..io.images import RESIZE_MODES
from ..options import Options
from .common import add_option_flags, add_runtime_flags, default_model, first_sentence, given_options, providers
from .explain import EXPLAIN_OPTIONS

# the methods set the other options
# eval compares kernels, windows and read-outs itself (its methods)
EVAL_OPTIONS = tuple(name for name in EXPLAIN_OPTIONS if name not in ("kernel", "window", "score"))

DEFAULT_SHAPES = 500


class Evaluate:
    """Evaluate saliency methods (pointing game, AD/Inc/Coh/Com/ADCC, deletion/insertion AUC) on
    the synthetic shapes dataset or a folder of images with a labels.csv; writes report.json,
    report.md and examples.png and prints the table. Progress is saved after every batch
    (OUTPUT/checkpoint.npz): the same command run again after an interruption continues where it
    stopped."""

    name = "eval"

    @classmethod
    def register(cls, sub) -> None:
        parser = sub.add_parser(cls.name, help=first_sentence(cls.__doc__), description=cls.__doc__)
        parser.add_argument(
            "model",
            nargs="?",
            type=Path,
            default=None,
            help="ViT classifier .onnx or split folder (default: the bundled demo model)",
        )
        parser.add_argument(
            "--dataset", default="shapes", help="'shapes' (generated on the fly) or a folder of images (default shapes)"
        )
        parser.add_argument(
            "--n",
            type=int,
            default=None,
            help=f"images to evaluate (default {DEFAULT_SHAPES} for shapes, all for a folder)",
        )
        parser.add_argument("--seed", type=int, default=0, help="shapes stream, RISE masks, random maps (default 0)")
        parser.add_argument(
            "--labels-csv", type=Path, default=None, help="file,label[,x0,y0,x1,y1] rows (default FOLDER/labels.csv)"
        )
        parser.add_argument(
            "--two-objects", action="store_true", help="shapes with two objects: adds the discriminative pointing game"
        )
        parser.add_argument(
            "--resize",
            choices=RESIZE_MODES,
            default=RESIZE_MODES[0],
            help="fit folder images to the model (default crop)",
        )
        parser.add_argument(
            "--methods",
            default=None,
            help="comma-separated, from reciprocam-3x3, reciprocam-1x1, reciprocam+, rise, rollout, random, centre "
            "(default all that apply)",
        )
        parser.add_argument("--rise-masks", type=int, default=2000, help="RISE masks (default 2000)")
        parser.add_argument(
            "--rise-coherency-masks",
            type=int,
            default=None,
            help="RISE masks for the coherency pass, which explains each explanation image again (default: "
            "--rise-masks); the report says how many were used",
        )
        parser.add_argument(
            "--auc-steps", type=int, default=None, help="deletion/insertion steps (default one grid cell per step)"
        )
        parser.add_argument("--batch-size", type=int, default=16, help="images per batch (default 16)")
        parser.add_argument("-o", "--output", type=Path, required=True, help="report folder")
        add_option_flags(parser, EVAL_OPTIONS)
        add_runtime_flags(parser)
        parser.set_defaults(run=cls.run)

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from ..evaluation import CHECKPOINT, EvalModel, evaluate, report_markdown, write_report
        from ..io.files import output_folder

        checkpoint = output_folder(args.output) / CHECKPOINT  # before any work: the report must have somewhere to go
        model = EvalModel(args.model or default_model(), Options(**given_options(args)), providers(args))
        methods = [name.strip() for name in args.methods.split(",") if name.strip()] if args.methods else None
        result = evaluate(
            model,
            _dataset(args, model),
            methods,
            rise_masks=args.rise_masks,
            rise_coherency_masks=args.rise_coherency_masks,
            batch_size=args.batch_size,
            seed=args.seed,
            auc_steps=args.auc_steps,
            checkpoint=checkpoint,
        )
        paths = write_report(result, args.output)
        checkpoint.unlink(missing_ok=True)
        print(report_markdown(result))
        print("wrote " + ", ".join(str(path) for path in paths))
        return 0


def _dataset(args: argparse.Namespace, model):
    from ..evaluation import folder_dataset, shapes_dataset

    if args.n is not None and args.n < 1:
        raise OptionError(f"--n must be at least 1, not {args.n}")
    info = model.info
    size, mean, std = info.input_shape[1:], info.model.mean, info.model.std
    if args.dataset == "shapes":
        return shapes_dataset(args.n or DEFAULT_SHAPES, args.seed, size, mean, std, args.two_objects)
    folder = Path(args.dataset)
    if not folder.is_dir():
        raise OptionError(f"--dataset must be 'shapes' or a folder of images; {folder} is not a folder")
    if args.two_objects:
        raise OptionError("--two-objects is for --dataset shapes; a folder's labels.csv gives its boxes")
    return folder_dataset(folder, args.labels_csv, size, mean, std, args.resize, args.n)
