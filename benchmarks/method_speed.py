"""Seconds per image of the evaluation's methods, each timed in the same process, with ratios to RISE.

    python benchmarks/method_speed.py [--model models/shapes_vit.onnx] [--methods reciprocam-3x3,reciprocam+,rise]
        [--n 32] [--batch-size 16] [--seed 1000003] [--rise-masks 2000] [--repeats 3]

Each method explains the same ``--n`` held-out shapes images in batches of
``--batch-size`` (as ``reciprocam eval`` does) through the evaluation's own
method functions; the methods take turns batch by batch, so a change in the
machine's load falls on all of them. Reported: the median over batches of
seconds per image (every method run ``--repeats`` times per batch, RISE once),
and each method's speed-up over RISE.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reciprocam_onnx.evaluation import EvalModel, shapes_dataset  # noqa: E402
from reciprocam_onnx.evaluation.methods import MethodSettings, make_methods  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(ROOT / "models" / "shapes_vit.onnx"))
    parser.add_argument("--methods", default="reciprocam-3x3,reciprocam+,rise")
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=1000003)
    parser.add_argument("--rise-masks", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    model = EvalModel(args.model)
    names = args.methods.split(",")
    methods = make_methods(model, names, MethodSettings(args.rise_masks, args.seed, args.batch_size))
    info = model.info
    items = list(shapes_dataset(args.n, args.seed, info.input_shape[1:], info.model.mean, info.model.std))
    per_image: dict[str, list[float]] = {name: [] for name in names}
    for start in range(0, len(items), args.batch_size):
        batch = items[start : start + args.batch_size]
        images = np.stack([item.tensor for item in batch])
        targets = np.array([item.label for item in batch], np.int64)
        for name, method in methods.items():
            repeats = 1 if name == "rise" else args.repeats
            if start == 0 and name != "rise":
                method.maps(images, targets)  # warm-up: sessions and arenas
            times = []
            for _ in range(repeats):
                begin = time.perf_counter()
                method.maps(images, targets)
                times.append(time.perf_counter() - begin)
            per_image[name].append(statistics.median(times) / len(batch))
        print(f"{start + len(batch)}/{len(items)} images", file=sys.stderr)
    medians = {name: statistics.median(values) for name, values in per_image.items()}
    print(f"model {args.model}, {len(items)} images, batches of {args.batch_size}, RISE {args.rise_masks} masks")
    print("| method | s/image (median over batches) | times faster than RISE |")
    print("|---|---|---|")
    for name, seconds in medians.items():
        ratio = f"{medians['rise'] / seconds:.1f}" if "rise" in medians else "–"
        print(f"| {name} | {seconds:.4f} | {ratio} |")


if __name__ == "__main__":
    main()
