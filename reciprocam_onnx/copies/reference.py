"""Masked copies in numpy: the definition copies/build.py is checked against, used by verification."""

from __future__ import annotations

import numpy as np

from ..contract import RESIDUAL, SLOT_LOG_COUNT, TOKEN_SLOT
from ..options import RESIDUALS
from .slots import Slots


def copy_feeds(
    tapped: dict[str, np.ndarray],
    slots: Slots,
    residual: str = RESIDUALS[0],
    with_slots: bool = False,
    slot_residual: bool = False,
) -> dict[str, np.ndarray]:
    """Suffix inputs for the ``len(slots)`` copies of every image in ``tapped`` ([N, T, k] each),
    image-major; an unmasked residual of one image stays [1, T, D] (the suffix broadcasts it);
    ``slot_residual``: a masked residual as slots, like the other inputs."""
    images, copies = len(tapped[RESIDUAL]), len(slots)
    feeds = {}
    for name, value in tapped.items():
        if name != RESIDUAL or slot_residual:
            rows = value[:, slots.token] * slots.weight[None, :, :, None]  # [N, n, U, k]
        elif residual == RESIDUALS[1]:  # masked
            rows = value[:, None] * slots.token_weight[None, :, :, None]  # [N, n, T, D]
        elif images == 1:
            feeds[name] = value
            continue
        else:
            rows = np.repeat(value[:, None], copies, axis=1)
        feeds[name] = np.ascontiguousarray(rows.reshape(images * copies, *rows.shape[2:]), value.dtype)
    if with_slots:
        feeds[SLOT_LOG_COUNT] = np.tile(slots.log_count, (images, 1))
        feeds[TOKEN_SLOT] = np.tile(slots.token_slot, (images, 1))
    return feeds
