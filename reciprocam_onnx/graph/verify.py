"""Check numerically that suffix(prefix(x)) reproduces the original logits."""
from __future__ import annotations

import logging

import numpy as np
import onnx

from ..errors import SplitMismatchError
from .probe import random_image
from .split import RESIDUAL, SplitModel

log = logging.getLogger(__name__)

TOLERANCE = 1e-4


def _session(model: onnx.ModelProto):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def verify_split(original_model: onnx.ModelProto, split: SplitModel, tolerance: float = TOLERANCE) -> float:
    """Max abs logit difference over two images, batched and broadcast; raise if too big.

    Checks suffix([R1;R2], [F1;F2]) and suffix(R1, [F1;F1]) (F: every masked
    input, e.g. F's projections) against the
    original model run on each image alone. The tolerance is relative to the
    logit scale (max |logit|, at least 1).
    """
    original, prefix, suffix = map(_session, (original_model, split.prefix, split.suffix))
    name = split.info.input_name
    images = [random_image(original_model, seed=seed) for seed in (1, 2)]
    expected = np.concatenate([original.run(None, {name: x})[0] for x in images])
    names = [RESIDUAL, *split.info.masked_inputs]
    outputs = [prefix.run(names, {name: x}) for x in images]
    tapped = {key: np.concatenate(parts) for key, parts in zip(names, zip(*outputs))}
    batched = suffix.run(None, tapped)[0]
    copies = {key: value[[0, 0]] for key, value in tapped.items()}
    broadcast = suffix.run(None, {**copies, RESIDUAL: tapped[RESIDUAL][:1]})[0]
    scale = max(1.0, float(np.abs(expected).max()))
    error = max(np.abs(batched - expected).max(), np.abs(broadcast - expected[[0, 0]]).max()) / scale
    if not error <= tolerance:
        raise SplitMismatchError(
            f"suffix(prefix(x)) differs from the model's logits by {error:.3g} "
            f"(relative to the logit scale {scale:.3g}; tolerance {tolerance:g})"
        )
    log.info("verified split: max relative logit difference %.2e", error)
    return float(error)
