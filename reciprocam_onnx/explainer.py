"""The ViT-ReciproCAM engine on ONNX Runtime: prefix once, masked copies in chunks.

    images ──prefix──► R, F  (once per batch of images, kept on the device)
    (image, slot tables of some copies) ──masked suffix──► logits per copy
       row 0 of each image: all-ones weights, one slot per token = the unmasked model
       row 1 + k: the copy of grid cell k (masks.cell_weights, as slots.compact_slots
       when the suffix runs attention on distinct rows)

Copies are run ``max_batch`` at a time, image by image, so peak memory does not
grow with the number of cells or images.
"""
from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx

from .errors import ImageError, OptionError
from .graph.distinct import SLOT_LOG_COUNT, TOKEN_SLOT
from .graph.masking import IMAGE, SLOT_TOKEN, SLOT_WEIGHT, masked_suffix
from .graph.precision import check_precision, to_float16
from .graph.split import RESIDUAL, SplitInfo, SplitModel, is_split_folder, load_split, split_model
from .masks import cell_weights
from .slots import Slots, copy_slots, identity_slots
from .normalise import minmax_normalise
from .runtime import make_session, on_cuda, release_memory

log = logging.getLogger(__name__)

SCORES = ("softmax", "logits")
MEMORY_BUDGET_BYTES = {"cpu": 256 << 20, "cuda": 2 << 30}
# On CPU, runs of ~1,500 token rows keep each layer's working set in cache: measured on
# DeiT-S, 8 copies per run took 0.68 s per image where 40 took 0.79 s and 197 took 0.92 s.
CPU_TOKENS_PER_RUN = 1536
SLOTS_PER_3X3 = 10  # a 3x3 copy's weighted tokens plus the shared zero row


@dataclass(frozen=True)
class Explanation:
    """Result of :meth:`Explainer.explain` for a batch of B images."""

    maps: np.ndarray  # float32 [B, h, w] in [0, 1], for each image's target class
    targets: np.ndarray  # int64 [B]
    scores: np.ndarray  # float32 [B, C], the unmasked model's scores


class Explainer:
    """ViT-ReciproCAM for an ONNX ViT classifier (a model file, ModelProto or split folder).

    >>> ex = Explainer("model.onnx")
    >>> out = ex.explain(images)          # images: float32 [B, 3, H, W], normalised
    >>> out.maps, out.targets, out.scores

    Options follow ALGORITHM.md: ``block`` (default -2), ``kernel`` ("3x3" or "1x1"),
    ``cls_token``, ``score`` ("softmax" or "logits"), ``residual`` ("unmasked" or
    "masked"). ``providers``: default CUDA when it really starts, else CPU.
    ``max_batch``: masked copies per suffix run (default from a memory budget).
    ``optimize``: the exact suffix rewrites (rows.py, hoist.py, distinct.py); False runs the
    plain cut. ``precision="float16"`` runs the masked copies in half precision (meant
    for CUDA; the prefix and the prediction's inputs stay float32).
    """

    def __init__(self, model: str | os.PathLike | onnx.ModelProto, block: int | None = None,
                 kernel: str = "3x3", cls_token: bool = True, score: str = "softmax",
                 residual: str = "unmasked", providers: Sequence[str] | None = None,
                 max_batch: int | None = None, optimize: bool = True, precision: str = "float32"):
        if score not in SCORES:
            raise OptionError(f"score must be one of {SCORES}, not {score!r}")
        check_precision(precision)
        split = _load_split(model, block, optimize)
        self.info = info = split.info
        self.score = score
        weights = cell_weights(info.grid, info.prefix_tokens, kernel, cls_token)
        self._unmasked = identity_slots(np.ones((1, info.tokens), np.float32))
        self._cells = copy_slots(weights, info.prefix_tokens, info.slots)
        with tempfile.TemporaryDirectory(prefix="reciprocam-") as folder:
            paths = _write_graphs(split, residual, precision, Path(folder))
            del split  # ONNX Runtime holds far less memory reading a file than given bytes
            release_memory()
            self._prefix, self._suffix = (make_session(path, providers) for path in paths)
        self.device = "cuda" if on_cuda(self._suffix) else "cpu"
        self.max_batch = max_batch or default_max_batch(info, self.device)
        if self.max_batch < 1:
            raise OptionError(f"max_batch must be at least 1, not {self.max_batch}")
        log.info("explainer on %s: block %d, grid %dx%d, %d rows per suffix run",
                 self.device, info.block, *info.grid, self.max_batch)

    def explain(self, images: np.ndarray, targets: Sequence[int] | np.ndarray | None = None) -> Explanation:
        """Maps [B, h, w] for the given targets, or for each image's predicted class."""
        unmasked, cells = self.cell_scores(images)
        chosen = choose_targets(targets, unmasked, self.info.classes)
        picked = cells[np.arange(len(chosen)), :, chosen]
        maps = minmax_normalise(picked.reshape(len(chosen), *self.info.grid))
        return Explanation(maps, chosen, unmasked)

    def explain_all(self, images: np.ndarray) -> np.ndarray:
        """Maps for every class from the same runs: float32 [B, C, h, w]."""
        _, cells = self.cell_scores(images)
        return minmax_normalise(cells.transpose(0, 2, 1).reshape(len(cells), -1, *self.info.grid))

    def predict(self, images: np.ndarray) -> np.ndarray:
        """The unmasked model's scores [B, C] (softmax or logits per ``score``)."""
        images = check_images(images, self.info.input_shape)
        tapped = self._run_prefix(images)
        logits = np.empty((len(images), self.info.classes), np.float32)
        for image in range(len(images)):
            self._run_suffix(tapped, image, self._unmasked, out=logits[image:image + 1])
        return to_scores(logits, self.score)

    def cell_scores(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw scores before min-max: unmasked [B, C] and per masked copy [B, h*w, C]."""
        scores = self._row_scores(images)
        return scores[:, 0], scores[:, 1:]

    def _row_scores(self, images: np.ndarray) -> np.ndarray:
        """Scores of every row of every image: [B, 1 + h*w, C]; row 0 unmasked."""
        images = check_images(images, self.info.input_shape)
        tapped = self._run_prefix(images)
        cells = len(self._cells)
        logits = np.empty((len(images), 1 + cells, self.info.classes), np.float32)
        for image in range(len(images)):
            self._run_suffix(tapped, image, self._unmasked, out=logits[image, :1])
            for start in range(0, cells, self.max_batch):
                end = min(start + self.max_batch, cells)
                self._run_suffix(tapped, image, self._cells[start:end], out=logits[image, 1 + start:1 + end])
        return to_scores(logits, self.score)

    def _run_prefix(self, images: np.ndarray) -> dict:
        """The tapped tensors (R, F or its projections) for the batch, by name: OrtValues kept
        on the session's device, or arrays for static-batch models (run image by image)."""
        name, tapped = self.info.input_name, [RESIDUAL, *self.info.masked_inputs]
        if self.info.static_batch is not None:
            runs = [self._prefix.run(tapped, {name: images[i:i + 1]}) for i in range(len(images))]
            return {key: np.concatenate(parts) for key, parts in zip(tapped, zip(*runs))}
        binding = self._prefix.io_binding()
        binding.bind_cpu_input(name, images)
        for key in tapped:
            binding.bind_output(key, self.device)
        self._prefix.run_with_iobinding(binding)
        return dict(zip(tapped, binding.get_outputs()))

    def _run_suffix(self, tapped: dict, image: int, slots: Slots, out: np.ndarray) -> None:
        """Logits of masked copies of one image, written straight into ``out`` (a C-contiguous [rows, C] view)."""
        binding = self._suffix.io_binding()
        for name, value in tapped.items():
            if isinstance(value, np.ndarray):
                binding.bind_cpu_input(name, value)
            else:
                binding.bind_ortvalue_input(name, value)
        binding.bind_cpu_input(IMAGE, np.array([image], np.int64))
        binding.bind_cpu_input(SLOT_TOKEN, np.ascontiguousarray(slots.token))
        binding.bind_cpu_input(SLOT_WEIGHT, np.ascontiguousarray(slots.weight))
        if self.info.slots:
            binding.bind_cpu_input(SLOT_LOG_COUNT, np.ascontiguousarray(slots.log_count))
            binding.bind_cpu_input(TOKEN_SLOT, np.ascontiguousarray(slots.token_slot))
        binding.bind_output(self.info.output_name, "cpu", 0, np.float32, list(out.shape), out.ctypes.data)
        self._suffix.run_with_iobinding(binding)


def to_scores(logits: np.ndarray, score: str) -> np.ndarray:
    """Softmax over the last axis (float64), or the logits themselves.

    float64 because a confident model's top score sits within float32 rounding
    of 1.0, where the masked copies' differences (the map) would vanish.
    """
    if score == "logits":
        return logits
    wide = logits.astype(np.float64)
    shifted = np.exp(wide - wide.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def check_images(images: np.ndarray, expected: tuple[int, int, int]) -> np.ndarray:
    """``images`` as contiguous float32 [B, C, H, W] of the model's size, else ImageError."""
    array = np.asarray(images)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or tuple(array.shape[1:]) != tuple(expected):
        raise ImageError(f"images must be [B, {', '.join(map(str, expected))}] float32 "
                         f"(normalised, NCHW); got shape {list(np.shape(images))}")
    return np.ascontiguousarray(array, dtype=np.float32)


def choose_targets(targets, scores: np.ndarray, classes: int) -> np.ndarray:
    """The given targets (checked), else the argmax of ``scores`` per image."""
    if targets is None:
        return scores.argmax(axis=1).astype(np.int64)
    chosen = np.asarray(targets, dtype=np.int64).reshape(-1)
    if chosen.shape != (len(scores),):
        raise OptionError(f"need one target per image: {len(scores)} images, {chosen.size} targets")
    if chosen.min() < 0 or chosen.max() >= classes:
        raise OptionError(f"targets must lie in 0..{classes - 1}; got {chosen.tolist()}")
    return chosen


def _write_graphs(split: SplitModel, residual: str, precision: str, folder: Path) -> tuple[Path, Path]:
    """prefix.onnx and the masked suffix (in ``precision``), written into ``folder``."""
    prefix, suffix = folder / "prefix.onnx", folder / "suffix.onnx"
    prefix.write_bytes(split.prefix.SerializeToString())
    masked = masked_suffix(split.suffix, residual)
    if precision == "float16":
        masked = to_float16(masked)
    suffix.write_bytes(masked.SerializeToString())
    return prefix, suffix


def default_max_batch(info: SplitInfo, device: str) -> int:
    """Copies per suffix run: within the device's activation budget, and on CPU about
    CPU_TOKENS_PER_RUN token rows (cache-sized runs are faster there). A copy costs T rows,
    or only its slots when its one block after the tap runs attention on distinct rows."""
    heads = max(1, info.width // 64)
    per_row = 4 * info.tokens * (16 * info.width + 2 * heads * info.tokens)
    rows = MEMORY_BUDGET_BYTES[device] // per_row
    if device == "cpu":
        last = info.block == info.blocks - 1
        computed = info.prefix_tokens + SLOTS_PER_3X3 if info.slots and last else info.tokens
        rows = min(rows, CPU_TOKENS_PER_RUN // computed)
    return int(np.clip(rows, 1, 1024))


def _load_split(model, block: int | None, optimize: bool) -> SplitModel:
    if not isinstance(model, onnx.ModelProto) and is_split_folder(model):
        split = load_split(model)
        if block is not None and block % split.info.blocks != split.info.block:
            raise OptionError(f"{model} was split at block {split.info.block}; "
                              f"re-split it to explain block {block}")
        return split
    return split_model(model if isinstance(model, onnx.ModelProto) else Path(model),
                       -2 if block is None else block, optimize=optimize)
