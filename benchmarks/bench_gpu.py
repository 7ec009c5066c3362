"""CUDA check and timings: Explainer and the fused graph on CUDA vs CPU, DeiT-S and DeiT-B.

    python benchmarks/bench_gpu.py [--repeats 10] [--models deit_small_patch16_224,deit_base_patch16_224]
                                   [--images 64]

Run on a machine with onnxruntime-gpu and a GPU. Prints: the providers really
used; on the trained demo model (whose maps mean something; random-weight maps
are flat, and min-max turns rounding into large map differences), the score
and map differences CUDA float32 vs CPU and CUDA float16 vs CPU; then for
random-weight DeiT-S/B the median seconds per image for the forward pass,
Explainer.explain (rewrites on and off, float32 and float16) and the fused
graph; then throughput, explained images per second for a batch of
``--images`` images: the Explainer in float32 (TF32 off) and float16, the
fused graph, and the PyTorch reference (tests/torch_reference.py) on the same
GPU, float32 with TF32 off. Targets for DeiT-S: 1,000 images/s in float16,
300 in float32. ``--models deit_tiny_patch16_224 --images 2 --repeats 1``
checks the script on a machine without a GPU.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import median_seconds  # noqa: E402
from export.export_vit import export_onnx  # noqa: E402
from reciprocam_onnx import Explainer, FusedExplainer, fuse  # noqa: E402
from reciprocam_onnx.graph.runtime import CPU, CUDA, cuda_usable, make_session  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--models", default="deit_small_patch16_224,deit_base_patch16_224")
    parser.add_argument("--images", type=int, default=64, help="batch for the throughput rows")
    args = parser.parse_args()
    import onnxruntime as ort
    import timm
    import torch

    print(f"onnxruntime {ort.__version__}, CUDA usable: {cuda_usable()}")
    accuracy()
    folder = Path(tempfile.mkdtemp())
    for name in args.models.split(","):
        torch.manual_seed(0)
        model = timm.create_model(name, pretrained=False).eval()
        path = export_onnx(model, folder / f"{name}.onnx")
        report(name, path, args.repeats, ort)
        throughput(name, path, model, args)


def accuracy() -> None:
    """CUDA float32 / float16 against CPU float32 on the demo model and the example images."""
    from reciprocam_onnx.commands.common import default_model
    from reciprocam_onnx.io.images import preprocess

    model = default_model()
    images = np.stack([preprocess(p, (224, 224))[0] for p in sorted((ROOT / "examples" / "images").glob("*.png"))])
    cpu = Explainer(model, providers=[CPU])
    base_scores, base_maps, base_all = cpu.cell_scores(images)[1], cpu.explain(images).maps, cpu.explain_all(images)
    print(f"\ndemo model, {len(images)} example images, differences to CPU float32:")
    for label, options in (("CUDA float32", {}), ("CUDA float16", {"precision": "float16"})):
        gpu = Explainer(model, providers=[CUDA, CPU], **options)
        scores = np.abs(gpu.cell_scores(images)[1] - base_scores).max()
        maps = np.abs(gpu.explain(images).maps - base_maps)
        every = np.abs(gpu.explain_all(images) - base_all)
        print(
            f"  {label} on {gpu.device}: scores max {scores:.1e}; target maps max {maps.max():.1e} "
            f"mean {maps.mean():.1e}; all-class maps max {every.max():.1e} mean {every.mean():.1e}"
        )


def report(name: str, path: Path, repeats: int, ort) -> None:
    images = np.random.default_rng(0).standard_normal((8, 3, 224, 224), dtype=np.float32)
    one = images[:1]
    gpu = Explainer(path, providers=[CUDA, CPU])
    cpu = Explainer(path, providers=[CPU])
    print(f"\n{name}: Explainer device {gpu.device}, {gpu.max_batch} rows per run")
    diff = np.abs(gpu.explain_all(images[:2]) - cpu.explain_all(images[:2])).max()
    print(f"  max |map CUDA - map CPU| over all classes, 2 images: {diff:.2e}")
    fused = fuse(path)
    fused_gpu = FusedExplainer(fused, [CUDA, CPU])
    fdiff = np.abs(fused_gpu.explain_all(images[:2]) - cpu.explain_all(images[:2])).max()
    print(f"  max |fused CUDA - Explainer CPU|: {fdiff:.2e}")
    half = Explainer(path, providers=[CUDA, CPU], precision="float16")
    reference = gpu.explain_all(images[:4])
    error = np.abs(half.explain_all(images[:4]) - reference)
    print(f"  float16 vs float32 maps, all classes, 4 images: max {error.max():.2e}, mean {error.mean():.2e}")
    forward = make_session(__import__("onnx").load(str(path)), [CUDA, CPU])
    plain = Explainer(path, providers=[CUDA, CPU], optimize=False)
    rows = {
        "forward pass (1 image)": median_seconds(lambda: forward.run(None, {"input": one}), repeats, 3),
        "Explainer.explain, rewrites off": median_seconds(lambda: plain.explain(one), repeats, 2),
        "Explainer.explain, rewrites on": median_seconds(lambda: gpu.explain(one), repeats, 2),
        "Explainer.explain, rewrites on, float16": median_seconds(lambda: half.explain(one), repeats, 2),
        "fused graph (1 image)": median_seconds(lambda: fused_gpu.explain(one), repeats, 2),
        "Explainer.explain, 8 images, per image": median_seconds(lambda: gpu.explain(images), repeats, 2) / 8,
    }
    base = rows["forward pass (1 image)"]
    for label, seconds in rows.items():
        print(f"  {label:42s} {seconds * 1000:9.2f} ms  {seconds / base:7.1f}x forward")


def throughput(name: str, path: Path, model, args) -> None:
    """Explained images per second for one batch of ``args.images`` images, and the PyTorch reference."""
    import torch

    from tests.torch_reference import reference_explain

    images = np.random.default_rng(1).standard_normal((args.images, 3, 224, 224), dtype=np.float32)
    explainers = {
        "Explainer, float32": Explainer(path, providers=[CUDA, CPU]),
        "Explainer, float16": Explainer(path, providers=[CUDA, CPU], precision="float16"),
        "fused graph, float32": FusedExplainer(fuse(path), [CUDA, CPU]),
    }
    print(f"\n{name}: throughput, {args.images} images per call")
    for label, explainer in explainers.items():
        seconds = median_seconds(lambda e=explainer: e.explain(images), args.repeats, 1)
        print(f"  {label:42s} {args.images / seconds:9.1f} images/s")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # float32 as ours
    reference = model.to(device)
    block = reference.blocks[-2]
    batch = images[: max(1, args.images // 8)]  # the reference runs every copy through the whole model

    def run() -> None:
        with torch.no_grad():
            reference_explain(reference, block, block.norm1, batch, (14, 14), 1)
        if device == "cuda":
            torch.cuda.synchronize()

    seconds = median_seconds(run, args.repeats, 1)
    print(f"  {'PyTorch reference, float32 (' + device + ')':42s} {len(batch) / seconds:9.1f} images/s")


if __name__ == "__main__":
    main()
