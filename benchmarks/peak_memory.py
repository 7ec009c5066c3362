"""Peak resident memory of one explain variant, in a fresh process (prints MB).

    python benchmarks/peak_memory.py MODEL.onnx VARIANT [--block -2]

VARIANT: forward, explain, explain-plain, explain-bf16, explain-plus (the reciprocam+ preset), fused
(default chunk), fused-chunked (chunks of 24) or fused-file (MODEL is a fused graph: run it).

The process imports only numpy, onnx and ONNX Runtime (no torch), builds the
variant, runs it twice on one image and prints its peak RSS (VmHWM).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import input_size, peak_rss_mb  # noqa: E402

CHUNK = 24
VARIANTS = (
    "forward",
    "explain",
    "explain-plain",
    "explain-bf16",
    "explain-plus",
    "fused",
    "fused-chunked",
    "fused-file",
)


def build(model: str, variant: str, block: int):
    """A callable running ``variant`` on one image."""
    import onnx

    from reciprocam_onnx import Explainer, FusedExplainer, fuse, open_explainer
    from reciprocam_onnx.graph.runtime import CPU, make_session

    if variant == "forward":
        session = make_session(onnx.load(model), [CPU])
        return lambda x: session.run(None, {session.get_inputs()[0].name: x})
    if variant in ("explain", "explain-plain"):
        return Explainer(model, block=block, providers=[CPU], optimize=variant == "explain").explain
    if variant == "explain-plus":
        return open_explainer(model, preset="reciprocam+", providers=[CPU]).explain
    if variant == "fused-file":
        return FusedExplainer(onnx.load(model), [CPU]).explain
    if variant == "explain-bf16":
        return Explainer(model, block=block, providers=[CPU], precision="bfloat16").explain
    chunk = CHUNK if variant == "fused-chunked" else None
    return FusedExplainer(fuse(model, block=block, chunk=chunk), [CPU]).explain


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument(
        "variant",
        choices=VARIANTS,
    )
    parser.add_argument("--block", type=int, default=-2)
    args = parser.parse_args()
    run = build(args.model, args.variant, args.block)
    image = np.random.default_rng(0).standard_normal((1, 3, *input_size(args.model)), dtype=np.float32)
    for _ in range(2):
        run(image)
    print(f"{peak_rss_mb():.0f}")


if __name__ == "__main__":
    main()
