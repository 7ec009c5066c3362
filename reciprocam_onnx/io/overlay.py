"""Pictures out: upsample a grid map to the image, colour it and blend it over the image.

OpenCV is imported where it is used: importing the package costs no OpenCV.
"""

from __future__ import annotations

import os

import numpy as np

from ..errors import ImageError
from .files import write_bytes_atomic


def upsample_map(map_hw: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """Bicubic upsampling of a [h, w] map to ``size_hw``, clipped to [0, 1]."""
    import cv2

    grid = np.asarray(map_hw, np.float32)
    if grid.ndim != 2:
        raise ImageError(f"expected a [h, w] map, got shape {grid.shape}")
    height, width = int(size_hw[0]), int(size_hw[1])
    resized = cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)
    return np.clip(resized, 0.0, 1.0)


def colorize(map_hw: np.ndarray, size_hw: tuple[int, int], colormap: int | None = None) -> np.ndarray:
    """The upsampled map as an RGB uint8 heat map."""
    import cv2

    heat = (upsample_map(map_hw, size_hw) * 255).round().astype(np.uint8)
    coloured = cv2.applyColorMap(heat, cv2.COLORMAP_JET if colormap is None else colormap)
    return cv2.cvtColor(coloured, cv2.COLOR_BGR2RGB)


def overlay(image: np.ndarray, map_hw: np.ndarray, alpha: float = 0.5, colormap: int | None = None) -> np.ndarray:
    """Blend the coloured map over RGB uint8 ``image``: alpha * heat + (1 - alpha) * image."""
    import cv2

    heat = colorize(map_hw, image.shape[:2], colormap)
    return cv2.addWeighted(heat, alpha, image, 1.0 - alpha, 0.0)


def png_bytes(rgb: np.ndarray) -> bytes:
    """An RGB uint8 image encoded as PNG."""
    import cv2

    ok, data = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ImageError(f"could not encode a {list(rgb.shape)} image as PNG")
    return data.tobytes()


def save_png(path: str | os.PathLike, rgb: np.ndarray) -> None:
    """Write an RGB uint8 image as PNG, atomically."""
    write_bytes_atomic(path, png_bytes(rgb))
