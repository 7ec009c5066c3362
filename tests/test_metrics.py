"""Tests of reciprocam_onnx.metrics against hand-computed values on tiny arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest

from reciprocam_onnx.evaluation import metrics as M
from tests.conftest import Recorder

SIZE = 32  # image side in pixels
GRID = 4  # grid side in cells, so one cell is 8 x 8 pixels
REGION = (slice(0, 8), slice(0, 16))  # grid cells (0, 0) and (0, 1)


def region_score(images: np.ndarray) -> np.ndarray:
    """Toy 2-class scores: class 0 is the clipped mean of REGION in channel 0."""
    s = np.clip(images[:, 0, REGION[0], REGION[1]].mean(axis=(1, 2)), 0.0, 1.0)
    return np.stack([s, 1.0 - s], axis=1).astype(np.float32)


def region_map() -> np.ndarray:
    m = np.zeros((GRID, GRID), dtype=np.float32)
    m[0, 0], m[0, 1] = 1.0, 0.9
    return m


# --------------------------------------------------------------------------
# upsampling
# --------------------------------------------------------------------------
def test_upsample_map_shape_and_clipping():
    m = np.zeros((GRID, GRID), dtype=np.float32)
    m[1, 2] = 1.0
    up = M.upsample_map(m, (SIZE, 2 * SIZE))
    assert up.shape == (SIZE, 2 * SIZE) and up.dtype == np.float32
    assert up.min() >= 0.0 and up.max() <= 1.0


def test_upsample_constant_map_stays_constant():
    up = M.upsample_map(np.full((GRID, GRID), 0.3, np.float32), (SIZE, SIZE))
    np.testing.assert_allclose(up, 0.3, atol=1e-6)


# --------------------------------------------------------------------------
# AD / Inc / Coh / Com / ADCC
# --------------------------------------------------------------------------
def test_average_drop_and_increase_hand_computed():
    y = np.array([0.8, 0.5, 0.4])
    o = np.array([0.4, 0.6, 0.1])
    # drops: 0.4 / 0.8 = 0.5, 0 (increase), 0.3 / 0.4 = 0.75
    assert M.average_drop(y, o) == pytest.approx((0.5 + 0.0 + 0.75) / 3)
    assert M.increase(y, o) == pytest.approx(1 / 3)


def test_average_drop_zero_score_is_finite():
    assert M.average_drop(np.array([0.0]), np.array([0.0])) == 0.0


def test_coherency_identical_inverted_constant():
    a = np.array([[0.0, 1.0], [1.0, 0.0]], np.float32)
    const = np.full((2, 2), 0.5, np.float32)
    assert M.coherency(a[None], a[None]) == pytest.approx(1.0)
    assert M.coherency(a[None], (1 - a)[None]) == pytest.approx(0.0)
    assert M.coherency(a[None], const[None]) == pytest.approx(0.5)
    assert M.coherency(const[None], const[None]) == pytest.approx(0.5)
    both = M.coherency(np.stack([a, a]), np.stack([a, 1 - a]))
    assert both == pytest.approx(0.5) and not math.isnan(both)


def test_coherency_shape_mismatch_raises():
    with pytest.raises(ValueError):
        M.coherency(np.zeros((1, 2, 2)), np.zeros((1, 3, 3)))


def test_complexity_hand_computed():
    maps = np.array([[[0, 1], [1, 1]], [[0, 0], [0, 0]]], np.float32)
    assert M.complexity(maps) == pytest.approx(0.375)


def test_adcc_hand_computed():
    assert M.adcc(0.2, 0.8, 0.2) == pytest.approx(0.8)
    assert M.adcc(0.0, 1.0, 0.0) == pytest.approx(1.0)
    assert M.adcc(0.5, 0.5, 0.5) == pytest.approx(0.5)
    assert M.adcc(1.0, 0.9, 0.1) == 0.0
    assert M.adcc(0.1, 0.0, 0.1) == 0.0


def test_adcc_rejects_percentages():
    with pytest.raises(ValueError):
        M.adcc(20.0, 80.0, 20.0)


def test_explanation_metrics_hand_computed():
    images = np.ones((2, 3, SIZE, SIZE), np.float32)
    maps = np.stack([np.ones((GRID, GRID)), np.zeros((GRID, GRID))]).astype(np.float32)
    rec = Recorder(region_score)
    # E_0 = images[0] (o = y = 1), E_1 = 0 (o = 0, drop 1); maps of E constant -> Coh 0.5
    res = M.explanation_metrics(
        rec, images, maps, np.array([0, 0]), batch_size=1, explain_fn=lambda e, t: np.zeros((len(e), GRID, GRID))
    )
    assert res == pytest.approx(
        {"average_drop": 0.5, "increase": 0.0, "coherency": 0.5, "complexity": 0.5, "adcc": 0.5}
    )
    assert max(rec.sizes) == 1


def test_explanation_metrics_coherent_explainer_and_no_explainer():
    images = np.ones((3, 3, SIZE, SIZE), np.float32)
    ramp = np.linspace(0.0, 1.0, GRID * GRID, dtype=np.float32).reshape(GRID, GRID)
    maps = np.stack([ramp, ramp.T, ramp[::-1]])

    def explain(e: np.ndarray, t: np.ndarray) -> np.ndarray:
        assert len(e) <= 2
        return e[:, 0].reshape(len(e), GRID, 8, GRID, 8).mean(axis=(2, 4))

    res = M.explanation_metrics(region_score, images, maps, np.zeros(3, int), 2, explain)
    assert res["coherency"] > 0.99
    res = M.explanation_metrics(region_score, images, maps, np.zeros(3, int))
    assert math.isnan(res["coherency"]) and math.isnan(res["adcc"])
    assert not math.isnan(res["average_drop"])


# --------------------------------------------------------------------------
# deletion / insertion
# --------------------------------------------------------------------------
def test_deletion_hand_computed_good_vs_reversed():
    image = np.ones((3, SIZE, SIZE), np.float32)
    good = region_map()
    # good: curve 1, 0.5, 0, ... 0 over 16 steps -> (0.75 + 0.25) / 16
    assert M.deletion_auc(region_score, image, good, 0) == pytest.approx(1.0 / 16)
    # reversed: region cells removed last -> (14 + 0.75 + 0.25) / 16
    assert M.deletion_auc(region_score, image, 1 - good, 0) == pytest.approx(15.0 / 16)


def test_insertion_hand_computed_good_vs_reversed():
    image = np.ones((3, SIZE, SIZE), np.float32)
    good = region_map()
    ins_good = M.insertion_auc(region_score, image, good, 0, baseline="mean")
    ins_bad = M.insertion_auc(region_score, image, 1 - good, 0, baseline="mean")
    assert ins_good == pytest.approx(15.0 / 16)
    assert ins_bad == pytest.approx(1.0 / 16)


def test_deletion_constant_map_uses_row_major_ties():
    image = np.ones((3, SIZE, SIZE), np.float32)
    const = np.full((GRID, GRID), 0.5, np.float32)
    # ties are broken in row-major order, so the region cells go first
    assert M.deletion_auc(region_score, image, const, 0) == pytest.approx(1.0 / 16)


def test_deletion_coarse_steps():
    image = np.ones((3, SIZE, SIZE), np.float32)
    # 8 steps of 2 cells: curve 1, 0, ..., 0 -> 0.5 / 8
    assert M.deletion_auc(region_score, image, region_map(), 0, steps=8) == pytest.approx(0.5 / 8)
    with pytest.raises(ValueError):
        M.deletion_auc(region_score, image, region_map(), 0, steps=17)


def test_deletion_insertion_batching():
    image = np.ones((3, SIZE, SIZE), np.float32)
    rec = Recorder(region_score)
    auc = M.deletion_auc(rec, image, region_map(), 0, batch_size=5)
    assert auc == pytest.approx(M.deletion_auc(region_score, image, region_map(), 0))
    assert max(rec.sizes) <= 5 and sum(rec.sizes) == GRID * GRID + 1
    rec.sizes.clear()
    M.insertion_auc(rec, image, region_map(), 0, batch_size=4)
    assert max(rec.sizes) <= 4 and sum(rec.sizes) == GRID * GRID + 1


def test_blur_baseline():
    flat = np.full((3, SIZE, SIZE), 0.7, np.float32)
    np.testing.assert_allclose(M.baseline_image(flat, "blur"), 0.7, atol=1e-5)
    rng = np.random.default_rng(0)
    noisy = rng.normal(size=(3, SIZE, SIZE)).astype(np.float32)
    blurred = M.baseline_image(noisy, "blur")
    assert blurred.shape == noisy.shape and blurred.std() < 0.5 * noisy.std()
    assert not M.baseline_image(noisy, "mean").any()
    with pytest.raises(ValueError):
        M.baseline_image(noisy, "black")


def test_insertion_blur_good_beats_reversed():
    image = np.zeros((3, SIZE, SIZE), np.float32)
    image[:, REGION[0], REGION[1]] = 1.0
    good = region_map()
    ins_good = M.insertion_auc(region_score, image, good, 0)
    ins_bad = M.insertion_auc(region_score, image, 1 - good, 0)
    assert 0.0 <= ins_bad < ins_good <= 1.0


# --------------------------------------------------------------------------
# pointing games
# --------------------------------------------------------------------------
def one_hot_map(row: int, col: int) -> np.ndarray:
    m = np.zeros((GRID, GRID), np.float32)
    m[row, col] = 1.0
    return m


def test_pointing_game_hit_miss_constant():
    box = (16, 8, 24, 16)  # pixels of grid cell (1, 2), x1 / y1 exclusive
    assert M.pointing_game(one_hot_map(1, 2), box, (SIZE, SIZE)) is True
    assert M.pointing_game(1 - one_hot_map(1, 2), box, (SIZE, SIZE)) is False
    assert M.pointing_game(np.full((GRID, GRID), 0.5, np.float32), box, (SIZE, SIZE)) is False
    assert M.pointing_game(one_hot_map(3, 3), box, (SIZE, SIZE)) is False


def test_pointing_game_box_is_exclusive():
    m = one_hot_map(0, 0)
    up = M.upsample_map(m, (SIZE, SIZE))
    y, x = np.unravel_index(np.argmax(up), up.shape)
    assert M.pointing_game(m, (x, y, x + 1, y + 1), (SIZE, SIZE))
    assert not M.pointing_game(m, (x + 1, y, x + 2, y + 1), (SIZE, SIZE))
    with pytest.raises(ValueError):
        M.pointing_game(m, (5, 5, 5, 9), (SIZE, SIZE))


def test_energy_pointing_game():
    size = (SIZE, SIZE)
    ones = np.ones((GRID, GRID), np.float32)
    assert M.energy_pointing_game(ones, (0, 0, 16, 32), size) == pytest.approx(0.5)
    assert M.energy_pointing_game(np.zeros((GRID, GRID)), (0, 0, 16, 32), size) == 0.0
    assert M.energy_pointing_game(one_hot_map(1, 2), (0, 0, SIZE, SIZE), size) == pytest.approx(1.0)
    box = (16, 8, 24, 16)
    perfect = M.energy_pointing_game(one_hot_map(1, 2), box, size)
    inverted = M.energy_pointing_game(1 - one_hot_map(1, 2), box, size)
    assert perfect > 0.5 > inverted


def test_discriminative_pointing_game():
    size = (SIZE, SIZE)
    box_a, box_b = (0, 0, 8, 8), (24, 24, 32, 32)
    map_a, map_b = one_hot_map(0, 0), one_hot_map(3, 3)
    assert M.discriminative_pointing_game(map_a, map_b, box_a, box_b, size) == (True, True)
    assert M.discriminative_pointing_game(map_b, map_a, box_a, box_b, size) == (False, False)
    assert M.discriminative_pointing_game(map_a, map_a, box_a, box_b, size) == (True, False)
