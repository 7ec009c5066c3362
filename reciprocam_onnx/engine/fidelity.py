"""Does a reduced-precision map still show what float32 shows? (``precision="bfloat16"``)

bfloat16 keeps about 3 significant digits. Where the cells' scores differ by
less than that (a confident model whose softmax moves by 1e-5 across cells),
rounding replaces the map with noise. The check reruns a few cells in float32:
the reduced map's highest and lowest cell, and the cells at its quartiles. A
min-max map does not change under an affine change of the scores, so the
float32 scores of the extremes fix where each checked cell should fall in
[0, 1]; a map whose checked cells miss that place by more than TOLERANCE is
unresolved (docs/benchmarks.md shows how the tolerance was chosen).
"""

from __future__ import annotations

import numpy as np

TOLERANCE = 0.05  # of the map's [0, 1] range
QUANTILES = (0.25, 0.5, 0.75)


def checked_cells(reduced: np.ndarray) -> list[int]:
    """The cells to rerun in float32, from one map's reduced-precision scores [N]: highest, lowest, then
    the cells at the quartiles."""
    order = np.argsort(reduced, kind="stable")
    middle = [int(order[round(q * (len(order) - 1))]) for q in QUANTILES]
    return [int(order[-1]), int(order[0]), *middle]


def map_error(reduced: np.ndarray, cells: list[int], exact: np.ndarray) -> float:
    """The largest distance, in map units, between where the checked ``cells`` fall in the reduced map
    (scores [N]) and where their float32 scores ``exact`` (in ``cells`` order) put them; inf when the
    float32 scores do not order the extremes as the reduced ones do."""
    high, low = cells[0], cells[1]
    span = exact[0] - exact[1]
    if not (span > 0 and reduced[high] > reduced[low]):
        return float("inf")
    placed = (reduced[cells] - reduced[low]) / (reduced[high] - reduced[low])
    return float(np.abs(placed - (exact - exact[1]) / span).max())
