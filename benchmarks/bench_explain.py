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

from benchmarks.common import input_size, median_seconds  # noqa: E402
from benchmarks.openvino_baseline import make_openvino_explainer, openvino_available, openvino_version  # noqa: E402
from benchmarks.peak_memory import build  # noqa: E402
from reciprocam_onnx import Explainer  # noqa: E402
from reciprocam_onnx.graph.runtime import physical_cores  # noqa: E402

# OpenVINO XAI 1.1's ViT-ReciproCAM masks the residual stream too and reads logits: with these options our
# maps equal its maps (Pearson 1.0 on a sensitised DeiT-S; docs/benchmarks.md)
OV_XAI_OPTIONS = {"residual": "masked", "score": "logits"}
MEMORY_VARIANTS = {"forward", "explain", "explain-plain", "explain-bf16", "fused", "fused-chunked"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="deit_small_patch16_224,deit_base_patch16_224")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-reference", action="store_true", help="skip the (slow) PyTorch reference")
    parser.add_argument("--no-openvino", action="store_true")
    parser.add_argument("--fidelity-images", type=int, default=8, help="images for the bfloat16 fidelity rows")
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
        if block_fidelity := fidelity(path, use_ov, args.fidelity_images):
            print(
                f"\n{name}, block -2: bfloat16 maps against float32 maps, Pearson mean / min over "
                f"{args.fidelity_images} images (same targets: {block_fidelity.pop('same targets')})"
            )
            for label, (mean, low) in block_fidelity.items():
                print(f"  {label:44s} {mean:.4f} / {low:.4f}")


def export(name: str, folder: Path):
    """timm's ``name`` with random weights, its tapped blocks made sensitive as the tests make them
    (tests/zoo.py): time does not depend on the weights, but bfloat16's fidelity check does (a flat map is
    one rounding erases, and it would be recomputed in float32)."""
    from export.export_vit import export_onnx
    from tests.zoo import Family, _timm, _timm_blocks, _timm_heads, make_model

    model = make_model(Family(name, _timm(name), _timm_blocks, _timm_heads))
    return export_onnx(model, folder / f"{name}.onnx", tuple(model.patch_embed.img_size)), model


def measure(path: Path, model, block: int, args, use_ov: bool) -> dict[str, tuple[float, float | None]]:
    image = np.random.default_rng(0).standard_normal((1, 3, *input_size(path)), dtype=np.float32)
    variants = {
        "forward": "onnxruntime forward pass",
        "explain-plain": "Explainer, rewrites off",
        "explain": "Explainer (default)",
        "explain-bf16": "Explainer, bfloat16",
        "fused": "fused graph (default chunk: fuse's memory budget)",
        "fused-chunked": "fused graph, Loop chunks of 24",
    }
    if block == -1:
        variants = {k: v for k, v in variants.items() if k in ("forward", "explain", "explain-bf16")}
    rows = {}
    for key, label in variants.items():
        run = build(str(path), key, block)
        rows[label] = (median_seconds(lambda run=run: run(image), args.repeats), peak_memory(path, key, block))
    for precision in ("float32", "bfloat16"):  # the same maps as OpenVINO XAI 1.1 computes (see OV_XAI_OPTIONS)
        ex = Explainer(path, block=block, providers=["CPUExecutionProvider"], precision=precision, **OV_XAI_OPTIONS)
        label = f"Explainer, OV XAI's options, {precision}"
        rows[label] = (median_seconds(lambda ex=ex: ex.explain(image), args.repeats), None)
    if not args.no_reference and block == -2 and "small" in path.name:
        rows["PyTorch reference (hooks)"] = (reference_seconds(model, image, args.repeats), None)
    if use_ov:
        for precision in ("f32", "default"):
            ov = make_openvino_explainer(str(path), blocks_after_tap=-block, precision=precision)
            label = f"OpenVINO XAI {ov.inference_precision}"
            rows[label] = (median_seconds(lambda ov=ov: ov(image), args.repeats), None)
    return rows


def fidelity(path: Path, use_ov: bool, count: int) -> dict:
    """Pearson of bfloat16 maps with float32 maps of the same explainer on ``count`` random images: ours
    (precision='bfloat16', its check on) with our default options and with OpenVINO XAI's, and OpenVINO
    XAI's own (default precision against f32)."""
    images = np.random.default_rng(1).standard_normal((count, 3, *input_size(path)), dtype=np.float32)
    rows: dict = {}
    for label, options in (("default options", {}), ("OV XAI's options", OV_XAI_OPTIONS)):
        exact = Explainer(path, block=-2, providers=["CPUExecutionProvider"], **options)
        reference, reduced = exact.explain(images), exact.with_options(precision="bfloat16").explain(images)
        rows[f"reciprocam-onnx bfloat16, {label}"] = pearson(reduced.maps, reference.maps)
        rows.setdefault("same targets", f"{(reference.targets == reduced.targets).mean():.0%}")
    if use_ov:
        f32, bf16 = (make_openvino_explainer(str(path), 2, precision) for precision in ("f32", "default"))
        maps = [(f32(image[None])[0], bf16(image[None])[0]) for image in images]
        rows[f"OpenVINO XAI {bf16.inference_precision} vs its f32"] = pearson(*map(np.stack, zip(*maps)))
    return rows


def pearson(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(mean, min) Pearson correlation of maps a[i] and b[i]."""
    values = [np.corrcoef(x.ravel(), y.ravel())[0, 1] for x, y in zip(a, b)]
    return float(np.mean(values)), float(np.min(values))


def reference_seconds(model, image: np.ndarray, repeats: int) -> float:
    import torch

    from tests.torch_reference import reference_explain

    torch.set_num_threads(physical_cores())
    block = model.blocks[-2]
    grid = tuple(size // 16 for size in image.shape[2:])
    return median_seconds(lambda: reference_explain(model, block, block.norm1, image, grid, 1), repeats)


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
