"""From logits to scores to maps: softmax in float64, per-map min-max."""

from __future__ import annotations

import numpy as np

from ..errors import ImageError
from ..options import SCORES, WINDOWS


def first_few(indices) -> str:
    """Image indices for a message: the first five, then '...'."""
    listed = [int(k) for k in indices]
    return ", ".join(map(str, listed[:5])) + (", ..." if len(listed) > 5 else "")


def check_finite(logits: np.ndarray) -> None:
    """ImageError naming the images (first axis) whose logits hold NaN or infinity: a map made from
    them would be meaningless (float16 overflow, or corrupt weights)."""
    bad = np.flatnonzero(~np.isfinite(logits.reshape(len(logits), -1)).all(axis=1))
    if bad.size:
        raise ImageError(
            f"the model returned NaN or infinite scores for image(s) {first_few(bad)} of {len(logits)}; no map can be "
            "made from them (a float16 model that overflows, or corrupt weights)"
        )


def to_scores(logits: np.ndarray, score: str) -> np.ndarray:
    """Softmax over the last axis (float64), or the logits themselves (``score``, Options.score).

    float64 because a confident model's top score sits within float32 rounding
    of 1.0, where the masked copies' differences (the map) would vanish.
    """
    if score == SCORES[1]:
        return logits
    wide = logits.astype(np.float64)
    shifted = np.exp(wide - wide.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def evidence(cell_scores: np.ndarray, window: str) -> np.ndarray:
    """The cells' scores oriented so that higher means more evidence for the class: as they are
    when each copy keeps its window, negated when it removes it (a lower score then)."""
    return cell_scores if window == WINDOWS[0] else -cell_scores


def minmax_normalise(maps: np.ndarray) -> np.ndarray:
    """Scale each map (last two axes) to [0, 1] as (m - min) / (max - min).

    Works on a single ``[h, w]`` map or any stack ``[..., h, w]``. A constant
    map becomes all zeros, so the result is never NaN. Computes in float64 (scores
    near 1.0 differ below float32 resolution) and returns float32.
    """
    m = np.asarray(maps, dtype=np.float64)
    if m.ndim < 2:
        raise ImageError(f"expected maps with at least 2 dims, got shape {m.shape}")
    lo = m.min(axis=(-2, -1), keepdims=True)
    span = m.max(axis=(-2, -1), keepdims=True) - lo
    safe = np.where(span > 0, span, 1.0)
    return np.where(span > 0, (m - lo) / safe, 0.0).astype(np.float32)


def unresolved(logits: np.ndarray, dtype: str) -> np.ndarray:
    """Which images' maps the model's precision cannot resolve: [B] bool, from logits [B, 1 + cells, C].

    For each image's predicted class: its cells' logits take fewer than a
    quarter as many distinct values as there are cells (quantized outputs), or,
    in float16, spread over less than one rounding step at their magnitude (on
    the demo model in float16, the maps so flagged correlate with the float32
    maps at Pearson 0.93 on average, the others at 0.996: docs/design.md).
    """
    top = logits[:, 0].argmax(axis=1)
    cells = logits[np.arange(len(logits)), 1:, top]
    distinct = np.array([len(np.unique(row)) for row in cells])
    coarse = distinct < cells.shape[1] / 4
    if np.dtype(dtype) != np.float16:
        return coarse
    spread = cells.max(axis=1) - cells.min(axis=1)
    step = np.spacing(np.abs(cells).max(axis=1).astype(np.float16)).astype(np.float64)
    return coarse | (spread < step)


def maps_u8(maps: np.ndarray) -> np.ndarray:
    """Maps in [0, 1] as uint8, round(255 * m) with ties to even: the fused graph's ``saliency_u8``."""
    return np.round(np.asarray(maps, np.float32) * np.float32(255)).astype(np.uint8)
