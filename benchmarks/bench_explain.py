"""ViT-ReciproCAM on CPU, one image: forward pass, Explainer (rewrites off/on), fused graph,
the PyTorch reference and OpenVINO XAI (when installed), measured in one process.

    python benchmarks/bench_explain.py [--models deit_small_patch16_224,deit_base_patch16_224]
                                       [--repeats 5] [--no-reference] [--no-openvino]

Models are timm exports with random weights. Times are medians over
``--repeats`` runs after one warm-up; ratios are to the forward pass and to
OpenVINO XAI measured in the same run. Peak memory is each variant's peak RSS
in a fresh process that imports no torch (benchmarks/peak_memory.py).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import median_seconds  # noqa: E402
from benchmarks.openvino_baseline import make_openvino_explainer, openvino_available, openvino_version  # noqa: E402
from benchmarks.peak_memory import build  # noqa: E402
from reciprocam_onnx.graph.runtime import physical_cores  # noqa: E402

MEMORY_VARIANTS = {"forward", "explain", "explain-plain", "fused", "fused-chunked"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="deit_small_patch16_224,deit_base_patch16_224")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-reference", action="store_true", help="skip the (slow) PyTorch reference")
    parser.add_argument("--no-openvino", action="store_true")
    args = parser.parse_args()
    use_ov = openvino_available() and not args.no_openvino
    print(
        f"CPU, {physical_cores()} threads; medians of {args.repeats}; "
        f"{openvino_version() if use_ov else 'OpenVINO XAI not measured'}"
    )
    folder = Path(tempfile.mkdtemp())
    for name in args.models.split(","):
        path, model = export(name, folder)
        for block in (-2, -1):
            if block == -1 and "small" not in name:
                continue
            rows = measure(path, model, block, args, use_ov)
            print_table(f"{name}, block {block} ({-block} block(s) after the tap)", rows)


def export(name: str, folder: Path):
    import timm
    import torch

    from export.export_vit import export_onnx

    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False).eval()
    return export_onnx(model, folder / f"{name}.onnx"), model


def measure(path: Path, model, block: int, args, use_ov: bool) -> dict[str, tuple[float, float | None]]:
    image = np.random.default_rng(0).standard_normal((1, 3, 224, 224), dtype=np.float32)
    variants = {
        "forward": "onnxruntime forward pass",
        "explain-plain": "Explainer, rewrites off",
        "explain": "Explainer (default)",
        "fused": "fused graph",
        "fused-chunked": "fused graph, Loop chunks of 24",
    }
    if block == -1:
        variants = {k: v for k, v in variants.items() if k in ("forward", "explain")}
    rows = {}
    for key, label in variants.items():
        run = build(str(path), key, block)
        rows[label] = (median_seconds(lambda run=run: run(image), args.repeats), peak_memory(path, key, block))
    if not args.no_reference and block == -2 and "small" in path.name:
        rows["PyTorch reference (hooks)"] = (reference_seconds(model, image, args.repeats), None)
    if use_ov:
        for precision in ("f32", "default"):
            ov = make_openvino_explainer(str(path), blocks_after_tap=-block, precision=precision)
            label = f"OpenVINO XAI {ov.inference_precision}"
            rows[label] = (median_seconds(lambda ov=ov: ov(image), args.repeats), None)
    return rows


def reference_seconds(model, image: np.ndarray, repeats: int) -> float:
    import torch

    from tests.torch_reference import reference_explain

    torch.set_num_threads(physical_cores())
    block = model.blocks[-2]
    return median_seconds(lambda: reference_explain(model, block, block.norm1, image, (14, 14), 1), repeats)


def peak_memory(path: Path, variant: str, block: int) -> float | None:
    if variant not in MEMORY_VARIANTS:
        return None
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "peak_memory.py"), str(path), variant, "--block", str(block)],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.strip().splitlines()[-1])


def print_table(title: str, rows: dict[str, tuple[float, float | None]]) -> None:
    forward = rows["onnxruntime forward pass"][0]
    ov = {k.split()[-1]: v[0] for k, v in rows.items() if k.startswith("OpenVINO XAI")}
    print(f"\n{title}")
    header = f"{'variant':34s} {'seconds':>8s} {'x forward':>9s}"
    header += "".join(f" {'x OV ' + p:>9s}" for p in ov) + f" {'peak MB':>8s}"
    print(header)
    for label, (seconds, peak) in rows.items():
        line = f"{label:34s} {seconds:8.3f} {seconds / forward:9.1f}"
        line += "".join(f" {seconds / v:9.2f}" for v in ov.values())
        print(line + f" {peak:8.0f}" if peak is not None else line + f" {'-':>8s}")


if __name__ == "__main__":
    main()
