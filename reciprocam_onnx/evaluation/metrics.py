"""Evaluation metrics for saliency maps, computed on a score function only.

Conventions used throughout:

* images are float32 ``[B, 3, H, W]`` (one image: ``[3, H, W]``) already
  normalised, so 0 is the dataset mean colour;
* maps are float32 grid maps ``[h, w]`` (stacks ``[B, h, w]``) in ``[0, 1]``;
* a score function (:data:`ScoreFn`) maps ``[N, 3, H, W]`` images to softmax
  scores ``[N, C]``; it is always called with at most ``batch_size`` images;
* all metrics are returned as fractions in ``[0, 1]``, never percentages.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import cv2
import numpy as np

from ..errors import ImageError, OptionError
from ..io.overlay import upsample_map  # noqa: F401  (part of the metrics API)

logger = logging.getLogger(__name__)

ScoreFn = Callable[[np.ndarray], np.ndarray]
ExplainFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
Box = Sequence[int]

_EPS = 1e-12


# --------------------------------------------------------------------------
# Score-function plumbing
# --------------------------------------------------------------------------
def call_score_fn(score_fn: ScoreFn, batch: np.ndarray) -> np.ndarray:
    """Call ``score_fn`` on one batch and check it returns ``[N, C]`` scores."""
    scores = np.asarray(score_fn(np.ascontiguousarray(batch, dtype=np.float32)))
    if scores.ndim != 2 or scores.shape[0] != batch.shape[0]:
        raise ImageError(f"score_fn returned shape {scores.shape} for a batch of {batch.shape[0]}")
    return scores.astype(np.float32, copy=False)


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise OptionError(f"batch_size must be >= 1, got {batch_size}")


# --------------------------------------------------------------------------
# Map helpers
# --------------------------------------------------------------------------
def _explanation_images(images: np.ndarray, maps: np.ndarray) -> np.ndarray:
    """E = x * up(M): pixels with map 0 become 0, i.e. the dataset mean."""
    size = images.shape[-2:]
    ups = np.stack([upsample_map(m, size) for m in maps])
    return (images * ups[:, None]).astype(np.float32)


# --------------------------------------------------------------------------
# Faithfulness metrics over a set of images
# --------------------------------------------------------------------------
def average_drop(y: np.ndarray, o: np.ndarray) -> float:
    """Average Drop: mean(max(0, y - o) / y); ``y`` is guarded against 0."""
    y = np.asarray(y, dtype=np.float64)
    o = np.asarray(o, dtype=np.float64)
    return float(np.mean(np.maximum(0.0, y - o) / np.maximum(y, _EPS)))


def increase(y: np.ndarray, o: np.ndarray) -> float:
    """Increase in confidence: fraction of images with ``o > y``."""
    return float(np.mean(np.asarray(o) > np.asarray(y)))


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two maps; 0 when either map is constant."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    a = a - a.mean()
    b = b - b.mean()
    denom = np.sqrt(np.sum(a * a) * np.sum(b * b))
    if denom <= 0.0:
        return 0.0
    return float(np.clip(np.sum(a * b) / denom, -1.0, 1.0))


def coherency(maps: np.ndarray, maps_e: np.ndarray) -> float:
    """Coherency: mean over images of (1 + pearson(M(x), M(E))) / 2.

    The Pearson correlation is undefined when a map is constant; it is then
    taken as 0 (per-image coherency 0.5), so the result is never NaN.
    """
    if np.shape(maps) != np.shape(maps_e):
        raise ImageError(f"shape mismatch {np.shape(maps)} vs {np.shape(maps_e)}")
    return float(np.mean([(1.0 + _pearson(a, b)) / 2.0 for a, b in zip(maps, maps_e)]))


def complexity(maps: np.ndarray) -> float:
    """Complexity: mean over images of the mean map value."""
    return float(np.mean(np.asarray(maps, dtype=np.float64)))


def adcc(ad: float, coh: float, com: float) -> float:
    """ADCC = 3 / (1/Coh + 1/(1 - Com) + 1/(1 - AD)).

    All inputs are fractions in [0, 1] (not percentages; a ValueError is raised
    otherwise). A zero term (Coh = 0, Com = 1 or AD = 1) gives the harmonic
    mean's limit, 0.
    """
    terms = (coh, 1.0 - com, 1.0 - ad)
    if not all(0.0 <= v <= 1.0 for v in (ad, coh, com)):
        raise OptionError(f"adcc expects fractions in [0, 1], got ad={ad}, coh={coh}, com={com}")
    if min(terms) <= 0.0:
        return 0.0
    return float(3.0 / sum(1.0 / t for t in terms))


def explanation_metrics(
    score_fn: ScoreFn,
    images: np.ndarray,
    maps: np.ndarray,
    targets: np.ndarray,
    batch_size: int = 64,
    explain_fn: ExplainFn | None = None,
) -> dict[str, float]:
    """AD, Inc, Coh, Com and ADCC (fractions) for ``maps`` of ``images``.

    E = images * up(maps) is built and scored batch by batch. Coherency needs
    the maps of E, so ``explain_fn(E, targets) -> [b, h, w]`` is called on each
    batch; without it ``coherency`` and ``adcc`` are NaN.
    """
    images, maps, targets = _check_set(images, maps, targets)
    y, o, maps_e = _score_explanations(score_fn, images, maps, targets, batch_size, explain_fn)
    ad, com = average_drop(y, o), complexity(maps)
    if maps_e is None:
        coh = adcc_value = float("nan")
    else:
        coh = coherency(maps, maps_e)
        adcc_value = adcc(ad, coh, com)
    result = {"average_drop": ad, "increase": increase(y, o), "coherency": coh, "complexity": com, "adcc": adcc_value}
    logger.debug("explanation metrics over %d images: %s", len(images), result)
    return result


def _score_explanations(
    score_fn: ScoreFn,
    images: np.ndarray,
    maps: np.ndarray,
    targets: np.ndarray,
    batch_size: int,
    explain_fn: ExplainFn | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Target scores y (images) and o (E), plus the maps of E when ``explain_fn`` is given."""
    _check_batch_size(batch_size)
    y, o, maps_e = [], [], []
    for start in range(0, len(images), batch_size):
        sl = slice(start, start + batch_size)
        idx = np.arange(len(targets[sl]))
        explained = _explanation_images(images[sl], maps[sl])
        y.append(call_score_fn(score_fn, images[sl])[idx, targets[sl]])
        o.append(call_score_fn(score_fn, explained)[idx, targets[sl]])
        if explain_fn is not None:
            maps_e.append(np.asarray(explain_fn(explained, targets[sl]), dtype=np.float32))
    return np.concatenate(y), np.concatenate(o), np.concatenate(maps_e) if maps_e else None


def _check_set(images: np.ndarray, maps: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    images = np.asarray(images, dtype=np.float32)
    maps = np.asarray(maps, dtype=np.float32)
    targets = np.asarray(targets, dtype=np.int64).reshape(-1)
    if images.ndim != 4 or maps.ndim != 3:
        raise ImageError(f"expected images [B,3,H,W] and maps [B,h,w], got {images.shape}, {maps.shape}")
    if len(images) == 0 or not len(images) == len(maps) == len(targets):
        raise ImageError(f"batch mismatch: {len(images)} images, {len(maps)} maps, {len(targets)} targets")
    return images, maps, targets


# --------------------------------------------------------------------------
# Deletion / insertion
# --------------------------------------------------------------------------
def deletion_auc(
    score_fn: ScoreFn,
    image: np.ndarray,
    map_hw: np.ndarray,
    target: int,
    baseline: str = "mean",
    steps: int | None = None,
    batch_size: int = 64,
) -> float:
    """Deletion AUC in [0, 1] (lower is better).

    Grid cells are replaced by the baseline in the order of decreasing map
    value (stable ties, row-major), the target score is read after each step,
    and the trapezoid area is divided by the number of steps. ``steps=None``
    removes one cell per step (h*w steps, h*w + 1 points); a smaller ``steps``
    removes nearly equal chunks of cells. The default baseline is the mean
    colour (zeros); see :func:`baseline_image`.
    """
    image = _check_image(image)
    fill = baseline_image(image, baseline)
    return _auc(score_fn, image, fill, map_hw, target, steps, batch_size)


def insertion_auc(
    score_fn: ScoreFn,
    image: np.ndarray,
    map_hw: np.ndarray,
    target: int,
    baseline: str = "blur",
    steps: int | None = None,
    batch_size: int = 64,
) -> float:
    """Insertion AUC in [0, 1] (higher is better).

    Starts from the baseline image and reveals the original grid cells in the
    order of decreasing map value; otherwise as :func:`deletion_auc`. The
    default baseline is the blurred image, as in RISE (Petsiuk et al. 2018).
    """
    image = _check_image(image)
    start = baseline_image(image, baseline)
    return _auc(score_fn, start, image, map_hw, target, steps, batch_size)


def baseline_image(image: np.ndarray, baseline: str) -> np.ndarray:
    """Baseline for deletion/insertion, in normalised space.

    ``"mean"``: zeros (the dataset mean colour). ``"blur"``: per-channel
    ``cv2.GaussianBlur`` with sigma = max(H, W) / 8 (kernel size derived by
    OpenCV from sigma, reflected borders).
    """
    image = _check_image(image)
    if baseline == "mean":
        return np.zeros_like(image)
    if baseline == "blur":
        sigma = max(image.shape[-2:]) / 8.0
        channels = [cv2.GaussianBlur(c, (0, 0), sigmaX=sigma, sigmaY=sigma) for c in image]
        return np.stack(channels).astype(np.float32)
    raise OptionError(f"baseline must be 'mean' or 'blur', got {baseline!r}")


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 3:
        raise ImageError(f"expected one image [3, H, W], got shape {image.shape}")
    return image


def _pixel_steps(map_hw: np.ndarray, size_hw: tuple[int, int], steps: int | None) -> tuple[np.ndarray, int]:
    """Per-pixel step (1..steps) at which its grid cell is switched, and ``steps``."""
    m = np.asarray(map_hw, dtype=np.float32)
    if m.ndim != 2:
        raise ImageError(f"expected a [h, w] map, got shape {m.shape}")
    n_cells = m.size
    steps = n_cells if steps is None else int(steps)
    if not 1 <= steps <= n_cells:
        raise OptionError(f"steps must be in [1, {n_cells}], got {steps}")
    order = np.argsort(-m.ravel(), kind="stable")
    cell_step = np.empty(n_cells, dtype=np.int64)
    for k, chunk in enumerate(np.array_split(order, steps), start=1):
        cell_step[chunk] = k
    (grid_h, grid_w), (height, width) = m.shape, size_hw
    rows = np.arange(height) * grid_h // height
    cols = np.arange(width) * grid_w // width
    return cell_step[rows[:, None] * grid_w + cols[None, :]], steps


def _auc(
    score_fn: ScoreFn,
    start: np.ndarray,
    fill: np.ndarray,
    map_hw: np.ndarray,
    target: int,
    steps: int | None,
    batch_size: int,
) -> float:
    """Normalised trapezoid AUC of the target score while cells go from ``start`` to ``fill``."""
    _check_batch_size(batch_size)
    pix_step, steps = _pixel_steps(map_hw, start.shape[-2:], steps)
    scores = []
    for first in range(0, steps + 1, batch_size):
        ks = np.arange(first, min(first + batch_size, steps + 1))
        switched = pix_step[None, None] <= ks[:, None, None, None]
        batch = np.where(switched, fill[None], start[None])
        scores.append(call_score_fn(score_fn, batch)[:, target])
    curve = np.concatenate(scores).astype(np.float64)
    return float(np.sum(curve[:-1] + curve[1:]) / (2.0 * steps))


# --------------------------------------------------------------------------
# Localisation (pointing game)
# --------------------------------------------------------------------------
def _box_slices(box: Box, size_hw: tuple[int, int]) -> tuple[slice, slice]:
    """Row and column slices of a (x0, y0, x1, y1) box, x1/y1 exclusive, clipped."""
    x0, y0, x1, y1 = (int(v) for v in box)
    if x1 <= x0 or y1 <= y0:
        raise OptionError(f"box must have x0 < x1 and y0 < y1, got {tuple(box)}")
    height, width = int(size_hw[0]), int(size_hw[1])
    return slice(max(y0, 0), min(y1, height)), slice(max(x0, 0), min(x1, width))


def pointing_game(map_hw: np.ndarray, box: Box, image_size_hw: tuple[int, int]) -> bool:
    """Hit if the argmax pixel of the upsampled map lies in ``box``.

    ``box`` is (x0, y0, x1, y1) in pixels, x1/y1 exclusive. The maximum is
    taken on the bicubic-upsampled map (first pixel in row-major order on
    ties). A constant map has no maximum and is always a miss.
    """
    m = np.asarray(map_hw, dtype=np.float32)
    rows, cols = _box_slices(box, image_size_hw)
    if np.ptp(m) == 0:
        return False
    up = upsample_map(m, image_size_hw)
    y, x = np.unravel_index(int(np.argmax(up)), up.shape)
    return bool(rows.start <= y < rows.stop and cols.start <= x < cols.stop)


def energy_pointing_game(map_hw: np.ndarray, box: Box, image_size_hw: tuple[int, int]) -> float:
    """Share of the upsampled map's mass inside ``box`` (0 for an all-zero map)."""
    rows, cols = _box_slices(box, image_size_hw)
    up = upsample_map(map_hw, image_size_hw).astype(np.float64)
    total = up.sum()
    if total <= 0.0:
        return 0.0
    return float(up[rows, cols].sum() / total)


def discriminative_pointing_game(
    map_a: np.ndarray, map_b: np.ndarray, box_a: Box, box_b: Box, size: tuple[int, int]
) -> tuple[bool, bool]:
    """Pointing game for two classes in one image: (A's map hits A's box, B's map hits B's box)."""
    return pointing_game(map_a, box_a, size), pointing_game(map_b, box_b, size)
