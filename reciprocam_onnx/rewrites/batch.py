"""Make the suffix take any batch of copies: -1 on the batch axis of every batch-carrying Reshape.

Exports bake the batch into Reshape shape constants (always for static-batch
models, often for dynamic ones too); graph/axes.py follows the batch axis from
the suffix's inputs to every Reshape that carries it.
"""

from __future__ import annotations

import logging

from ..errors import GraphStructureError
from ..graph.axes import make_batch_dynamic
from .base import NotApplicable, NothingToDo, Surgery

log = logging.getLogger(__name__)


def batch_dynamic(surgery: Surgery) -> None:
    """Rewrite the suffix's batch-carrying Reshapes to -1 (a required pass)."""
    if surgery.copies_per_run == 1:
        raise NothingToDo("the suffix runs one copy at a time")
    try:
        count = make_batch_dynamic(surgery.suffix, surgery.shapes())
    except GraphStructureError as exc:
        raise NotApplicable(str(exc)) from None
    log.info("rewrote %d batch-carrying Reshape constants in the suffix", count)
