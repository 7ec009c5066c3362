"""Baseline explainers that need only a score function (no model internals).

Images are float32 ``[B, 3, H, W]`` in normalised space (0 = dataset mean),
maps are float32 ``[B, h, w]`` grid maps min-max normalised to ``[0, 1]``.
"""

from __future__ import annotations

import logging

import cv2
import numpy as np

from ..engine.scores import minmax_normalise
from ..errors import ImageError, InternalError, OptionError
from .metrics import ScoreFn, call_score_fn

logger = logging.getLogger(__name__)

_CENTRE_SIGMA = 0.25  # Gaussian std of the centre prior, as a fraction of each side


def rise_maps(
    score_fn: ScoreFn,
    images: np.ndarray,
    targets: np.ndarray | None,
    grid_hw: tuple[int, int],
    n_masks: int = 2000,
    cell: int = 7,
    p: float = 0.5,
    seed: int = 0,
    batch_size: int = 64,
    all_classes: bool = False,
) -> np.ndarray:
    """RISE saliency (Petsiuk et al. 2018) reduced to the grid size.

    ``n_masks`` random binary ``cell x cell`` grids (keep probability ``p``,
    drawn once from ``seed``) are upsampled bilinearly to ``(cell + 1) *
    ceil(H / cell)`` and randomly shift-cropped to ``H x W``; every image is
    multiplied by the masks (masked pixels become the dataset mean) and
    saliency = sum_i score_i[c] * mask_i / (n_masks * p). Masks are generated
    and scored ``batch_size`` at a time, and each mask is area-reduced to
    ``grid_hw`` before accumulation (equal to area-reducing the full-size
    saliency: area interpolation is linear); maps are then min-max
    normalised. Returns ``[B, h, w]`` for ``targets``, or ``[B, C, h, w]`` for
    every class when ``all_classes`` (``targets`` is then ignored).
    """
    images = _check_images(images)
    _check_rise_args(n_masks, cell, p, batch_size)
    targets = None if all_classes else _check_targets(targets, len(images))
    grids, shifts = _rise_grids(n_masks, cell, p, seed, images.shape[-2:])
    sal: np.ndarray | None = None
    for start in range(0, n_masks, batch_size):
        stop = min(start + batch_size, n_masks)
        masks = _rise_masks(grids[start:stop], shifts[start:stop], images.shape[-2:])
        sal = _accumulate(score_fn, images, masks, grid_hw, targets, sal)
        logger.debug("RISE: scored masks %d-%d of %d", start, stop, n_masks)
    if sal is None:
        raise InternalError("RISE scored no mask batch (n_masks was checked to be >= 1)")
    maps = (sal / (n_masks * p)).reshape(len(images), -1, *grid_hw)
    return minmax_normalise(maps if all_classes else maps[:, 0])


def _accumulate(
    score_fn: ScoreFn,
    images: np.ndarray,
    masks: np.ndarray,
    grid_hw: tuple[int, int],
    targets: np.ndarray | None,
    sal: np.ndarray | None,
) -> np.ndarray:
    """Add sum_i score_i[c] * area(mask_i) for one mask batch to ``sal`` [B, C or 1, h*w]."""
    small = _area_reduce(masks, grid_hw).reshape(len(masks), -1).astype(np.float64)
    for i, image in enumerate(images):
        scores = call_score_fn(score_fn, image[None] * masks[:, None])
        picked = scores if targets is None else scores[:, targets[i] : targets[i] + 1]
        if sal is None:
            sal = np.zeros((len(images), picked.shape[1], small.shape[1]), dtype=np.float64)
        sal[i] += picked.T.astype(np.float64) @ small
    if sal is None:
        raise InternalError("RISE accumulated over no image (images were checked to be non-empty)")
    return sal


def _check_rise_args(n_masks: int, cell: int, p: float, batch_size: int) -> None:
    if n_masks < 1 or cell < 1 or batch_size < 1:
        raise OptionError(f"n_masks, cell and batch_size must be >= 1, got {n_masks}, {cell}, {batch_size}")
    if not 0.0 < p <= 1.0:
        raise OptionError(f"p must be in (0, 1], got {p}")


def _check_images(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4 or len(images) == 0:
        raise ImageError(f"expected images [B, 3, H, W] with B >= 1, got shape {images.shape}")
    return images


def _check_targets(targets: np.ndarray | None, n: int) -> np.ndarray:
    if targets is None:
        raise ImageError("targets are required unless all_classes=True")
    targets = np.asarray(targets, dtype=np.int64).reshape(-1)
    if len(targets) != n:
        raise ImageError(f"expected {n} targets, got {len(targets)}")
    return targets


def _rise_grids(
    n_masks: int, cell: int, p: float, seed: int, size_hw: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Binary ``[n, cell, cell]`` grids and ``[n, 2]`` (dy, dx) shifts, all from ``seed``."""
    rng = np.random.default_rng(seed)
    grids = (rng.random((n_masks, cell, cell)) < p).astype(np.float32)
    cell_hw = np.ceil(np.asarray(size_hw) / cell).astype(np.int64)
    shifts = rng.integers(0, cell_hw, size=(n_masks, 2))
    return grids, shifts


def _rise_masks(grids: np.ndarray, shifts: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """Bilinearly upsample grids to (cell + 1) * ceil(size / cell) and shift-crop to ``size_hw``."""
    height, width = int(size_hw[0]), int(size_hw[1])
    cell = grids.shape[-1]
    up_h = (cell + 1) * int(np.ceil(height / cell))
    up_w = (cell + 1) * int(np.ceil(width / cell))
    masks = np.empty((len(grids), height, width), dtype=np.float32)
    for k, (grid, (dy, dx)) in enumerate(zip(grids, shifts)):
        up = cv2.resize(grid, (up_w, up_h), interpolation=cv2.INTER_LINEAR)
        masks[k] = up[dy : dy + height, dx : dx + width]
    return masks


def _area_reduce(maps: np.ndarray, grid_hw: tuple[int, int]) -> np.ndarray:
    """Resize each ``[H, W]`` map to ``grid_hw`` with area interpolation."""
    grid_h, grid_w = int(grid_hw[0]), int(grid_hw[1])
    return np.stack([cv2.resize(m, (grid_w, grid_h), interpolation=cv2.INTER_AREA) for m in maps])


def random_maps(n: int, grid_hw: tuple[int, int], seed: int | list[int]) -> np.ndarray:
    """``[n, h, w]`` uniform random maps from ``seed``, min-max normalised."""
    rng = np.random.default_rng(seed)
    return minmax_normalise(rng.random((n, *grid_hw), dtype=np.float32))


def centre_maps(n: int, grid_hw: tuple[int, int]) -> np.ndarray:
    """``[n, h, w]`` Gaussian centre prior, min-max normalised.

    The Gaussian is centred on the grid, with a standard deviation of a
    quarter of each side, evaluated at cell centres.
    """
    grid_h, grid_w = int(grid_hw[0]), int(grid_hw[1])
    ys = (np.arange(grid_h) + 0.5) / grid_h - 0.5
    xs = (np.arange(grid_w) + 0.5) / grid_w - 0.5
    gauss = np.exp(-(ys[:, None] ** 2 + xs[None, :] ** 2) / (2 * _CENTRE_SIGMA**2))
    return np.repeat(minmax_normalise(gauss)[None], n, axis=0)
