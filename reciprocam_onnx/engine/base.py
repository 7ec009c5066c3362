"""What every explainer offers (``SaliencyExplainer``), its result, and the checks they share."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ..contract import SplitInfo
from ..errors import GraphStructureError, ImageError, OptionError
from ..graph.model import ImageInput
from ..options import Options

Targets = Sequence[int] | np.ndarray | None

log = logging.getLogger(__name__)

# Normalised images (mean/std per channel) stay within a few units of 0: ImageNet's within [-2.2, 2.7].
RAW_PIXELS_ABOVE = 20.0


@dataclass(frozen=True)
class Explanation:
    """Result of ``explain`` for a batch of B images."""

    maps: np.ndarray  # float32 [B, h, w] in [0, 1], for each image's target class
    targets: np.ndarray  # int64 [B]
    scores: np.ndarray  # [B, C], the unmasked model's scores
    every: np.ndarray | None = None  # float32 [B, C, h, w]: every class's map, when asked (all_classes=True)


class SaliencyExplainer(Protocol):
    """The surface shared by ``Explainer`` (prefix + suffix) and ``FusedExplainer`` (one graph)."""

    info: SplitInfo
    options: Options

    def explain(self, images: np.ndarray, targets: Targets = None, *, all_classes: bool = False) -> Explanation:
        """Maps [B, h, w] for the given targets, or for each image's predicted class; with ``all_classes``,
        every class's map too (``Explanation.every``), from the same runs."""
        ...

    def explain_all(self, images: np.ndarray) -> np.ndarray:
        """Maps for every class: float32 [B, C, h, w]."""
        ...

    def predict(self, images: np.ndarray) -> np.ndarray:
        """The unmasked model's scores [B, C]."""
        ...


def check_class_scores(info: SplitInfo) -> None:
    """GraphStructureError unless the model outputs class scores [B, C], which the explainers read."""
    if not info.classes:
        shape = ["B", *(info.output_shape or ())]
        raise GraphStructureError(
            f"the model's output {info.output_name!r} is {shape}, not class scores [B, C]: ViT-ReciproCAM "
            "reads a class score per masked copy (`reciprocam split` still cuts the model)"
        )


def check_images(images: np.ndarray, image: ImageInput) -> np.ndarray:
    """``images`` as a contiguous batch the model takes (its size, layout and dtype), else ImageError.

    Float models take normalised pixels of any float type (cast to the model's);
    integer (uint8) models take raw pixels of their own type.
    """
    try:
        array = np.asarray(images)
    except (TypeError, ValueError) as exc:  # ragged nested lists, say
        what = type(images).__name__
        raise ImageError(f"images must be an array [B, ...] of the model's input; got {what} ({exc})") from None
    if array.dtype == object or array.ndim == 0:
        raise ImageError(f"images must be a numeric array [B, ...] of the model's input; got {type(images).__name__}")
    if array.ndim == 3:
        array = array[None]
    if array.ndim == 4 and len(array) == 0:
        raise ImageError("no images given (an empty batch)")
    expected = image.shape(len(array))[1:]
    kind = "raw pixels" if image.takes_raw_pixels else "normalised"
    what = f"[B, {', '.join(map(str, expected))}] {image.dtype} ({kind}, {image.layout})"
    if array.ndim != 4 or tuple(array.shape[1:]) != tuple(expected):
        raise ImageError(f"images must be {what}; got shape {list(np.shape(images))}")
    wrong_type = array.dtype != np.dtype(image.dtype) if image.takes_raw_pixels else array.dtype.kind != "f"
    if wrong_type:
        raise ImageError(f"images must be {what}; got {array.dtype} (reciprocam_onnx.preprocess makes them)")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        bad = sorted({int(i) for i in np.argwhere(~np.isfinite(array))[:, 0]})
        raise ImageError(f"images {bad} contain NaN or infinite values")
    if not image.takes_raw_pixels and np.abs(array).max() > RAW_PIXELS_ABOVE:
        log.warning(
            "these images look like raw pixels (values up to %.0f): the model takes normalised images "
            "(reciprocam_onnx.preprocess, info.preprocess)",
            float(np.abs(array).max()),
        )
    return np.ascontiguousarray(array, dtype=image.dtype)


def choose_targets(targets: Targets, scores: np.ndarray, classes: int) -> np.ndarray:
    """The given targets (checked), else the argmax of ``scores`` per image."""
    if targets is None:
        return scores.argmax(axis=1).astype(np.int64)
    given = np.asarray(targets).reshape(-1)
    if given.dtype.kind not in "iu" and not (given.dtype.kind == "f" and np.all(given == np.round(given))):
        raise OptionError(f"targets must be whole class indices; got {given.tolist()}")
    chosen = given.astype(np.int64)
    if chosen.shape != (len(scores),):
        raise OptionError(f"need one target per image: {len(scores)} images, {chosen.size} targets")
    if chosen.min() < 0 or chosen.max() >= classes:
        raise OptionError(f"targets must lie in 0..{classes - 1}; got {chosen.tolist()}")
    return chosen
