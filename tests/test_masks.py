"""The masked-copy weights against docs/algorithm.md section 3, written out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from reciprocam_onnx.copies.masks import cell_weights
from reciprocam_onnx.errors import OptionError
from tests.torch_reference import reference_weights


@pytest.mark.parametrize("grid", [(14, 14), (7, 7), (10, 14), (1, 1), (2, 3)])
@pytest.mark.parametrize("prefix", [0, 1, 2])
@pytest.mark.parametrize("kernel", ["3x3", "1x1"])
@pytest.mark.parametrize("cls_token", [True, False])
@pytest.mark.parametrize("window", ["kept", "removed"])
def test_weights_match_loop_reference(grid, prefix, kernel, cls_token, window):
    weights = cell_weights(grid, prefix, kernel, cls_token, window)
    assert weights.dtype == np.float32
    expected = reference_weights(grid, prefix, kernel, cls_token, window).astype(np.float32)
    np.testing.assert_array_equal(weights, expected)


def test_a_removed_window_is_the_kept_one_turned_over():
    """Removed: 0 at the window's centre, 1/2 beside it, 3/4 at its corners, 1 beyond; prefix tokens as kept."""
    removed = cell_weights((4, 5), 1, "3x3", window="removed")
    centre = removed[1 * 5 + 1, 1:].reshape(4, 5)
    np.testing.assert_array_equal(centre[:3, :3], np.array([[3, 2, 3], [2, 0, 2], [3, 2, 3]]) / 4)
    assert (centre[3:] == 1).all() and (centre[:, 3:] == 1).all()
    assert (removed[:, 0] == 1).all()
    one = cell_weights((4, 5), 0, "1x1", window="removed")
    np.testing.assert_array_equal(one, 1 - np.eye(20, dtype=np.float32))


def test_border_kernels_are_cropped_not_renormalised():
    weights = cell_weights((4, 5), 1, "3x3")
    sums = weights[:, 1:].sum(axis=1).reshape(4, 5)
    assert sums[0, 0] == pytest.approx(9 / 16)  # corner keeps 1/4 + 2 * 1/8 + 1/16
    assert sums[0, 2] == pytest.approx(12 / 16)  # edge
    assert sums[1, 1] == pytest.approx(1.0)  # interior: the whole kernel
    centre = weights[1 * 5 + 1, 1:].reshape(4, 5)
    np.testing.assert_array_equal(centre[:3, :3], np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]]) / 16)
    assert centre[3:].sum() == 0 and centre[:, 3:].sum() == 0  # zero fill elsewhere


def test_prefix_rows_kept_or_zeroed():
    assert (cell_weights((3, 3), 2, cls_token=True)[:, :2] == 1).all()
    assert (cell_weights((3, 3), 2, cls_token=False)[:, :2] == 0).all()


def test_unknown_kernel_is_refused():
    with pytest.raises(OptionError, match="kernel"):
        cell_weights((3, 3), 1, "5x5")
