"""Comparing an explainer with the PyTorch reference (tests/torch_reference.py), at shared tolerances."""

from __future__ import annotations

import numpy as np

TOLERANCE = 1e-4
SCORE_TOLERANCE = 5e-5
# The reference runs in float64. A map is compared at TOLERANCE where the same
# reference in float32 lands within TOLERANCE / 4 of it: elsewhere min-max
# magnifies float32 noise (scores that barely vary over the cells) beyond what
# any float32 implementation can meet. The raw scores behind every map are
# always compared, and most (60%) target maps must be well-posed.
WELL_POSED = TOLERANCE / 4


def assert_matches_reference(ex, images: np.ndarray, ref, ref32, where: str) -> np.ndarray:
    """Raw scores, targets, target maps and all-class maps against the reference;
    returns which target maps were well-posed enough to compare."""
    unmasked, cells = ex.cell_scores(images)
    scale = max(1.0, float(np.abs(ref.cells).max()))
    np.testing.assert_allclose(unmasked, ref.unmasked, atol=SCORE_TOLERANCE * scale, rtol=0, err_msg=where)
    np.testing.assert_allclose(cells, ref.cells, atol=SCORE_TOLERANCE * scale, rtol=0, err_msg=where)
    out = ex.explain(images)
    np.testing.assert_array_equal(out.targets, ref.targets, err_msg=where)
    assert out.maps.dtype == np.float32 and out.maps.min() >= 0 and out.maps.max() <= 1
    well_posed = np.abs(ref32.all_maps - ref.all_maps).max(axis=(2, 3)) <= WELL_POSED
    chosen = well_posed[np.arange(len(images)), ref.targets]
    np.testing.assert_allclose(out.maps[chosen], ref.maps[chosen], atol=TOLERANCE, rtol=0, err_msg=where)
    every = ex.explain_all(images)
    np.testing.assert_allclose(every[well_posed], ref.all_maps[well_posed], atol=TOLERANCE, rtol=0, err_msg=where)
    np.testing.assert_array_equal(every[np.arange(len(images)), out.targets], out.maps, err_msg=where)
    return chosen
