"""Graph rewrites, one per module, all of one shape (base.py), run in the declared orders below.

``SPLIT_PASSES`` make a suffix that takes any batch of copies and, with
``optimize``, computes less for the same logits; the engine runs
:func:`residual_passes` on the split's suffix for its residual option, then
``PRECISION_PASSES``, which change how it computes (docs/design.md describes each).
"""

from __future__ import annotations

from functools import partial

from ..options import PRECISIONS, RESIDUALS
from .base import NotApplicable, Pass, Surgery, run_passes
from .batch import batch_dynamic
from .dynamic_quantization import one_copy_per_run
from .float16 import float16
from .head_rows import head_rows
from .hoist import hoist
from .slots import slots
from .slots_through import slots_through

SLOTS_THROUGH = "slots-through"
ONE_COPY_PER_RUN = Pass("one-copy-per-run", one_copy_per_run, keeps_shapes=True)
BATCH_DYNAMIC = Pass("batch-dynamic", batch_dynamic, required=True, keeps_shapes=True)
OPTIMIZING = (Pass("head-rows", head_rows), Pass("hoist", hoist, changes_prefix=True), Pass("slots", slots))
# per Options.precision; bfloat16 runs the float32 suffix in OpenVINO (engine/openvino_suffix.py)
PRECISION_PASSES = dict(zip(PRECISIONS, ((), (Pass(PRECISIONS[1], float16),), ())))


def residual_passes(residual: str, prefix_tokens: int) -> tuple[Pass, ...]:
    """The passes the engine runs on a suffix that takes slots: with a masked residual, every block after
    the cut runs on slots too."""
    if residual == RESIDUALS[1]:
        return (Pass(SLOTS_THROUGH, partial(slots_through, prefix_tokens=prefix_tokens)),)
    return ()


def split_passes(optimize: bool) -> tuple[Pass, ...]:
    """The passes a split runs, in order."""
    required = (ONE_COPY_PER_RUN, BATCH_DYNAMIC)
    return (*required, *OPTIMIZING) if optimize else required


__all__ = [
    "NotApplicable",
    "Pass",
    "Surgery",
    "run_passes",
    "split_passes",
    "residual_passes",
    "PRECISION_PASSES",
    "SLOTS_THROUGH",
]
