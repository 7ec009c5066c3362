"""Explainer.explain vs the plain forward pass vs the PyTorch reference, one image on CPU.

    python benchmarks/bench_explain.py [--model deit_small_patch16_224] [--repeats 5]

Exports the timm model with random weights, then reports median seconds over
``--repeats`` runs, ratios to the forward pass, and peak RSS during each
variant (VmHWM reset before each, so it includes what the process already holds).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import measure  # noqa: E402
from export.export_vit import export_onnx  # noqa: E402
from reciprocam_onnx import Explainer  # noqa: E402
from reciprocam_onnx.runtime import physical_cores, session_options  # noqa: E402
from tests.torch_reference import reference_explain  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="deit_small_patch16_224")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    import timm

    torch.manual_seed(0)
    torch.set_num_threads(physical_cores())
    model = timm.create_model(args.model, pretrained=False).eval()
    path = export_onnx(model, Path(tempfile.mkdtemp()) / f"{args.model}.onnx")
    image = np.random.default_rng(0).standard_normal((1, 3, 224, 224), dtype=np.float32)

    forward = ort.InferenceSession(str(path), session_options(), providers=["CPUExecutionProvider"])
    explainer = Explainer(path, providers=["CPUExecutionProvider"])
    block, norm = model.blocks[-2], model.blocks[-2].norm1
    info = explainer.info
    rows = {
        "onnxruntime forward pass": measure(lambda: forward.run(None, {"input": image}), args.repeats),
        "Explainer.explain": measure(lambda: explainer.explain(image), args.repeats),
        "PyTorch reference (hooks)": measure(
            lambda: reference_explain(model, block, norm, image, info.grid, info.prefix_tokens), args.repeats),
    }
    base = rows["onnxruntime forward pass"][0]
    print(f"{args.model}, 1 image 224x224, CPU, {physical_cores()} threads, median of {args.repeats}")
    print(f"{'variant':32s} {'seconds':>9s} {'x forward':>10s} {'peak RSS MB':>12s}")
    for name, (seconds, peak) in rows.items():
        print(f"{name:32s} {seconds:9.4f} {seconds / base:10.1f} {peak:12.0f}")
    ref = rows["PyTorch reference (hooks)"][0]
    print(f"Explainer.explain is {ref / rows['Explainer.explain'][0]:.2f}x faster than the PyTorch reference")


if __name__ == "__main__":
    main()
