"""Images in (preprocess) and pictures out (overlay)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from reciprocam_onnx.errors import ImageError
from reciprocam_onnx.io.images import fit_image, load_image, normalise, preprocess
from reciprocam_onnx.io.overlay import overlay, save_png, upsample_map


def test_load_image_is_rgb(tmp_path):
    bgr = np.zeros((5, 6, 3), np.uint8)
    bgr[..., 0] = 255  # blue in OpenCV's order
    cv2.imwrite(str(tmp_path / "blue.png"), bgr)
    rgb = load_image(tmp_path / "blue.png")
    assert rgb.shape == (5, 6, 3) and (rgb[..., 2] == 255).all() and (rgb[..., 0] == 0).all()


def test_unreadable_and_missing_images(tmp_path):
    (tmp_path / "x.jpg").write_bytes(b"garbage")
    with pytest.raises(ImageError, match="cannot read image"):
        load_image(tmp_path / "x.jpg")
    with pytest.raises(ImageError, match="not found"):
        load_image(tmp_path / "missing.png")


def test_crop_keeps_aspect_and_centres():
    image = np.zeros((100, 200, 3), np.uint8)
    image[:, 50:150] = 255  # the centre square is white
    out = fit_image(image, (50, 50), "crop")
    assert out.shape == (50, 50, 3) and out.min() == 255
    assert fit_image(image, (50, 50), "stretch").shape == (50, 50, 3)
    with pytest.raises(ImageError, match="model takes 50x50"):
        fit_image(image, (50, 50), "none")


def test_normalise_matches_formula():
    image = np.full((2, 2, 3), 128, np.uint8)
    out = normalise(image, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.5))
    assert out.shape == (3, 2, 2) and out.dtype == np.float32
    np.testing.assert_allclose(out[:, 0, 0], (128 / 255 - np.array([0.5, 0.4, 0.3])) / [0.2, 0.25, 0.5], atol=1e-6)
    tensor, fitted = preprocess(image, (4, 4), mode="stretch")
    assert tensor.shape == (3, 4, 4) and fitted.shape == (4, 4, 3)


def test_overlay_puts_heat_where_the_map_is_high(tmp_path):
    grid = np.zeros((4, 4), np.float32)
    grid[0, 0] = 1.0
    up = upsample_map(grid, (64, 64))
    assert up.shape == (64, 64) and up.min() >= 0 and up.max() <= 1
    assert up[:16, :16].mean() > up[48:, 48:].mean()
    picture = overlay(np.full((64, 64, 3), 128, np.uint8), grid)
    hot, cold = picture[4, 4], picture[60, 60]
    assert hot[0] > hot[2] and cold[2] > cold[0]  # JET: red where high, blue where low
    save_png(tmp_path / "o.png", picture)
    assert cv2.imread(str(tmp_path / "o.png")).shape == (64, 64, 3)
