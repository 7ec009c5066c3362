"""Check numerically that suffix(prefix(x)) reproduces the original logits."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx

from ..errors import SplitMismatchError
from ..runtime import lean_session, release_memory
from .split import RESIDUAL, SplitModel

log = logging.getLogger(__name__)

TOLERANCE = 1e-4


def verify_split(original: onnx.ModelProto | Path, split: SplitModel, tolerance: float = TOLERANCE) -> float:
    """Max abs logit difference over two images, batched and broadcast; raise if too big.

    Checks suffix([R1;R2], [F1;F2]) and suffix(R1, [F1;F1]) (F: every masked
    input, e.g. F's projections) against the
    original model run on each image alone. The tolerance is relative to the
    logit scale (max |logit|, at least 1).
    """
    name = split.info.input_name
    images = [np.random.default_rng(seed).standard_normal((1, *split.info.input_shape), dtype=np.float32)
              for seed in (1, 2)]
    session = lean_session(original)  # one session at a time: their weights do not stack
    expected = np.concatenate([session.run(None, {name: x})[0] for x in images])
    session = lean_session(split.prefix)
    names = [RESIDUAL, *split.info.masked_inputs]
    outputs = [session.run(names, {name: x}) for x in images]
    tapped = {key: np.concatenate(parts) for key, parts in zip(names, zip(*outputs))}
    session = lean_session(split.suffix)
    batched = session.run(None, tapped)[0]
    copies = {key: value[[0, 0]] for key, value in tapped.items()}
    broadcast = session.run(None, {**copies, RESIDUAL: tapped[RESIDUAL][:1]})[0]
    del session
    release_memory()
    scale = max(1.0, float(np.abs(expected).max()))
    error = max(np.abs(batched - expected).max(), np.abs(broadcast - expected[[0, 0]]).max()) / scale
    if not error <= tolerance:
        raise SplitMismatchError(
            f"suffix(prefix(x)) differs from the model's logits by {error:.3g} "
            f"(relative to the logit scale {scale:.3g}; tolerance {tolerance:g})"
        )
    log.info("verified split: max relative logit difference %.2e", error)
    return float(error)
