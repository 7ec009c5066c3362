"""Slot tables: a masked copy as its distinct rows (reciprocam_onnx/copies/slots.py)."""

from __future__ import annotations

import numpy as np
import pytest

from reciprocam_onnx.copies.masks import cell_weights
from reciprocam_onnx.copies.slots import EMPTY, compact_slots, identity_slots


@pytest.mark.parametrize(
    "grid, prefix, kernel, cls_token",
    [
        ((4, 5), 1, "3x3", True),
        ((3, 3), 2, "3x3", False),
        ((14, 14), 1, "1x1", True),
        ((1, 1), 1, "3x3", True),
        ((3, 4), 0, "3x3", True),
    ],
)
def test_compact_slots_encode_the_copies(grid, prefix, kernel, cls_token):
    weights = cell_weights(grid, prefix, kernel, cls_token)
    slots = compact_slots(weights, prefix)
    tokens = weights.shape[1]
    np.testing.assert_array_equal(slots.token_weight, weights)  # every token keeps its weight
    # each slot holds the token it stands for, or a zero row
    held = np.take_along_axis(slots.token, slots.token_slot, axis=1)
    assert ((held == np.arange(tokens)) | (weights == 0)).all()
    # the counts add up to T: every token is counted once
    counts = np.where(slots.log_count == EMPTY, 0.0, np.exp(slots.log_count.astype(np.float64)))
    np.testing.assert_allclose(counts.sum(axis=1), tokens, rtol=1e-6)
    for slot_of, count in zip(slots.token_slot, counts):
        np.testing.assert_allclose(np.bincount(slot_of, minlength=count.size), count, rtol=1e-6)
    assert (slots.token[:, :prefix] == np.arange(prefix)).all()  # prefix tokens keep slots 0..P-1
    window = 1 if kernel == "1x1" else min(9, grid[0] * grid[1])
    assert slots.token.shape[1] == prefix + window + 1


def test_identity_slots_are_one_per_token():
    weights = cell_weights((3, 4), 1)
    slots = identity_slots(weights)
    assert (slots.token == np.arange(13)).all() and (slots.token_slot == np.arange(13)).all()
    assert (slots.log_count == 0).all()
    np.testing.assert_array_equal(slots.token_weight, weights)
    np.testing.assert_array_equal(slots[2:5].weight, weights[2:5])
