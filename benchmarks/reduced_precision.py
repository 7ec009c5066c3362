"""Fidelity of reduced precision: float16 and int8 (QDQ, dynamic) models, and bfloat16 copies, against float32.

    python benchmarks/reduced_precision.py [MODEL.onnx] [--n 200] [--seed 3000017] [-o DIR]

MODEL defaults to the bundled demo model. Its float16 conversion
(onnxruntime.transformers.float16, float32 inputs) and its int8 quantizations
(onnxruntime.quantization: static QDQ calibrated on 32 shapes images of seed
CALIBRATION_SEED, and dynamic) are explained on ``--n`` held-out shapes images
(a seed no test uses) at block -2. For each variant: accuracy, the pointing
game, and the Pearson correlation of its target maps with the float32 model's
(same targets: the float32 model's predictions). The float32 model is also
explained with ``precision="bfloat16"``, its check recomputing the maps rounding
erased and only warning about them; the last column counts the maps the check
flagged. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CALIBRATION_SEED = 2000003


def variants(model: Path, folder: Path) -> dict[str, Path]:
    """The float32 model and its float16, int8 QDQ and int8 dynamic versions, written into ``folder``."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process
    from onnxruntime.transformers.float16 import convert_float_to_float16

    from reciprocam_onnx import Explainer
    from reciprocam_onnx.evaluation import shapes_dataset

    info = Explainer(model).info
    calibration = [
        item.tensor[None]
        for item in shapes_dataset(32, CALIBRATION_SEED, info.input_shape[1:], info.model.mean, info.model.std)
    ]

    class Images(CalibrationDataReader):
        def __init__(self):
            self.batches = iter({info.input_name: x} for x in calibration)

        def get_next(self):
            return next(self.batches, None)

    out = {"float32": model, "float16": folder / "float16.onnx", "int8 QDQ": folder / "qdq.onnx"}
    out["int8 dynamic"] = folder / "dynamic.onnx"
    onnx.save(convert_float_to_float16(onnx.load(model), keep_io_types=True), out["float16"])
    prepared = folder / "prepared.onnx"
    quant_pre_process(str(model), str(prepared))
    quantize_static(str(prepared), str(out["int8 QDQ"]), Images(), quant_format=QuantFormat.QDQ)
    quantize_dynamic(str(prepared), str(out["int8 dynamic"]))
    return out


def main() -> None:
    from reciprocam_onnx import Explainer
    from reciprocam_onnx.commands.common import default_model
    from reciprocam_onnx.evaluation import shapes_dataset
    from reciprocam_onnx.evaluation.metrics import pointing_game

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", type=Path, default=None)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--seed", type=int, default=3000017)
    args = parser.parse_args()
    model = args.model or default_model()
    with tempfile.TemporaryDirectory() as folder:
        paths = variants(model, Path(folder))
        explainers = {name: Explainer(path) for name, path in paths.items()}
        for unresolved in ("recompute", "warn"):
            bf16 = explainers["float32"].with_options(precision="bfloat16", unresolved=unresolved)
            explainers[f"bfloat16 copies, check: {unresolved}"] = bf16
        info = explainers["float32"].info
        items = list(shapes_dataset(args.n, args.seed, info.input_shape[1:], info.model.mean, info.model.std))
        images = np.stack([item.tensor for item in items])
        labels = np.array([item.label for item in items])
        boxes = [item.box_for(label) for item, label in zip(items, labels)]
        reference = explainers["float32"].explain(images, labels).maps
        print(f"{model.name}, block {info.block}, {len(items)} shapes images of seed {args.seed}, true-class maps\n")
        print("| variant | accuracy | pointing game | Pearson with float32 maps (mean / min) | flagged by the check |")
        print("|---|---|---|---|---|")
        flagged = _Flagged()
        logging.getLogger("reciprocam_onnx").addHandler(flagged)
        for name, ex in explainers.items():
            flagged.count = 0
            out = ex.explain(images, labels)
            accuracy = np.mean(out.scores.argmax(axis=1) == labels)
            hits = np.mean([pointing_game(m, box, info.input_shape[1:]) for m, box in zip(out.maps, boxes)])
            pearson = [_pearson(a, b) for a, b in zip(out.maps, reference)]
            print(
                f"| {name} | {accuracy:.3f} | {hits:.3f} | {np.mean(pearson):.4f} / {np.min(pearson):.4f} "
                f"| {flagged.count if 'bfloat16' in name else '-'} |"
            )


class _Flagged(logging.Handler):
    """Counts the maps the bfloat16 check flags (its warning: 'erased the maps of N of M images')."""

    count = 0

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "erased the maps of" in message:
            self.count += int(message.split("erased the maps of ")[1].split()[0])


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1]) if a.std() and b.std() else 0.0


if __name__ == "__main__":
    main()
