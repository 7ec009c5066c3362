"""The per-token weights of ViT-ReciproCAM's masked copies (docs/algorithm.md section 3).

Row ``k = i*w + j`` of :func:`cell_weights` multiplies token ``t`` of the
copy for grid cell ``(i, j)``: prefix tokens get 1 (``cls_token=True``) or 0;
patch token ``(y, x)`` gets the kernel centred on ``(i, j)``, cropped at the
border without renormalisation; everything else is 0. With ``window="removed"``
the patch weights are ``1 - kernel / max(kernel)`` instead: the copy is the
image with the window taken out (0 at its centre), everything else kept.
"""

from __future__ import annotations

import numpy as np

from ..options import KERNELS, WINDOWS, Options

GAUSSIAN_3X3 = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], dtype=np.float32) / 16
KERNEL_MATRICES: dict[str, np.ndarray] = dict(zip(KERNELS, (GAUSSIAN_3X3, np.ones((1, 1), np.float32))))


def spatial_weights(grid: tuple[int, int], kernel: str = Options.kernel) -> np.ndarray:
    """``W[i, j, y, x]``: the kernel centred on cell (i, j), zero outside it. Shape [h, w, h, w]."""
    k = KERNEL_MATRICES[Options(kernel=kernel).kernel]
    r = k.shape[0] // 2
    h, w = grid
    dy = np.arange(h)[None, :] - np.arange(h)[:, None] + r  # [i, y] -> kernel row
    dx = np.arange(w)[None, :] - np.arange(w)[:, None] + r  # [j, x] -> kernel column
    inside = ((dy >= 0) & (dy < k.shape[0]))[:, None, :, None] & ((dx >= 0) & (dx < k.shape[1]))[None, :, None, :]
    rows = np.clip(dy, 0, k.shape[0] - 1)[:, None, :, None]
    cols = np.clip(dx, 0, k.shape[1] - 1)[None, :, None, :]
    return np.where(inside, k[rows, cols], np.float32(0))


def cell_weights(
    grid: tuple[int, int],
    prefix_tokens: int,
    kernel: str = Options.kernel,
    cls_token: bool = Options.cls_token,
    window: str = Options.window,
) -> np.ndarray:
    """Token weights of every masked copy, float32 [h*w, P + h*w]."""
    h, w = grid
    patches = spatial_weights(grid, kernel).reshape(h * w, h * w)
    if Options(window=window).window == WINDOWS[1]:
        patches = 1 - patches / KERNEL_MATRICES[kernel].max()
    prefix = np.full((h * w, prefix_tokens), 1.0 if cls_token else 0.0, dtype=np.float32)
    return np.concatenate([prefix, patches], axis=1).astype(np.float32)
