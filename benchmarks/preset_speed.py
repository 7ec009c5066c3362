"""The paper's method and reciprocam+, in the Explainer and fused, in one run: opening, seconds per image,
peak memory, and a cached second opening.

    python benchmarks/preset_speed.py [--models demo,deit_small_patch16_224] [--memory vit_small_patch16_384]
        [--images 4] [--rounds 3]

Models other than ``demo`` (the bundled model) are timm exports with random weights. Per model:

* opening (split, verification, sessions): cold, with the split cache off, and cached (a second opening
  reading the split written by the first), each the median of ``--rounds``;
* seconds per image, the median over ``--rounds`` rounds in which the four methods take turns on the same
  ``--images`` images (so a change in the machine's load falls on all of them); fused graphs with their
  default chunk (fuse's memory budget), written to a file first;
* a cached opening plus its first explanation, against one explanation of an open explainer;
* peak memory of each method in a fresh process (benchmarks/peak_memory.py), opening included for the
  Explainer, the fused graph read from its file.

``--memory`` models get the peak memory rows only (ViT-S/16 at 384 px: 576 copies per image).
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_explain import export  # noqa: E402
from benchmarks.common import input_size  # noqa: E402

METHODS = ("paper", "reciprocam+", "paper fused", "reciprocam+ fused")
MEMORY_VARIANTS = {"paper": "explain", "reciprocam+": "explain-plus", "paper fused": "fused-file"}
MEMORY_VARIANTS["reciprocam+ fused"] = "fused-file"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="demo,deit_small_patch16_224")
    parser.add_argument("--memory", default="vit_small_patch16_384")
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="preset-speed-") as tmp:
        folder = Path(tmp)
        for name in filter(None, args.models.split(",")):
            path = model_path(name, folder)
            fused = write_fused(path, folder)
            print(f"\n## {name}")
            report_speed(path, fused, args, folder / "cache")
            report_memory(path, fused)
        for name in filter(None, args.memory.split(",")):
            path = model_path(name, folder)
            print(f"\n## {name} (memory)")
            report_memory(path, write_fused(path, folder))


def model_path(name: str, folder: Path) -> Path:
    """The demo model, or timm's ``name`` exported; the objects torch and timm leave behind are frozen out of
    the garbage collector's sight, which the engine calls between graphs (graph/runtime.release_memory): a
    process that explains has no torch in it."""
    if name == "demo":
        return ROOT / "models" / "shapes_vit.onnx"
    path = export(name, folder)[0]
    gc.collect()
    gc.freeze()
    return path


def write_fused(path: Path, folder: Path) -> dict[str, Path]:
    """The paper's and the preset's fused graphs of ``path``, default options, as files."""
    import onnx

    from reciprocam_onnx import fuse

    files = {}
    for method, preset in (("paper fused", None), ("reciprocam+ fused", "reciprocam+")):
        files[method] = folder / f"{path.stem}.{method.replace(' ', '-')}.onnx"
        onnx.save(fuse(path, preset=preset, cache=False), files[method])
    return files


def opener(path: Path, fused: dict[str, Path], method: str):
    """A function opening ``method`` on ``path`` (the fused graphs from their files)."""
    from reciprocam_onnx import open_explainer
    from reciprocam_onnx.graph.runtime import CPU

    if method in fused:
        return lambda: open_explainer(fused[method], providers=[CPU])
    preset = "reciprocam+" if method == "reciprocam+" else None
    return lambda: open_explainer(path, preset=preset, providers=[CPU])


def report_speed(path: Path, fused: dict[str, Path], args, cache: Path) -> None:
    images = np.random.default_rng(0).standard_normal((args.images, 3, *input_size(path)), dtype=np.float32)
    opening: dict[str, list[float]] = {"paper": [], "reciprocam+": [], "paper cached": [], "reciprocam+ cached": []}
    for _ in range(args.rounds):
        for method in ("paper", "reciprocam+"):
            os.environ["RECIPROCAM_CACHE"] = "off"
            opening[method].append(timed(opener(path, fused, method))[1])
            os.environ["RECIPROCAM_CACHE"] = str(cache)
            timed(opener(path, fused, method))  # writes the entry (if not there yet)
            opening[f"{method} cached"].append(timed(opener(path, fused, method))[1])
    explainers = {method: opener(path, fused, method)() for method in METHODS}
    seconds: dict[str, list[float]] = {method: [] for method in METHODS}
    for explainer in explainers.values():
        explainer.explain(images[:1])  # warm-up: arenas
    for _ in range(args.rounds):
        for method, explainer in explainers.items():
            seconds[method].append(timed(lambda e=explainer: e.explain(images))[1] / len(images))
    per_image = {method: statistics.median(values) for method, values in seconds.items()}
    first_map = []
    for _ in range(args.rounds):  # cache warm: open, then the first explanation of one image
        begin = time.perf_counter()
        opener(path, fused, "paper")().explain(images[:1])
        first_map.append(time.perf_counter() - begin)
    one = statistics.median(timed(lambda: explainers["paper"].explain(images[:1]))[1] for _ in range(args.rounds))
    os.environ["RECIPROCAM_CACHE"] = "off"
    paper_open = statistics.median(opening["paper"])
    print(f"{len(images)} images per round, {args.rounds} rounds; medians\n")
    print("| method | s/image | x paper | opening s | x paper's opening | cached opening s |")
    print("|---|---|---|---|---|---|")
    for method in METHODS:
        cold = opening.get(method)
        row = f"| {method} | {per_image[method]:.3f} | {per_image[method] / per_image['paper']:.2f} |"
        if cold is None:
            print(row + " | | |")
            continue
        cached = statistics.median(opening[f"{method} cached"])
        median = statistics.median(cold)
        print(row + f" {median:.2f} | {median / paper_open:.2f} | {cached:.2f} |")
    ratio = statistics.median(first_map) / one
    print(
        f"\ncached opening + first map of one image: {statistics.median(first_map):.2f} s; one explanation "
        f"{one:.2f} s; ratio {ratio:.2f}"
    )


def report_memory(path: Path, fused: dict[str, Path]) -> None:
    print("\n| method | peak RSS MB (fresh process) |\n|---|---|")
    for method, variant in MEMORY_VARIANTS.items():
        model = fused[method] if variant == "fused-file" else path
        command = [sys.executable, str(ROOT / "benchmarks" / "peak_memory.py"), str(model), variant]
        done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "RECIPROCAM_CACHE": "off"})
        value = done.stdout.strip() if done.returncode == 0 else f"failed (exit {done.returncode})"
        print(f"| {method} | {value} |")


def timed(fn) -> tuple[object, float]:
    begin = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - begin


if __name__ == "__main__":
    main()
