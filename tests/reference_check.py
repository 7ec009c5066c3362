"""Comparing an explainer with the PyTorch reference (tests/torch_reference.py), at shared tolerances."""

from __future__ import annotations

import numpy as np

TOLERANCE = 1e-4
SCORE_TOLERANCE = 5e-5
# The reference runs in float64. A map is compared at TOLERANCE where the same
# reference in float32 lands within TOLERANCE / 4 of it (well-posed): elsewhere
# min-max magnifies float32 noise (scores that barely vary over the cells)
# beyond what any float32 implementation can meet. The raw scores behind every
# map are always compared.


def assert_matches_reference(
    ex, images: np.ndarray, ref, ref32, where: str, tolerance: float = TOLERANCE
) -> np.ndarray:
    """Raw scores, targets, target maps and all-class maps against the reference, maps at ``tolerance``
    where well-posed (the float32 reference within tolerance / 4); returns which target maps were."""
    unmasked, cells = ex.cell_scores(images)
    scale = max(1.0, float(np.abs(ref.cells).max()))
    np.testing.assert_allclose(unmasked, ref.unmasked, atol=SCORE_TOLERANCE * scale, rtol=0, err_msg=where)
    np.testing.assert_allclose(cells, ref.cells, atol=SCORE_TOLERANCE * scale, rtol=0, err_msg=where)
    out = ex.explain(images)
    np.testing.assert_array_equal(out.targets, ref.targets, err_msg=where)
    assert out.maps.dtype == np.float32 and out.maps.min() >= 0 and out.maps.max() <= 1
    well_posed = np.abs(ref32.all_maps - ref.all_maps).max(axis=(2, 3)) <= tolerance / 4
    chosen = well_posed[np.arange(len(images)), ref.targets]
    np.testing.assert_allclose(out.maps[chosen], ref.maps[chosen], atol=tolerance, rtol=0, err_msg=where)
    every = ex.explain_all(images)
    np.testing.assert_allclose(every[well_posed], ref.all_maps[well_posed], atol=tolerance, rtol=0, err_msg=where)
    np.testing.assert_array_equal(every[np.arange(len(images)), out.targets], out.maps, err_msg=where)
    return chosen
