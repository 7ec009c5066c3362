"""Throughput of `explain-dataset` on a local Ray: images per second with 1 and 2 workers.

    python benchmarks/ray_throughput.py [MODEL] [--n 96] [--repeats 3]

Each worker has one CPU and one ONNX Runtime thread (RECIPROCAM_THREADS). Before each timed
run, an untimed run warms Ray's worker processes; the timed run goes into a fresh output folder,
so every image is explained. Quotes the median over ``--repeats`` runs, and the single-process
`Explainer` on the same images in the same process as the baseline. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    import ray

    from reciprocam_onnx import Explainer
    from reciprocam_onnx.evaluation.shapes import generate, save_samples
    from reciprocam_onnx.ray_dataset import explain_dataset

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    root = Path(__file__).resolve().parents[1]
    parser.add_argument("model", nargs="?", type=Path, default=root / "models" / "shapes_vit.onnx")
    parser.add_argument("--n", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ray-throughput-"))
    save_samples(generate(args.n, seed=11), work / "images")
    paths = sorted((work / "images").glob("*.png"))

    explainer = Explainer(args.model)
    inputs = [explainer.info.preprocess(p)[0][None] for p in paths]
    alone = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        for x in inputs:
            explainer.explain(x)
        alone.append(args.n / (time.perf_counter() - start))

    ray.init(include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    ray.data.DataContext.get_current().enable_progress_bars = False
    rows = [f"| single process (Explainer, all cores) | {statistics.median(alone):.1f} | 1.00 |"]
    for workers in (1, 2):
        rates = []
        for k in range(args.repeats):
            common = dict(workers=workers, batch_size=16, show_progress=False)
            explain_dataset(work / "images", work / f"warm-{workers}-{k}", args.model, **common)
            start = time.perf_counter()
            counts = explain_dataset(work / "images", work / f"run-{workers}-{k}", args.model, **common)
            assert counts["explained"] == args.n, counts
            rates.append(args.n / (time.perf_counter() - start))
        rate = statistics.median(rates)
        rows.append(f"| Ray Data, {workers} worker(s) x 1 CPU | {rate:.1f} | {rate / statistics.median(alone):.2f} |")
    ray.shutdown()
    print(f"{args.n} images of {args.model.name}, median of {args.repeats} runs\n")
    print("| run | images/s | vs single process |\n|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
