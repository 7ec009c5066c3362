"""Synthetic datasets used to train and check the demo model."""

from reciprocam_onnx.datasets.shapes import (
    CLASS_NAMES,
    ShapeSample,
    TwoShapeSample,
    generate,
    make_sample,
    make_two_object_sample,
    save_samples,
)

__all__ = [
    "CLASS_NAMES",
    "ShapeSample",
    "TwoShapeSample",
    "generate",
    "make_sample",
    "make_two_object_sample",
    "save_samples",
]
