"""Does a reduced-precision map still show what float32 shows? (``precision="bfloat16"``)

bfloat16 keeps about 3 significant digits. Where the cells' scores differ by
less than that (a confident model whose softmax moves by 1e-5 across cells),
rounding replaces the map with noise. Before the copies run, 8% of the cells (16 at least) spread
over the grid run in both precisions. A min-max map does not change under an
affine change of the scores, so the float32 scores are fitted as an affine
function of the reduced ones; what the fit leaves is rounding noise, and noise
against the cells' spread estimates the Pearson correlation of the reduced map
with the float32 map. Below MIN_PEARSON the map is unresolved, and its copies
can run in float32 from the start (docs/benchmarks.md shows how well the estimate
follows the real correlation).
"""

from __future__ import annotations

import numpy as np

CHECKED = 16  # cells rerun in float32 per map, at least: 8% of a 14x14 grid
CHECKED_SHARE = 1 / 12  # and 8% of a bigger grid (16 of 576 cells let a map of Pearson 0.877 through)
MIN_PEARSON = 0.98


def checked_cells(count: int) -> list[int]:
    """max(CHECKED, CHECKED_SHARE of ``count``) cells spread evenly over ``count`` (all of them on smaller
    grids)."""
    checked = min(count, max(CHECKED, round(count * CHECKED_SHARE)))
    return sorted({int(k) for k in np.linspace(0, count - 1, checked).round()})


def estimated_pearson(reduced: np.ndarray, exact: np.ndarray) -> float:
    """The Pearson correlation a map can have with the float32 map, estimated from the same checked cells'
    reduced-precision scores ``reduced`` [k] and float32 scores ``exact`` [k]: 0 when the noise covers the
    map's whole spread."""
    design = np.stack([reduced, np.ones_like(reduced)], axis=1)
    (slope, intercept), *_ = np.linalg.lstsq(design, exact, rcond=None)
    noise = np.sum((exact - design @ (slope, intercept)) ** 2) / max(len(exact) - 2, 1)
    spread = slope**2 * np.var(reduced)
    if not spread > 0:
        return 0.0
    return float(np.sqrt(max(0.0, 1.0 - noise / spread)))
