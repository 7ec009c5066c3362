"""Check numerically that suffix(prefix(x)) reproduces the original logits."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx

from ..contract import SharedSplit, SplitModel, prefix_outputs
from ..copies.masks import cell_weights
from ..copies.reference import copy_feeds
from ..copies.slots import compact_slots, identity_slots
from ..errors import SplitMismatchError, onnxruntime_errors
from ..graph.runtime import lean_session, release_memory

log = logging.getLogger(__name__)

TOLERANCE = {"float32": 1e-4, "float16": 2e-2}  # float16 graphs: ~10 rounding steps of 2**-10


def verify_split(original: onnx.ModelProto | Path, split: SplitModel, tolerance: float | None = None) -> float:
    """Max abs logit difference, relative to the logit scale; raise if above ``tolerance``
    (default: TOLERANCE for the split's compute dtype).

    Checks suffix([R1;R2], [F1;F2]) and suffix(R1, [F1;F1]) (F: every masked
    input, e.g. F's projections) against the original model run on each
    image alone. A suffix that takes slots (rewrites/slots.py) must also give
    two masked copies of image 1 the same logits in slot form as one row per
    token. The scale is max |logit|, at least 1.
    """
    return _verify(original, split.prefix, [(split, prefix_outputs(split.info, shared=False))], tolerance)


def verify_shared(original: onnx.ModelProto | Path, shared: SharedSplit, tolerance: float | None = None) -> float:
    """As verify_split, for every cut behind a shared prefix: the model and the prefix run once."""
    cuts = [(cut, prefix_outputs(cut.info, shared=True)) for cut in shared.cuts]
    return _verify(original, shared.prefix, cuts, tolerance)


def _verify(
    original: onnx.ModelProto | Path,
    prefix: onnx.ModelProto,
    cuts: list[tuple[SplitModel, dict[str, str]]],
    tolerance: float | None,
) -> float:
    """The largest relative error of the ``cuts`` (each with {suffix input: prefix output}); raise above
    ``tolerance``."""
    with onnxruntime_errors("verifying the split"):
        expected, errors = _errors(original, prefix, cuts)
    if not np.isfinite(expected).all():
        raise SplitMismatchError(
            "the model itself returns NaN or infinite logits for a test input (corrupt weights?): it cannot be "
            "split or explained"
        )
    info = cuts[0][0].info
    tolerance = tolerance if tolerance is not None else TOLERANCE.get(info.dtype, TOLERANCE["float16"])
    scale = max(1.0, float(np.abs(expected).max()))
    error = float(max(errors)) / scale
    if not error <= tolerance:
        at = f" (cut at block {cuts[int(np.argmax(errors)) // 3][0].info.block})" if len(cuts) > 1 else ""
        raise SplitMismatchError(
            f"suffix(prefix(x)) differs from the model's logits by {error:.3g}{at} "
            f"(relative to the logit scale {scale:.3g}; tolerance {tolerance:g})"
        )
    log.info("verified split: max relative logit difference %.2e", error)
    return error


def _errors(
    original: onnx.ModelProto | Path, prefix: onnx.ModelProto, cuts: list[tuple[SplitModel, dict[str, str]]]
) -> tuple[np.ndarray, list[float]]:
    """The original logits of two random images, and each cut's max abs differences from them (three per cut:
    batched, broadcast, slots against rows)."""
    info = cuts[0][0].info
    images = [info.image.random(1, seed) for seed in (1, 2)]
    session = lean_session(original)  # one session at a time: their weights do not stack
    expected = np.concatenate([session.run(None, {info.input_name: x})[0] for x in images])
    session = lean_session(prefix)
    names = [output for _, feeds in cuts for output in feeds.values()]
    outputs = [session.run(names, {info.input_name: x}) for x in images]
    every = {key: np.concatenate(parts) for key, parts in zip(names, zip(*outputs))}
    errors = []
    for split, feeds in cuts:
        errors.extend(_cut_errors(split, {name: every[output] for name, output in feeds.items()}, expected))
    return expected, errors


def _cut_errors(split: SplitModel, tapped: dict[str, np.ndarray], expected: np.ndarray) -> list[float]:
    """One cut's suffix on two images' prefix outputs ``tapped``: its max abs differences from ``expected``."""
    info = split.info
    session = lean_session(split.suffix)
    unmasked = identity_slots(np.ones((1, info.tokens), np.float32))
    batched = _run(session, copy_feeds(tapped, unmasked, with_slots=info.slots), info.copies_per_run)
    first = {key: value[:1] for key, value in tapped.items()}
    twice = identity_slots(np.ones((2, info.tokens), np.float32))
    broadcast = _run(session, copy_feeds(first, twice, with_slots=info.slots), info.copies_per_run)
    errors = [np.abs(batched - expected).max(), np.abs(broadcast - expected[[0, 0]]).max(), 0.0]
    if info.slots:
        weights = cell_weights(info.grid, info.prefix_tokens)[[0, info.cells // 2]]
        as_rows = session.run(None, copy_feeds(first, identity_slots(weights), with_slots=True))[0]
        as_slots = session.run(None, copy_feeds(first, compact_slots(weights, info.prefix_tokens), with_slots=True))[0]
        errors[2] = np.abs(as_slots - as_rows).max()
    del session
    release_memory()
    return [float(e) for e in errors]


def _run(session, feeds: dict[str, np.ndarray], per_run: int | None) -> np.ndarray:
    """The suffix's logits for the copies in ``feeds``, at most ``per_run`` copies per run
    (inputs of one row, such as a broadcast residual, go to every run)."""
    rows = max(len(value) for value in feeds.values())
    step = per_run or rows
    parts = [
        session.run(None, {k: v[start : start + step] if len(v) == rows else v for k, v in feeds.items()})[0]
        for start in range(0, rows, step)
    ]
    return np.concatenate(parts)
