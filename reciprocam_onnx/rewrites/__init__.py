"""Graph rewrites, one per module, all of one shape (base.py), run in the declared orders below.

``SPLIT_PASSES`` make a suffix that takes any batch of copies and, with
``optimize``, computes less for the same logits; ``PRECISION_PASSES`` change
how the engine's suffix computes (docs/design.md describes each).
"""

from __future__ import annotations

from ..options import PRECISIONS
from .base import NotApplicable, Pass, Surgery, run_passes
from .batch import batch_dynamic
from .dynamic_quantization import one_copy_per_run
from .float16 import float16
from .head_rows import head_rows
from .hoist import hoist
from .slots import slots

ONE_COPY_PER_RUN = Pass("one-copy-per-run", one_copy_per_run, keeps_shapes=True)
BATCH_DYNAMIC = Pass("batch-dynamic", batch_dynamic, required=True, keeps_shapes=True)
OPTIMIZING = (Pass("head-rows", head_rows), Pass("hoist", hoist), Pass("slots", slots))
# per Options.precision; bfloat16 runs the float32 suffix in OpenVINO (engine/openvino_suffix.py)
PRECISION_PASSES = dict(zip(PRECISIONS, ((), (Pass(PRECISIONS[1], float16),), ())))


def split_passes(optimize: bool) -> tuple[Pass, ...]:
    """The passes a split runs, in order."""
    required = (ONE_COPY_PER_RUN, BATCH_DYNAMIC)
    return (*required, *OPTIMIZING) if optimize else required


__all__ = ["NotApplicable", "Pass", "Surgery", "run_passes", "split_passes", "PRECISION_PASSES"]
