"""Tests of reciprocam_onnx.baselines and reciprocam_onnx.normalise."""

from __future__ import annotations

import numpy as np
import pytest

from reciprocam_onnx.engine.scores import minmax_normalise, to_scores
from reciprocam_onnx.evaluation.baselines import centre_maps, random_maps, rise_maps
from tests.conftest import Recorder

SIZE = 32
GRID = (4, 4)  # 8 x 8 pixel cells
TARGET_CELL = (0, 2)  # the toy model looks only at rows 0:8, cols 16:24


def cell_score(images: np.ndarray) -> np.ndarray:
    """Toy 2-class softmax: class 1 depends only on grid cell TARGET_CELL."""
    mean = images[:, 0, 0:8, 16:24].mean(axis=(1, 2))
    s = 1.0 / (1.0 + np.exp(-8.0 * (mean - 0.5)))
    return np.stack([1.0 - s, s], axis=1).astype(np.float32)


def images(n: int = 2) -> np.ndarray:
    return np.ones((n, 3, SIZE, SIZE), np.float32)


# --------------------------------------------------------------------------
# minmax_normalise
# --------------------------------------------------------------------------
def test_minmax_normalise_per_map_and_constant():
    maps = np.array([[[1.0, 3.0], [2.0, 5.0]], [[4.0, 4.0], [4.0, 4.0]]], np.float32)
    out = minmax_normalise(maps)
    np.testing.assert_allclose(out[0], [[0.0, 0.5], [0.25, 1.0]])
    np.testing.assert_array_equal(out[1], 0.0)
    assert out.dtype == np.float32 and not np.isnan(out).any()
    np.testing.assert_allclose(minmax_normalise(maps[0]), out[0])


def test_confident_softmax_keeps_its_map():
    """Top scores within float32 rounding of 1.0 still rank: softmax and min-max work in float64."""
    logits = np.zeros((2, 2, 3), np.float32)
    logits[..., 0] = [[20.0, 21.0], [22.0, 23.0]]  # softmax of class 0: 1 - 4e-9 ... 1 - 2e-10
    scores = to_scores(logits, "softmax")
    assert np.float32(scores[0, 0, 0]) == np.float32(scores[1, 1, 0]) == 1.0  # float32 could not tell them apart
    np.testing.assert_allclose(minmax_normalise(scores[..., 0]).ravel(), [0.0, 0.665, 0.910, 1.0], atol=1e-3)


def test_minmax_normalise_rejects_1d():
    with pytest.raises(ValueError):
        minmax_normalise(np.zeros(3))


# --------------------------------------------------------------------------
# RISE
# --------------------------------------------------------------------------
def test_rise_finds_the_region():
    maps = rise_maps(cell_score, images(1), np.array([1]), GRID, n_masks=300, cell=4, batch_size=50)
    assert maps.shape == (1, *GRID) and maps.dtype == np.float32
    assert np.unravel_index(np.argmax(maps[0]), GRID) == TARGET_CELL
    assert maps.min() == pytest.approx(0.0) and maps.max() == pytest.approx(1.0)


def test_rise_is_deterministic_and_batch_independent():
    kwargs = dict(n_masks=60, cell=4, seed=3)
    a = rise_maps(cell_score, images(), np.array([1, 0]), GRID, batch_size=64, **kwargs)
    rec = Recorder(cell_score)
    b = rise_maps(rec, images(), np.array([1, 0]), GRID, batch_size=7, **kwargs)
    np.testing.assert_allclose(a, b, atol=1e-6)
    assert max(rec.sizes) <= 7 and sum(rec.sizes) == 2 * 60
    c = rise_maps(cell_score, images(), np.array([1, 0]), GRID, n_masks=60, cell=4, seed=4)
    assert not np.allclose(a, c)


def test_rise_all_classes_matches_targets():
    kwargs = dict(n_masks=40, cell=4, batch_size=16)
    every = rise_maps(cell_score, images(), None, GRID, all_classes=True, **kwargs)
    assert every.shape == (2, 2, *GRID)
    one = rise_maps(cell_score, images(), np.array([1, 0]), GRID, **kwargs)
    np.testing.assert_allclose(every[0, 1], one[0], atol=1e-6)
    np.testing.assert_allclose(every[1, 0], one[1], atol=1e-6)


def test_rise_argument_checks():
    with pytest.raises(ValueError):
        rise_maps(cell_score, images(), None, GRID, n_masks=4)
    with pytest.raises(ValueError):
        rise_maps(cell_score, images(), np.array([1, 0]), GRID, n_masks=4, p=0.0)
    with pytest.raises(ValueError):
        rise_maps(cell_score, images(), np.array([1]), GRID, n_masks=4)


# --------------------------------------------------------------------------
# random and centre priors
# --------------------------------------------------------------------------
def test_random_maps():
    maps = random_maps(3, (5, 6), seed=1)
    assert maps.shape == (3, 5, 6) and maps.dtype == np.float32
    np.testing.assert_allclose(maps.min(axis=(1, 2)), 0.0)
    np.testing.assert_allclose(maps.max(axis=(1, 2)), 1.0)
    np.testing.assert_array_equal(maps, random_maps(3, (5, 6), seed=1))
    assert not np.array_equal(maps, random_maps(3, (5, 6), seed=2))


def test_centre_maps():
    maps = centre_maps(2, (5, 5))
    assert maps.shape == (2, 5, 5)
    np.testing.assert_array_equal(maps[0], maps[1])
    assert np.unravel_index(np.argmax(maps[0]), (5, 5)) == (2, 2)
    assert maps.max() == pytest.approx(1.0) and maps.min() == pytest.approx(0.0)
    np.testing.assert_allclose(maps[0], maps[0][::-1, ::-1], atol=1e-6)
