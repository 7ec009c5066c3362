"""The ViT-ReciproCAM engine on ONNX Runtime: prefix once, masked copies in chunks.

    images ──prefix──► R, F  (once per batch of images, kept on the device)
    (image, slot tables of some copies) ──engine suffix──► logits per copy
       row 0 of each image: all-ones weights, one slot per token = the unmasked model
       row 1 + k: the copy of grid cell k (copies/masks.py, as slots when the suffix takes them)

Copies are run ``max_batch`` at a time, image by image, so peak memory does not
grow with the number of cells or images. One split serves every option that
does not change the cut (:meth:`Explainer.with_options`).
"""

from __future__ import annotations

import copy
import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import onnxruntime as ort

from ..contract import (
    IMAGE_INDEX,
    SLOT_LOG_COUNT,
    SLOT_TOKEN,
    SLOT_WEIGHT,
    TOKEN_SLOT,
    Rewrite,
    SplitInfo,
    SplitModel,
    is_split_folder,
    load_split,
    prefix_outputs,
)
from ..copies.masks import cell_weights
from ..copies.slots import Slots, copy_slots, identity_slots
from ..errors import OptionError, onnxruntime_errors
from ..graph.runtime import make_session, on_cuda, release_memory
from ..options import CUT, PRECISIONS, UNRESOLVED, Options, resolve
from ..rewrites import PRECISION_PASSES, Surgery, run_passes
from ..split.pipeline import resolve_block, split_model
from .base import Explanation, Targets, check_class_scores, check_images, choose_targets
from .fidelity import MIN_PEARSON, checked_cells, estimated_pearson
from .openvino_suffix import OpenVINOSuffix, bfloat16_supported
from .scores import check_finite, evidence, first_few, minmax_normalise, to_scores, unresolved
from .suffix import engine_suffix, suffix_for_residual

log = logging.getLogger(__name__)

MEMORY_BUDGET_BYTES = {"cpu": 256 << 20, "cuda": 2 << 30}
# On CPU, runs of ~1,500 token rows keep each layer's working set in cache: measured on
# DeiT-S, 8 copies per run took 0.68 s per image where 40 took 0.79 s and 197 took 0.92 s.
CPU_TOKENS_PER_RUN = 1536
SLOTS_PER_3X3 = 10  # a 3x3 copy's weighted tokens plus the shared zero row
IMAGES_PER_PREFIX_RUN = 8  # images whose prefix outputs are held at once


class Explainer:
    """ViT-ReciproCAM for an ONNX ViT classifier (a model file, ModelProto or split folder).

    >>> ex = Explainer("model.onnx")                  # or Explainer("model.onnx", Options(kernel="1x1"))
    >>> out = ex.explain(images)                      # images: float32 [B, 3, H, W], normalised
    >>> out.maps, out.targets, out.scores

    Options (options.py, docs/algorithm.md) come as an ``Options`` and/or keywords.
    ``providers``: default CUDA when it really starts, else CPU.
    """

    def __init__(
        self,
        model: str | os.PathLike | onnx.ModelProto,
        options: Options | None = None,
        *,
        providers: Sequence[str] | None = None,
        **changes: Any,
    ):
        asked = resolve(options, **changes)
        explicit = set(changes) | set(asked.changed() if options is not None else {})
        self._open(_load_split(model, asked, explicit), asked, providers)

    @classmethod
    def behind(
        cls, cut: SplitModel, prefix: ort.InferenceSession, options: Options, providers: Sequence[str] | None = None
    ) -> Explainer:
        """An explainer of one cut of a ``SharedSplit`` (split_blocks), fed by ``prefix``, the session of the
        shared prefix that other cuts' explainers read too."""
        explainer = cls.__new__(cls)
        explainer._open(cut, options, providers, prefix)
        return explainer

    def _open(
        self,
        split: SplitModel,
        asked: Options,
        providers: Sequence[str] | None,
        shared_prefix: ort.InferenceSession | None = None,
    ) -> None:
        check_class_scores(split.info)
        self.options = replace(
            asked, block=split.info.block, optimize=split.info.optimized, input_size=split.info.input_shape[1:]
        )
        self._providers = providers
        self._split_info = split.info
        self._split_suffix = split.suffix  # kept for other residual/precision options (with_options)
        self.feeds = prefix_outputs(split.info, shared=shared_prefix is not None)
        with tempfile.TemporaryDirectory(prefix="reciprocam-") as folder:
            prefix = split.prefix_file or Path(folder) / "prefix.onnx"
            if shared_prefix is None and split.prefix_file is None:
                prefix.write_bytes(split.prefix.SerializeToString())
            suffix = self._write_suffix(Path(folder))  # graph work done before any session holds memory
            del split  # ONNX Runtime holds far less memory reading a file than given bytes
            release_memory()
            self._prefix = shared_prefix or make_session(prefix, providers)
            self._suffix = make_session(suffix, providers)
            self.device = "cuda" if on_cuda(self._suffix) else "cpu"
            self._reduced = self._reduced_suffix(suffix)
        self._configure()

    def with_options(self, options: Options | None = None, **changes: Any) -> Explainer:
        """This explainer with other copy, read-out or run options: the same split and prefix session
        (block and optimize change the cut: build a new Explainer for those)."""
        new = resolve(options if options is not None else self.options, **changes)
        moved = [name for name in CUT if getattr(new, name) != getattr(self.options, name)]
        if "block" in moved and resolve_block(new.block, self.info.blocks) == self.info.block:
            moved.remove("block")
        if "input_size" in moved and new.input_size is None:  # the default: the size this split was made for
            moved.remove("input_size")
        if moved:
            raise OptionError(f"{', '.join(moved)} change the cut: build a new Explainer for that")
        clone = copy.copy(self)
        clone.options = replace(new, block=self.options.block, input_size=self.options.input_size)
        if (new.residual, new.precision) != (self.options.residual, self.options.precision):
            with tempfile.TemporaryDirectory(prefix="reciprocam-") as folder:
                suffix = clone._write_suffix(Path(folder))
                clone._suffix = make_session(suffix, self._providers)
                clone._reduced = clone._reduced_suffix(suffix)
        clone._configure()
        return clone

    def explain(self, images: np.ndarray, targets: Targets = None, *, all_classes: bool = False) -> Explanation:
        """Maps [B, h, w] for the given targets, or for each image's predicted class; with ``all_classes``,
        every class's map too (``Explanation.every``), from the same runs."""
        unmasked, cells = self.cell_scores(images, targets)
        return self.explanation(unmasked, cells, choose_targets(targets, unmasked, self.info.classes), all_classes)

    def explanation(
        self, unmasked: np.ndarray, cells: np.ndarray, targets: np.ndarray, all_classes: bool = False
    ) -> Explanation:
        """The maps of ``targets`` (and with ``all_classes`` of every class) from ``cell_scores``' scores."""
        if all_classes:
            per_class = evidence(cells, self.options.window).transpose(0, 2, 1)
            every = minmax_normalise(per_class.reshape(len(cells), -1, *self.info.grid))
            return Explanation(every[np.arange(len(targets)), targets], targets, unmasked, every)
        picked = cells[np.arange(len(targets)), :, targets]
        maps = minmax_normalise(evidence(picked, self.options.window).reshape(len(targets), *self.info.grid))
        return Explanation(maps, targets, unmasked)

    def explain_all(self, images: np.ndarray) -> np.ndarray:
        """Maps for every class from the same runs: float32 [B, C, h, w]."""
        every = self.explain(images, all_classes=True).every
        assert every is not None
        return every

    def predict(self, images: np.ndarray) -> np.ndarray:
        """The unmasked model's scores [B, C] (softmax or logits per ``options.score``)."""
        images = check_images(images, self.info.image)
        logits = np.empty((len(images), self.info.classes), np.float32)
        for first in range(0, len(images), IMAGES_PER_PREFIX_RUN):
            group = images[first : first + IMAGES_PER_PREFIX_RUN]
            tapped = self._run_prefix(group)
            for image in range(len(group)):
                self._run_suffix(tapped, image, self._unmasked, out=logits[first + image : first + image + 1])
        check_finite(logits)
        return to_scores(logits, self.options.score)

    def cell_scores(self, images: np.ndarray, targets: Targets = None) -> tuple[np.ndarray, np.ndarray]:
        """Raw scores before min-max: unmasked [B, C] and per masked copy [B, h*w, C]. Images go
        through the prefix IMAGES_PER_PREFIX_RUN at a time: memory does not grow with B. In bfloat16,
        each image's map of its target (default: the predicted class) is checked (fidelity.py)."""
        return tap_scores([self], self._prefix, check_images(images, self.info.image), targets)[0]

    def checked_targets(self, targets: Targets, images: int) -> np.ndarray | None:
        """The given targets, checked against the model's classes (None: each image's predicted class)."""
        if targets is None:
            return None
        return choose_targets(targets, np.zeros((images, self.info.classes)), self.info.classes)

    def logits_for(self, images: int) -> np.ndarray:
        """Room for the logits of ``images`` images: float32 [images, 1 + h*w, C] (row 0 unmasked)."""
        return np.empty((images, 1 + len(self._cells), self.info.classes), np.float32)

    def group_logits(self, tapped: dict, out: np.ndarray, targets: np.ndarray | None) -> list[int]:
        """The unmasked and masked logits of each image of a prefix run (``tapped``: its outputs by suffix
        input) into ``out``, a row per image; returns the images whose bfloat16 map rounding erased
        (recomputed or warned about, per options.unresolved). ``targets``: the group's, or None for the
        predicted classes."""
        arrays = {k: v if isinstance(v, np.ndarray) else v.numpy() for k, v in tapped.items()} if self._reduced else {}
        erased = []
        for image in range(len(out)):
            row = out[image]
            self._run_suffix(tapped, image, self._unmasked, out=row[:1])
            if self._reduced is None:
                self._run_cells(self._run_suffix, tapped, image, row)
                continue
            target = int(row[0].argmax()) if targets is None else int(targets[image])
            if not self._reduced_cells(tapped, arrays, image, row, target):
                erased.append(image)
        return erased

    def scores_of(self, logits: np.ndarray, erased: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """(unmasked [B, C], per copy [B, h*w, C]) scores from ``logits_for``'s array once filled, after the
        checks and warnings on them (``erased``: group_logits' images, by index in the whole batch)."""
        check_finite(logits)
        if self._reduced is None:
            self._warn_if_unresolved(logits)
        elif erased:
            self._report_erased(erased, len(logits))
        scores = to_scores(logits, self.options.score)
        return scores[:, 0], scores[:, 1:]

    def _run_cells(self, run, tapped: dict, image: int, out: np.ndarray, skip: Sequence[int] = ()) -> None:
        """The masked copies of one image but the cells in ``skip`` through ``run`` (a suffix runner),
        max_batch at a time, into out[1:]."""
        rest = np.setdiff1d(np.arange(len(self._cells)), skip)
        scores = np.empty((len(rest), out.shape[1]), out.dtype)
        for start in range(0, len(rest), self.max_batch):
            part = rest[start : start + self.max_batch]
            run(tapped, image, self._cells[part.tolist()], out=scores[start : start + len(part)])
        out[1 + rest] = scores

    def _reduced_cells(self, tapped: dict, arrays: dict, image: int, out: np.ndarray, target: int) -> bool:
        """One image's copies in reduced precision, into out[1:], after a check of a few cells in both
        precisions (fidelity.py), whose cells are not run again. False when rounding would erase the map of
        ``target``: the copies then run in float32 instead, unless options.unresolved says warn. ``arrays``:
        ``tapped`` as numpy arrays."""
        checked = checked_cells(len(self._cells))
        exact, reduced = (np.empty((len(checked), self.info.classes), np.float32) for _ in range(2))
        self._run_suffix(tapped, image, self._cells[checked], exact)
        self._run_reduced(arrays, image, self._cells[checked], reduced)
        score = self.options.score
        resolved = estimated_pearson(to_scores(reduced, score)[:, target], to_scores(exact, score)[:, target])
        recompute = resolved < MIN_PEARSON and self.options.unresolved == UNRESOLVED[0]
        out[1 + np.array(checked)] = exact if recompute else reduced
        if recompute:
            self._run_cells(self._run_suffix, tapped, image, out, skip=checked)
        else:
            self._run_cells(self._run_reduced, arrays, image, out, skip=checked)
        return resolved >= MIN_PEARSON

    def _report_erased(self, erased: list[int], images: int) -> None:
        if self.options.unresolved == UNRESOLVED[0]:
            outcome = "recomputed in float32"
        else:
            outcome = (
                "their cells' scores differ by less than bfloat16 resolves; precision='float32' (or "
                "unresolved='recompute') resolves them"
            )
        log.warning(
            "bfloat16 rounding erased the maps of %d of %d images (%s): %s",
            len(erased),
            images,
            first_few(erased),
            outcome,
        )

    def _warn_if_unresolved(self, logits: np.ndarray) -> None:
        """One warning line when the model's precision cannot resolve some images' maps."""
        compute = PRECISIONS[1] if self.options.precision == PRECISIONS[1] else self.info.dtype
        flagged = np.flatnonzero(unresolved(logits, compute))
        if flagged.size:
            log.warning(
                "the maps of %d of %d images (%s) are below this model's output precision%s: their cells' "
                "scores barely differ; a float32 model (and precision='float32') resolves them",
                flagged.size,
                len(logits),
                first_few(flagged),
                f" ({compute})" if compute != PRECISIONS[0] else "",
            )

    def _write_suffix(self, folder: Path) -> Path:
        """The engine suffix for the residual and precision options, written into ``folder``;
        records the residual and precision passes in ``self.info``."""
        split_info = self._split_info
        suffix, before, self._slot_residual = suffix_for_residual(self._split_suffix, split_info, self.options.residual)
        graph = engine_suffix(suffix, self.options.residual, self._slot_residual)
        passes = PRECISION_PASSES[self.options.precision]
        after: tuple[Rewrite, ...] = ()
        if passes:
            surgery, after = run_passes(Surgery(gs.import_onnx(graph), graph), passes)
            graph = surgery.export_suffix()
        self.info = replace(split_info, rewrites=split_info.rewrites + before + after)
        path = folder / "suffix.onnx"
        path.write_bytes(graph.SerializeToString())
        return path

    def _reduced_suffix(self, suffix: Path) -> OpenVINOSuffix | None:
        """OpenVINO's bfloat16 runner of the suffix for precision='bfloat16' (None: float32 or float16 run in
        ONNX Runtime). A CPU without bfloat16 arithmetic gets float32, with one warning line."""
        if self.options.precision != PRECISIONS[2]:
            return None
        if self.device == "cuda":
            raise OptionError("precision='bfloat16' runs on the CPU (OpenVINO): use float16 on CUDA, or run on the CPU")
        if not bfloat16_supported():
            log.warning("this CPU has no bfloat16 arithmetic (AVX512-BF16 or AMX): running in float32 instead")
            return None
        return OpenVINOSuffix(suffix, self.info.output_name)

    def _run_reduced(self, tapped: dict, image: int, slots: Slots, out: np.ndarray) -> None:
        """Logits of masked copies of one image in reduced precision (OpenVINO), into ``out``."""
        assert self._reduced is not None
        self._reduced.run({**tapped, **self._copy_feeds(image, slots)}, out)

    def _copy_feeds(self, image: int, slots: Slots) -> dict[str, np.ndarray]:
        """The engine suffix's inputs that pick the image and describe its copies (C-contiguous)."""
        feeds = {IMAGE_INDEX: np.array([image], np.int64), SLOT_TOKEN: slots.token, SLOT_WEIGHT: slots.weight}
        if self.info.slots:
            feeds.update({SLOT_LOG_COUNT: slots.log_count, TOKEN_SLOT: slots.token_slot})
        return {name: np.ascontiguousarray(table) for name, table in feeds.items()}

    def _configure(self) -> None:
        """Slot tables and the run size for the current options."""
        info, options = self.info, self.options
        weights = cell_weights(info.grid, info.prefix_tokens, options.kernel, options.cls_token, options.window)
        self._unmasked = identity_slots(np.ones((1, info.tokens), np.float32))
        self._cells = copy_slots(weights, info.prefix_tokens, info.slots)
        rows = self._cells.token.shape[1] if self._slot_residual else None
        self.max_batch = options.max_batch or default_max_batch(info, self.device, rows)
        budget = budget_max_batch(info, self.device)
        if self.max_batch > budget:
            log.warning(
                "max_batch=%d would need about %d MB of activations, above the %d MB budget on %s: running %d "
                "copies at a time",
                self.max_batch,
                self.max_batch * bytes_per_copy(info) >> 20,
                MEMORY_BUDGET_BYTES[self.device] >> 20,
                self.device,
                budget,
            )
            self.max_batch = budget
        if info.copies_per_run is not None and self.max_batch > info.copies_per_run:
            if options.max_batch is not None:
                raise OptionError(
                    f"this model quantizes at run time: it takes {info.copies_per_run} copy per run, "
                    f"not max_batch={options.max_batch}"
                )
            self.max_batch = info.copies_per_run
        log.info(
            "explainer on %s: block %d, grid %dx%d, %d rows per suffix run; rewrites: %s",
            self.device,
            info.block,
            *info.grid,
            self.max_batch,
            info.rewrites_line(),
        )

    def _run_prefix(self, images: np.ndarray) -> dict:
        """The tapped tensors (R, F or its projections) for the batch, by suffix input."""
        outputs = run_prefix(self._prefix, self.info, self.device, images, list(self.feeds.values()))
        return {name: outputs[output] for name, output in self.feeds.items()}

    def _run_suffix(self, tapped: dict, image: int, slots: Slots, out: np.ndarray) -> None:
        """Logits of masked copies of one image, written straight into ``out`` (a C-contiguous [rows, C] view)."""
        binding = self._suffix.io_binding()
        for name, value in tapped.items():
            if isinstance(value, np.ndarray):
                binding.bind_cpu_input(name, value)
            else:
                binding.bind_ortvalue_input(name, value)
        for name, table in self._copy_feeds(image, slots).items():
            binding.bind_cpu_input(name, table)
        binding.bind_output(self.info.output_name, "cpu", 0, np.float32, list(out.shape), out.ctypes.data)
        with onnxruntime_errors("running the masked copies"):
            self._suffix.run_with_iobinding(binding)


def tap_scores(
    taps: Sequence[Explainer], prefix: ort.InferenceSession, images: np.ndarray, targets: Targets
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each tap's ``cell_scores`` for ``images`` (checked), the ``prefix`` session (the taps' own, or one
    they share) run once per IMAGES_PER_PREFIX_RUN images for all of them."""
    first = taps[0]
    given = first.checked_targets(targets, len(images))
    names = sorted({output for tap in taps for output in tap.feeds.values()})
    logits = [tap.logits_for(len(images)) for tap in taps]
    erased: list[list[int]] = [[] for _ in taps]
    for start in range(0, len(images), IMAGES_PER_PREFIX_RUN):
        group = images[start : start + IMAGES_PER_PREFIX_RUN]
        outputs = run_prefix(prefix, first.info, first.device, group, names)
        group_targets = None if given is None else given[start : start + len(group)]
        for tap, out, lost in zip(taps, logits, erased):
            tapped = {name: outputs[output] for name, output in tap.feeds.items()}
            lost += [start + i for i in tap.group_logits(tapped, out[start : start + len(group)], group_targets)]
    return [tap.scores_of(out, lost) for tap, out, lost in zip(taps, logits, erased)]


def run_prefix(
    session: ort.InferenceSession, info: SplitInfo, device: str, images: np.ndarray, names: list[str]
) -> dict:
    """The prefix outputs ``names`` for the batch: OrtValues kept on ``device``, or arrays where the prefix runs
    image by image: static-batch models, and float16 models on the CPU, whose kernels round a batch of images a
    float16 step away from each image alone (CUDA keeps its batches: throughput)."""
    per_image = info.dtype != PRECISIONS[0] and device == "cpu"
    with onnxruntime_errors("running the prefix"):
        if info.static_batch is not None or per_image:
            runs = [session.run(names, {info.input_name: images[i : i + 1]}) for i in range(len(images))]
            return {key: np.concatenate(parts) for key, parts in zip(names, zip(*runs))}
        binding = session.io_binding()
        binding.bind_cpu_input(info.input_name, images)
        for key in names:
            binding.bind_output(key, device)
        session.run_with_iobinding(binding)
        return dict(zip(names, binding.get_outputs()))


def bytes_per_copy(info: SplitInfo) -> int:
    """Activation bytes of one masked copy in the suffix (float32): MLP and attention scores."""
    heads = max(1, info.width // 64)
    return 4 * info.tokens * (16 * info.width + 2 * heads * info.tokens)


def budget_max_batch(info: SplitInfo, device: str) -> int:
    """The most copies per suffix run within the device's activation budget (at least 1)."""
    return max(1, MEMORY_BUDGET_BYTES[device] // bytes_per_copy(info))


def default_max_batch(info: SplitInfo, device: str, rows_per_copy: int | None = None) -> int:
    """Copies per suffix run: within the device's activation budget, and on CPU about
    CPU_TOKENS_PER_RUN token rows (cache-sized runs are faster there). A copy costs T rows,
    or only its slots when its one block after the tap runs attention on distinct rows;
    ``rows_per_copy``: the slots a suffix that runs on slots throughout computes."""
    rows = budget_max_batch(info, device)
    if device == "cpu":
        last = info.block == info.blocks - 1
        computed = info.prefix_tokens + SLOTS_PER_3X3 if info.slots and last else info.tokens
        rows = min(rows, CPU_TOKENS_PER_RUN // (rows_per_copy or computed))
    return int(np.clip(rows, 1, 1024))


def _load_split(model: str | os.PathLike | onnx.ModelProto, options: Options, explicit: set[str]) -> SplitModel:
    """The split of ``model`` for ``options``: read from a split folder (whose cut must agree with any
    cut option asked for explicitly), or made now."""
    if not isinstance(model, onnx.ModelProto) and is_split_folder(model):
        split = load_split(model)
        info = split.info
        if "block" in explicit and resolve_block(options.block, info.blocks) != info.block:
            raise OptionError(f"{model} was split at block {info.block}; re-split it to explain block {options.block}")
        if "optimize" in explicit and options.optimize != info.optimized:
            raise OptionError(f"{model} was split with optimize={info.optimized}; re-split it to change that")
        if "input_size" in explicit and options.input_size != info.input_shape[1:]:
            raise OptionError(f"{model} was split for {info.input_shape[1:]} inputs; re-split it to change that")
        return split
    source = model if not isinstance(model, (str, os.PathLike)) else Path(model)  # load_model says what is wrong
    return split_model(
        source, options.block, optimize=options.optimize, input_size=options.input_size, cache=options.cache
    )
