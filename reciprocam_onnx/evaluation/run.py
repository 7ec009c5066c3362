"""The evaluation loop: every metric of every method, tallied over a dataset's batches."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import onnx

from ..errors import ImageError, InternalError, OptionError
from ..io.progress import progress as progress_bar
from ..options import PRESETS, Options
from .checkpoint import load_checkpoint, save_checkpoint
from .data import Dataset, EvalItem
from .methods import PLUS, EvalModel, MapFn, Method, MethodSettings, make_methods
from .metrics import (
    adcc,
    deletion_auc,
    discriminative_pointing_game,
    energy_pointing_game,
    explanation_metrics,
    insertion_auc,
    pointing_game,
)
from .report import json_safe

log = logging.getLogger(__name__)

METRICS = (
    "pointing_game",
    "energy_pointing_game",
    "average_drop",
    "increase",
    "coherency",
    "complexity",
    "adcc",
    "deletion_auc",
    "insertion_auc",
    "discriminative_pointing_game",
    "discriminative_pointing_game_first",
    "discriminative_pointing_game_second",
    "seconds_per_image",
)


@dataclass
class _Tally:
    """Running sums of one method's metrics (each a mean over its own count)."""

    seconds: float = 0.0
    sums: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    class_hits: dict[int, list[float]] = field(default_factory=dict)  # target class -> its pointing-game hits

    def add(self, key: str, mean: float, count: int = 1) -> None:
        self.sums[key] = self.sums.get(key, 0.0) + float(mean) * count
        self.counts[key] = self.counts.get(key, 0) + count

    def class_result(self, label: Callable[[int], str]) -> dict[str, dict]:
        """Pointing game per target class, in class order: label -> {"pointing_game", "n"}."""
        return {
            label(target): {"pointing_game": float(np.mean(hits)), "n": len(hits)}
            for target, hits in sorted(self.class_hits.items())
        }

    def state(self) -> dict:
        """The tally as JSON-able values (checkpoint)."""
        return {"seconds": self.seconds, "sums": self.sums, "counts": self.counts, "class_hits": self.class_hits}

    @classmethod
    def from_state(cls, state: dict) -> _Tally:
        hits = {int(target): list(values) for target, values in state["class_hits"].items()}
        return cls(state["seconds"], dict(state["sums"]), dict(state["counts"]), hits)

    def plus(self, other: _Tally) -> _Tally:
        """The tally of this one's images and then ``other``'s."""

        def added(a: dict, b: dict) -> dict:
            return {k: a.get(k, 0) + b.get(k, 0) for k in dict.fromkeys([*a, *b])}

        targets = sorted({*self.class_hits, *other.class_hits})
        hits = {c: self.class_hits.get(c, []) + other.class_hits.get(c, []) for c in targets}
        return _Tally(
            self.seconds + other.seconds, added(self.sums, other.sums), added(self.counts, other.counts), hits
        )

    def mean(self, key: str) -> float | None:
        return self.sums[key] / self.counts[key] if self.counts.get(key) else None

    def result(self, n: int) -> dict:
        """The method's entry of the report: every metric of METRICS (None where undefined), and n."""
        out = {key: self.mean(key) for key in METRICS}
        ad, coh, com = out["average_drop"], out["coherency"], out["complexity"]
        out["adcc"] = adcc(ad, coh, com) if ad is not None and coh is not None and com is not None else None
        out["seconds_per_image"] = self.seconds / n if n else None
        return {**out, "n": n}


class _Evaluation:
    """Metrics of every method over a stream of batches."""

    def __init__(
        self, model: EvalModel, methods: dict[str, Method], batch_size: int, auc_steps: int | None, examples: int
    ):
        self.model, self.methods = model, methods
        self.batch_size, self.auc_steps, self.want_examples = batch_size, auc_steps, examples
        self.tallies = {name: _Tally() for name in methods}
        self.n = self.labelled = self.correct = 0
        self.examples: list[dict] = []

    def add_batch(self, items: list[EvalItem]) -> None:
        images = np.stack([item.tensor for item in items])
        predicted = self.model.score_fn(images).argmax(axis=1)
        targets = self._targets(items, predicted)
        known = np.array([item.label is not None for item in items])
        self.n += len(items)
        self.labelled += int(known.sum())
        self.correct += int((predicted == targets)[known].sum())
        maps = {name: self._add_method(name, items, images, targets) for name in self.methods}
        self._keep_examples(items, targets, maps)

    def state(self) -> dict:
        """Counts and tallies so far, JSON-able (the examples are saved beside them)."""
        tallies = {name: tally.state() for name, tally in self.tallies.items()}
        return {"n": self.n, "labelled": self.labelled, "correct": self.correct, "tallies": tallies}

    def restore(self, state: dict, examples: list[dict]) -> None:
        """Continue from a saved :meth:`state` and its examples."""
        self.n, self.labelled, self.correct = state["n"], state["labelled"], state["correct"]
        self.tallies = {name: _Tally.from_state(tally) for name, tally in state["tallies"].items()}
        self.examples = examples

    def _targets(self, items: list[EvalItem], predicted: np.ndarray) -> np.ndarray:
        classes = self.model.info.classes
        bad = [item.name for item in items if item.label is not None and not 0 <= item.label < classes]
        if bad:
            raise OptionError(f"labels outside 0..{classes - 1} for {', '.join(bad)}")
        return np.array([p if item.label is None else item.label for item, p in zip(items, predicted)], np.int64)

    def _add_method(self, name: str, items: list[EvalItem], images: np.ndarray, targets: np.ndarray) -> np.ndarray:
        method, tally = self.methods[name], self.tallies[name]
        fn = method.maps
        start = time.perf_counter()
        maps = np.asarray(fn(images, targets), np.float32)
        tally.seconds += time.perf_counter() - start
        faithful = explanation_metrics(
            self.model.score_fn, images, maps, targets, self.batch_size, explain_fn=method.coherency
        )
        for key in ("average_drop", "increase", "coherency", "complexity"):
            tally.add(key, faithful[key], len(items))
        self._add_auc(tally, images, maps, targets)
        self._add_pointing(tally, items, maps, targets)
        self._add_discriminative(tally, fn, items, images)
        return maps

    def _add_auc(self, tally: _Tally, images: np.ndarray, maps: np.ndarray, targets: np.ndarray) -> None:
        steps, batch_size = self.auc_steps, self.batch_size
        for image, map_hw, target in zip(images, maps, targets):
            tally.add(
                "deletion_auc",
                deletion_auc(self.model.score_fn, image, map_hw, int(target), steps=steps, batch_size=batch_size),
            )
            tally.add(
                "insertion_auc",
                insertion_auc(self.model.score_fn, image, map_hw, int(target), steps=steps, batch_size=batch_size),
            )

    @staticmethod
    def _add_pointing(tally: _Tally, items: list[EvalItem], maps: np.ndarray, targets: np.ndarray) -> None:
        for item, map_hw, target in zip(items, maps, targets):
            box = item.box_for(int(target))
            if box is not None:
                size = item.image_rgb.shape[:2]
                hit = pointing_game(map_hw, box, size)
                tally.add("pointing_game", hit)
                tally.class_hits.setdefault(int(target), []).append(hit)
                tally.add("energy_pointing_game", energy_pointing_game(map_hw, box, size))

    @staticmethod
    def _add_discriminative(tally: _Tally, fn: MapFn, items: list[EvalItem], images: np.ndarray) -> None:
        pairs = [(k, classes) for k, item in enumerate(items) if (classes := item.two_classes())]
        if not pairs:
            return
        index = np.array([k for k, _ in pairs])
        maps_a = fn(images[index], np.array([a for _, (a, _) in pairs]))
        maps_b = fn(images[index], np.array([b for _, (_, b) in pairs]))
        for (k, (a, b)), map_a, map_b in zip(pairs, maps_a, maps_b):
            item = items[k]
            box_a, box_b = item.box_for(a), item.box_for(b)
            if box_a is None or box_b is None:
                raise InternalError(f"{item.name}: two_classes named a class without a box")
            hits = discriminative_pointing_game(map_a, map_b, box_a, box_b, item.image_rgb.shape[:2])
            tally.add("discriminative_pointing_game", float(np.mean(hits)), 2)
            tally.add("discriminative_pointing_game_first", hits[0])  # each object's class on its own
            tally.add("discriminative_pointing_game_second", hits[1])

    def _keep_examples(self, items: list[EvalItem], targets: np.ndarray, maps: dict[str, np.ndarray]) -> None:
        for k, item in enumerate(items[: max(0, self.want_examples - len(self.examples))]):
            self.examples.append(
                {
                    "name": item.name,
                    "image": item.image_rgb,
                    "boxes": item.boxes,
                    "target": self.model.info.model.label(int(targets[k])),
                    "maps": {name: stack[k] for name, stack in maps.items()},
                }
            )

    def result(self) -> dict:
        label = self.model.info.model.label
        return {
            "accuracy": self.correct / self.labelled if self.labelled else None,
            "methods": {name: tally.result(self.n) for name, tally in self.tallies.items()},
            "pointing_game_by_class": {name: tally.class_result(label) for name, tally in self.tallies.items()},
            "examples": self.examples,
        }


def evaluate(
    model: EvalModel | str | os.PathLike | onnx.ModelProto,
    dataset: Dataset,
    methods: Sequence[str] | None = None,
    rise_masks: int = 2000,
    batch_size: int = 16,
    progress: bool = True,
    *,
    seed: int = 0,
    auc_steps: int | None = None,
    examples: int = 6,
    options: Options | None = None,
    rise_coherency_masks: int | None = None,
    checkpoint: str | os.PathLike | None = None,
) -> dict:
    """Every metric of every method over ``dataset``; see the package docstring.

    ``model`` is an EvalModel or a model for one (with ``options``); ``methods`` default to all that
    apply (METHODS; a fused graph has only its own kernel). ``auc_steps``: deletion and
    insertion steps (None: one grid cell per step). ``rise_coherency_masks``: RISE masks for the
    coherency pass, which explains every explanation image again (None: ``rise_masks``). The
    result holds "model", "dataset", "n", "skipped", "accuracy", "settings", "methods" (name ->
    metrics), "pointing_game_by_class" (name -> class label -> {"pointing_game", "n"}, over the
    images with a box for their target) and "examples" (pictures for :func:`write_report`, left out of report.json).

    ``checkpoint``: a file where the progress is saved after every batch; a run given the file of an
    interrupted run with the same model, dataset, methods and settings continues from it (the result
    is the one an uninterrupted run gives, but for the time per image). The caller removes the file
    once the result is safe.
    """
    _check_settings(rise_masks, batch_size, auc_steps, seed, rise_coherency_masks)
    if not isinstance(dataset, Dataset):
        raise OptionError(f"dataset must be a Dataset (shapes_dataset, folder_dataset), not {type(dataset).__name__}")
    model = model if isinstance(model, EvalModel) else EvalModel(model, options)
    settings = MethodSettings(rise_masks, seed, batch_size, rise_coherency_masks)
    run = _Evaluation(model, make_methods(model, methods, settings), batch_size, auc_steps, examples)
    report_settings = {
        "rise_masks": rise_masks,
        "rise_coherency_masks": rise_masks if rise_coherency_masks is None else rise_coherency_masks,
        "seed": seed,
        "auc_steps": auc_steps,
        "batch_size": batch_size,
        "grid": list(model.info.grid),
    }
    key = _run_key(model, dataset, list(run.methods), report_settings)
    start, skipped = _resume(run, checkpoint, key, len(dataset))
    items = dataset.items(start, skipped)
    for batch in _batches(progress_bar(items, len(dataset), "evaluating", start) if progress else items, batch_size):
        run.add_batch(batch)
        if checkpoint is not None:
            state = {**run.state(), "consumed": dataset.consumed, "skipped": dataset.skipped}
            save_checkpoint(checkpoint, key, state, run.examples)
    if run.n == 0:
        raise ImageError(f"no readable images in {dataset.name} ({dataset.skipped} skipped)")
    log.info("evaluated %d images of %s (%d skipped)", run.n, dataset.name, dataset.skipped)
    return {
        "model": model.name,
        "dataset": dataset.name,
        "n": run.n,
        "skipped": dataset.skipped,
        "settings": report_settings,
        **run.result(),
    }


def empty_state(methods: Iterable[str], consumed: int) -> dict:
    """A run's progress before any image, its dataset read up to entry ``consumed`` (a later part's start)."""
    tallies = {name: _Tally().state() for name in methods}
    return {"n": 0, "labelled": 0, "correct": 0, "tallies": tallies, "consumed": consumed, "skipped": 0}


def first_entry(state: dict) -> int:
    """The entry a run's (or a part's) progress ``state`` began at."""
    return state["consumed"] - state["n"] - state["skipped"]


def merge_states(first: dict, second: dict) -> dict:
    """The progress of two adjacent parts of one run (``first`` ends at the entry where ``second`` starts)."""
    if first["consumed"] != first_entry(second):
        raise OptionError(f"the first part ends at entry {first['consumed']}, where the second does not start")
    counts = {name: first[name] + second[name] for name in ("n", "labelled", "correct", "skipped")}
    tallies = {
        name: _Tally.from_state(tally).plus(_Tally.from_state(second["tallies"][name])).state()
        for name, tally in first["tallies"].items()
    }
    return {**counts, "tallies": tallies, "consumed": second["consumed"]}


def _run_key(model: EvalModel, dataset: Dataset, methods: list[str], settings: dict) -> dict:
    """What a checkpoint must match to be resumed, as it reads back from one."""
    key = {
        "model": model.name,
        "options": model.options.changed(),
        "dataset": dataset.name,
        "entries": len(dataset),
        "methods": methods,
        "preset": asdict(PRESETS[PLUS]) if PLUS in methods else None,  # what a newer version may change
        "settings": settings,
    }
    return json.loads(json.dumps(json_safe(key)))


def _resume(run: _Evaluation, checkpoint: str | os.PathLike | None, key: dict, entries: int) -> tuple[int, int]:
    """Restore ``run`` from ``checkpoint`` if it holds progress; returns (entries read, of them skipped)."""
    saved = None if checkpoint is None else load_checkpoint(checkpoint, key)
    if saved is None:
        return 0, 0
    state, examples = saved
    run.restore(state, examples)
    log.warning("resuming from %s: %d of %d images done", checkpoint, state["consumed"], entries)
    return state["consumed"], state["skipped"]


def _check_settings(
    rise_masks: int, batch_size: int, auc_steps: int | None, seed: int, rise_coherency_masks: int | None
) -> None:
    coherency = rise_masks if rise_coherency_masks is None else rise_coherency_masks
    counts = (rise_masks, coherency, batch_size, 1 if auc_steps is None else auc_steps)
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in counts):
        raise OptionError(
            f"RISE masks (maps and coherency), batch size and AUC steps must be whole numbers of at least 1; got "
            f"{rise_masks}, {coherency}, {batch_size}, {auc_steps}"
        )
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise OptionError(f"seed must be a whole number of at least 0, not {seed!r}")


def _batches(items: Iterable[EvalItem], size: int) -> Iterator[list[EvalItem]]:
    batch: list[EvalItem] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
