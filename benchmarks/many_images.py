"""A folder of images end to end: `reciprocam explain FOLDER` against the Explainer alone, images/s.

    python benchmarks/many_images.py [--n 64] [--repeats 3] [--model models/shapes_vit.onnx]

The folder holds ``--n`` shapes images (224x224 PNG). "Explainer alone" explains
the already decoded and preprocessed tensors one at a time, as the CLI does;
"end to end" is the CLI verb in this process: decode, preprocess, explain,
render and encode the overlay, write map and overlay, print. Its per-image
cost is the difference between a run over the folder and a run over one image
(which leaves out opening the model, reported on its own). Medians of
``--repeats`` runs.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import median_seconds  # noqa: E402
from reciprocam_onnx import Explainer  # noqa: E402
from reciprocam_onnx.cli import main as cli  # noqa: E402
from reciprocam_onnx.evaluation.shapes import generate, save_samples  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default=str(ROOT / "models" / "shapes_vit.onnx"))
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp())
    save_samples(generate(args.n, seed=11), folder / "images")
    files = sorted((folder / "images").glob("*.png"))
    explainer = Explainer(args.model)
    tensors = [explainer.info.preprocess(path)[0][None] for path in files]

    def alone() -> None:
        for tensor in tensors:
            explainer.explain(tensor)

    def end_to_end(images: str) -> float:
        def run() -> None:
            with contextlib.redirect_stdout(io.StringIO()):
                assert cli(["explain", args.model, images, "-o", str(folder / "out")]) == 0

        return median_seconds(run, args.repeats)

    each = median_seconds(alone, args.repeats) / len(files)
    one, every = end_to_end(str(files[0])), end_to_end(str(folder / "images"))
    cli_each = (every - one) / (len(files) - 1)
    print(f"{len(files)} images, {args.model}, medians of {args.repeats}")
    print(f"  Explainer alone          {1 / each:7.1f} images/s")
    print(f"  reciprocam explain       {1 / cli_each:7.1f} images/s  ({cli_each / each:.2f}x the Explainer's time)")
    print(f"  opening the model (CLI)  {one - cli_each:7.2f} s")


if __name__ == "__main__":
    main()
