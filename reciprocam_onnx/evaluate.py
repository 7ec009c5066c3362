"""Evaluate saliency methods on a labelled dataset with the paper's metrics.

    dataset ──batches──► softmax scores of the unmasked model (ONNX Runtime)
    each method: maps ──► AD, Inc, Coh, Com, ADCC, deletion/insertion AUC,
                          (energy) pointing game, discriminative pointing game
    result dict ──► report.json, report.md, examples.png

Targets are the ground-truth labels where known (as in the paper's table),
else the model's predictions. All metrics are fractions; the Markdown report
shows them as percentages.
"""
from __future__ import annotations

import csv
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import onnx

from .baselines import centre_maps, random_maps, rise_maps
from .datasets.shapes import generate, make_two_object_sample
from .errors import ImageError, OptionError
from .explainer import Explainer, to_scores
from .fileio import write_text_atomic
from .graph.model import load_model
from .graph.split import SplitInfo, is_split_folder
from .metrics import (adcc, deletion_auc, discriminative_pointing_game, energy_pointing_game,
                      explanation_metrics, insertion_auc, pointing_game)
from .overlay import overlay, save_png
from .preprocess import load_image, preprocess
from .progress import progress as progress_bar
from .runtime import make_session

log = logging.getLogger(__name__)

Box = tuple[int, int, int, int]
MapFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
METRICS = ("pointing_game", "energy_pointing_game", "average_drop", "increase", "coherency", "complexity",
           "adcc", "deletion_auc", "insertion_auc", "discriminative_pointing_game", "seconds_per_image")


# --------------------------------------------------------------------------
# Datasets
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class EvalItem:
    """One evaluation image at the model's size, with its label and boxes when known."""

    name: str
    image_rgb: np.ndarray  # uint8 [H, W, 3]
    tensor: np.ndarray  # float32 [3, H, W], normalised
    label: int | None
    boxes: list[tuple[int, Box]] = field(default_factory=list)  # (class, (x0, y0, x1, y1)), x1/y1 exclusive

    def box_for(self, label: int) -> Box | None:
        """The first box of class ``label``, or None."""
        return next((box for cls, box in self.boxes if cls == label), None)

    def two_classes(self) -> tuple[int, int] | None:
        """The first two distinct box classes (for the discriminative pointing game), or None."""
        classes = list(dict.fromkeys(cls for cls, _ in self.boxes))
        return (classes[0], classes[1]) if len(classes) >= 2 else None


class Dataset:
    """A named stream of EvalItems built lazily from ``entries``; unreadable ones are logged,
    skipped and counted in ``skipped``."""

    def __init__(self, name: str, entries: Sequence, load: Callable[[object], EvalItem]):
        self.name = name
        self._entries = list(entries)
        self._load = load
        self.skipped = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[EvalItem]:
        self.skipped = 0
        for entry in self._entries:
            try:
                yield self._load(entry)
            except ImageError as exc:
                self.skipped += 1
                log.warning("skipped: %s", exc)


def make_item(name: str, rgb: np.ndarray, label: int | None, boxes: Iterable[tuple[int, Box]],
              size: tuple[int, int], mean=None, std=None, resize: str = "crop") -> EvalItem:
    """Fit ``rgb`` and its boxes to the model's ``size`` (H, W) and normalise it."""
    tensor, fitted = preprocess(rgb, size, mean, std, resize)
    moved = [(cls, fit_box(box, rgb.shape[:2], size, resize)) for cls, box in boxes]
    return EvalItem(name, fitted, tensor, label, [(cls, box) for cls, box in moved if box is not None])


def fit_box(box: Box, source_hw: tuple[int, int], size: tuple[int, int], mode: str) -> Box | None:
    """``box`` moved the way :func:`preprocess.fit_image` moves the pixels; None if cropped away."""
    (h, w), (height, width) = source_hw, size
    if (h, w) == (height, width):
        return tuple(int(v) for v in box)
    if mode == "stretch":
        sx, sy, left, top = width / w, height / h, 0, 0
    else:
        scale = max(height / h, width / w)
        new_w, new_h = max(width, round(w * scale)), max(height, round(h * scale))
        sx, sy, left, top = new_w / w, new_h / h, (new_w - width) // 2, (new_h - height) // 2
    x0, y0, x1, y1 = box
    fitted = (min(max(math.floor(x0 * sx - left), 0), width), min(max(math.floor(y0 * sy - top), 0), height),
              min(max(math.ceil(x1 * sx - left), 0), width), min(max(math.ceil(y1 * sy - top), 0), height))
    return fitted if fitted[2] > fitted[0] and fitted[3] > fitted[1] else None


def shapes_dataset(n: int, seed: int, size: tuple[int, int], mean=None, std=None,
                   two_objects: bool = False) -> Dataset:
    """``n`` synthetic shapes images generated on the fly; image ``i`` depends only on (seed, i)."""
    side = max(size)

    def load(index: int) -> EvalItem:
        name = f"shapes-{seed}-{index:05d}"
        if two_objects:
            pair = make_two_object_sample(np.random.default_rng([seed, index]), size=side)
            return make_item(name, pair.image, None, zip(pair.labels, pair.boxes), size, mean, std)
        sample = generate(1, seed, start=index, size=side)[0]
        return make_item(name, sample.image, sample.label, [(sample.label, sample.box)], size, mean, std)

    kind = "shapes, two objects" if two_objects else "shapes"
    return Dataset(f"{kind} (seed {seed})", range(n), load)


def folder_dataset(folder: str | os.PathLike, labels_csv: str | os.PathLike | None, size: tuple[int, int],
                   mean=None, std=None, resize: str = "crop", n: int | None = None) -> Dataset:
    """Images of ``folder`` listed in ``labels_csv`` (default FOLDER/labels.csv), first ``n`` files.

    Rows are file,label[,x0,y0,x1,y1]; several rows of one file give several boxes
    (the image then has a label only if all rows agree).
    """
    folder = Path(folder)
    objects = read_labels_csv(Path(labels_csv) if labels_csv else folder / "labels.csv")

    def load(entry: tuple[str, list[tuple[int, Box | None]]]) -> EvalItem:
        file, rows = entry
        classes = {cls for cls, _ in rows}
        label = classes.pop() if len(classes) == 1 else None
        boxes = [(cls, box) for cls, box in rows if box is not None]
        return make_item(file, load_image(folder / file), label, boxes, size, mean, std, resize)

    return Dataset(f"folder {folder}", list(objects.items())[:n], load)


def read_labels_csv(path: Path) -> dict[str, list[tuple[int, Box | None]]]:
    """file -> [(label, box or None)] from a CSV with a file,label[,x0,y0,x1,y1] header."""
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            rows = list(reader)
            columns = set(reader.fieldnames or ())
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise OptionError(f"cannot read labels file {path}: {exc}") from exc
    if not {"file", "label"} <= columns or not rows:
        raise OptionError(f"{path} needs a header file,label[,x0,y0,x1,y1] and at least one row")
    objects: dict[str, list[tuple[int, Box | None]]] = {}
    for line, row in enumerate(rows, start=2):
        objects.setdefault(row["file"], []).append(_parse_row(row, f"{path} line {line}"))
    return objects


def _parse_row(row: dict, where: str) -> tuple[int, Box | None]:
    coords = [row.get(key) for key in ("x0", "y0", "x1", "y1")]
    try:
        label = int(row["label"])
        box = tuple(int(float(v)) for v in coords) if all(v not in (None, "") for v in coords) else None
    except (TypeError, ValueError) as exc:
        raise OptionError(f"{where}: label must be a class index and x0,y0,x1,y1 numbers ({exc})") from exc
    if box is not None and (box[2] <= box[0] or box[3] <= box[1]):
        raise OptionError(f"{where}: box needs x0 < x1 and y0 < y1, got {box}")
    return label, box


# --------------------------------------------------------------------------
# The model and the methods
# --------------------------------------------------------------------------
class EvalModel:
    """The model under evaluation: a softmax score function and ViT-ReciproCAM explainers per kernel.

    ``options`` are Explainer options (block, cls_token, residual, providers, max_batch); the
    kernel is chosen per method and scores are always softmax, as the metrics need.
    """

    def __init__(self, model: str | os.PathLike | onnx.ModelProto, **options):
        clash = {"kernel", "score"} & set(options)
        if clash:
            raise OptionError(f"eval sets {', '.join(sorted(clash))} itself; pick methods instead")
        self.source = model
        self.options = options
        self._explainers: dict[str, Explainer] = {}
        self.explainer("3x3")
        folder = not isinstance(model, onnx.ModelProto) and is_split_folder(model)
        self._forward = None if folder else make_session(load_model(model), options.get("providers"))

    @property
    def name(self) -> str:
        return self.source.graph.name if isinstance(self.source, onnx.ModelProto) else str(self.source)

    @property
    def info(self) -> SplitInfo:
        return self.explainer("3x3").info

    def explainer(self, kernel: str) -> Explainer:
        """The explainer with ``kernel`` (built on first use)."""
        if kernel not in self._explainers:
            self._explainers[kernel] = Explainer(self.source, kernel=kernel, score="softmax", **self.options)
        return self._explainers[kernel]

    def score_fn(self, images: np.ndarray) -> np.ndarray:
        """Softmax scores [N, C] of the unmasked model (one forward pass of the whole batch)."""
        if self._forward is None:  # a split folder: prefix + suffix, image by image
            return self.explainer("3x3").predict(images)
        info = self.info
        if info.static_batch is not None:
            logits = np.concatenate([self._forward.run(None, {info.input_name: x[None]})[0] for x in images])
        else:
            logits = self._forward.run(None, {info.input_name: np.ascontiguousarray(images, np.float32)})[0]
        return to_scores(logits, "softmax")


@dataclass(frozen=True)
class MethodSettings:
    """What the methods need besides the model."""

    rise_masks: int = 2000
    seed: int = 0
    batch_size: int = 16


def _reciprocam(kernel: str) -> Callable[[EvalModel, MethodSettings], MapFn]:
    def make(model: EvalModel, settings: MethodSettings) -> MapFn:
        explainer = model.explainer(kernel)
        return lambda images, targets: explainer.explain(images, targets).maps
    return make


def _rise(model: EvalModel, settings: MethodSettings) -> MapFn:
    return lambda images, targets: rise_maps(model.score_fn, images, targets, model.info.grid,
                                             n_masks=settings.rise_masks, seed=settings.seed,
                                             batch_size=settings.batch_size)


def _random(model: EvalModel, settings: MethodSettings) -> MapFn:
    rng = np.random.default_rng(settings.seed)  # fresh maps per call: random maps are not coherent
    return lambda images, targets: random_maps(len(images), model.info.grid, int(rng.integers(2**32)))


def _centre(model: EvalModel, settings: MethodSettings) -> MapFn:
    return lambda images, targets: centre_maps(len(images), model.info.grid)


METHODS: dict[str, Callable[[EvalModel, MethodSettings], MapFn]] = {
    "reciprocam-3x3": _reciprocam("3x3"),
    "reciprocam-1x1": _reciprocam("1x1"),
    "rise": _rise,
    "random": _random,
    "centre": _centre,
}


def make_methods(model: EvalModel, names: Sequence[str], settings: MethodSettings) -> dict[str, MapFn]:
    """name -> function(images [B,3,H,W], targets [B]) -> maps [B, h, w] in [0, 1]."""
    unknown = [name for name in names if name not in METHODS]
    if unknown or not names:
        given = ", ".join(unknown) if unknown else "none given"
        raise OptionError(f"unknown methods ({given}); choose from {', '.join(METHODS)}")
    return {name: METHODS[name](model, settings) for name in dict.fromkeys(names)}


# --------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------
@dataclass
class _Tally:
    """Running sums of one method's metrics (each a mean over its own count)."""

    seconds: float = 0.0
    sums: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, key: str, mean: float, count: int = 1) -> None:
        self.sums[key] = self.sums.get(key, 0.0) + float(mean) * count
        self.counts[key] = self.counts.get(key, 0) + count

    def mean(self, key: str) -> float | None:
        return self.sums[key] / self.counts[key] if self.counts.get(key) else None

    def result(self, n: int) -> dict:
        """The method's entry of the report: every metric of METRICS (None where undefined), and n."""
        out = {key: self.mean(key) for key in METRICS}
        ad, coh, com = out["average_drop"], out["coherency"], out["complexity"]
        out["adcc"] = adcc(ad, coh, com) if None not in (ad, coh, com) else None
        out["seconds_per_image"] = self.seconds / n if n else None
        return {**out, "n": n}


class _Evaluation:
    """Metrics of every method over a stream of batches."""

    def __init__(self, model: EvalModel, methods: dict[str, MapFn], batch_size: int,
                 auc_steps: int | None, examples: int):
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

    def _targets(self, items: list[EvalItem], predicted: np.ndarray) -> np.ndarray:
        classes = self.model.info.classes
        bad = [item.name for item in items if item.label is not None and not 0 <= item.label < classes]
        if bad:
            raise OptionError(f"labels outside 0..{classes - 1} for {', '.join(bad)}")
        return np.array([p if item.label is None else item.label for item, p in zip(items, predicted)], np.int64)

    def _add_method(self, name: str, items: list[EvalItem], images: np.ndarray, targets: np.ndarray) -> np.ndarray:
        fn, tally = self.methods[name], self.tallies[name]
        start = time.perf_counter()
        maps = np.asarray(fn(images, targets), np.float32)
        tally.seconds += time.perf_counter() - start
        faithful = explanation_metrics(self.model.score_fn, images, maps, targets, self.batch_size, explain_fn=fn)
        for key in ("average_drop", "increase", "coherency", "complexity"):
            tally.add(key, faithful[key], len(items))
        self._add_auc(tally, images, maps, targets)
        self._add_pointing(tally, items, maps, targets)
        self._add_discriminative(tally, fn, items, images)
        return maps

    def _add_auc(self, tally: _Tally, images: np.ndarray, maps: np.ndarray, targets: np.ndarray) -> None:
        options = {"steps": self.auc_steps, "batch_size": self.batch_size}
        for image, map_hw, target in zip(images, maps, targets):
            tally.add("deletion_auc", deletion_auc(self.model.score_fn, image, map_hw, int(target), **options))
            tally.add("insertion_auc", insertion_auc(self.model.score_fn, image, map_hw, int(target), **options))

    @staticmethod
    def _add_pointing(tally: _Tally, items: list[EvalItem], maps: np.ndarray, targets: np.ndarray) -> None:
        for item, map_hw, target in zip(items, maps, targets):
            box = item.box_for(int(target))
            if box is not None:
                size = item.image_rgb.shape[:2]
                tally.add("pointing_game", pointing_game(map_hw, box, size))
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
            hits = discriminative_pointing_game(map_a, map_b, item.box_for(a), item.box_for(b),
                                                item.image_rgb.shape[:2])
            tally.add("discriminative_pointing_game", float(np.mean(hits)), 2)

    def _keep_examples(self, items: list[EvalItem], targets: np.ndarray, maps: dict[str, np.ndarray]) -> None:
        for k, item in enumerate(items[:max(0, self.want_examples - len(self.examples))]):
            self.examples.append({"name": item.name, "image": item.image_rgb, "boxes": item.boxes,
                                  "target": self.model.info.model.label(int(targets[k])),
                                  "maps": {name: stack[k] for name, stack in maps.items()}})

    def result(self) -> dict:
        return {"accuracy": self.correct / self.labelled if self.labelled else None,
                "methods": {name: tally.result(self.n) for name, tally in self.tallies.items()},
                "examples": self.examples}


def evaluate(model: EvalModel | str | os.PathLike | onnx.ModelProto, dataset: Dataset,
             methods: Sequence[str] = tuple(METHODS), rise_masks: int = 2000, batch_size: int = 16,
             progress: bool = True, *, seed: int = 0, auc_steps: int | None = None, examples: int = 6,
             **options) -> dict:
    """Every metric of every method over ``dataset``; see the module docstring.

    ``model`` is an EvalModel or a model for one (with ``options``). ``auc_steps``: deletion and
    insertion steps (None: one grid cell per step). The result holds "model", "dataset", "n",
    "skipped", "accuracy", "settings", "methods" (name -> metrics) and "examples" (pictures
    for :func:`write_report`, left out of report.json).
    """
    _check_settings(rise_masks, batch_size, auc_steps)
    model = model if isinstance(model, EvalModel) else EvalModel(model, **options)
    settings = MethodSettings(rise_masks, seed, batch_size)
    run = _Evaluation(model, make_methods(model, methods, settings), batch_size, auc_steps, examples)
    items = progress_bar(dataset, len(dataset), "evaluating") if progress else dataset
    for batch in _batches(items, batch_size):
        run.add_batch(batch)
    if run.n == 0:
        raise ImageError(f"no readable images in {dataset.name} ({dataset.skipped} skipped)")
    log.info("evaluated %d images of %s (%d skipped)", run.n, dataset.name, dataset.skipped)
    return {"model": model.name, "dataset": dataset.name, "n": run.n, "skipped": dataset.skipped,
            "settings": {"rise_masks": rise_masks, "seed": seed, "auc_steps": auc_steps,
                         "batch_size": batch_size, "grid": list(model.info.grid)},
            **run.result()}


def _check_settings(rise_masks: int, batch_size: int, auc_steps: int | None) -> None:
    if rise_masks < 1 or batch_size < 1 or (auc_steps is not None and auc_steps < 1):
        raise OptionError(f"rise masks, batch size and AUC steps must be at least 1; "
                          f"got {rise_masks}, {batch_size}, {auc_steps}")


def _batches(items: Iterable[EvalItem], size: int) -> Iterator[list[EvalItem]]:
    batch: list[EvalItem] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


# --------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------
COLUMNS = (("pointing_game", "PG ↑"), ("energy_pointing_game", "EPG ↑"), ("average_drop", "AD ↓"),
           ("increase", "Inc ↑"), ("coherency", "Coh ↑"), ("complexity", "Com ↓"), ("adcc", "ADCC ↑"),
           ("deletion_auc", "Del ↓"), ("insertion_auc", "Ins ↑"), ("discriminative_pointing_game", "DPG ↑"))


def write_report(result: dict, folder: str | os.PathLike) -> list[Path]:
    """Write report.json, report.md and examples.png into ``folder``; returns their paths."""
    folder = Path(folder)
    summary = {key: value for key, value in result.items() if key != "examples"}
    paths = [write_text_atomic(folder / "report.json",
                               json.dumps(json_safe(summary), indent=2, allow_nan=False) + "\n"),
             write_text_atomic(folder / "report.md", report_markdown(result))]
    if result.get("examples"):
        save_png(folder / "examples.png", examples_grid(result["examples"]))
        paths.append(folder / "examples.png")
    return paths


def json_safe(value):
    """``value`` with numpy scalars as Python numbers and NaN/inf as None."""
    if isinstance(value, dict):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def report_markdown(result: dict) -> str:
    """The report as Markdown: a header, the metrics table (percentages) and a line per method."""
    accuracy = "unknown" if result.get("accuracy") is None else f"{_percent(result['accuracy'])}%"
    lines = ["# ViT-ReciproCAM evaluation", "",
             f"Model `{result['model']}` on {result['dataset']}: {result['n']} images "
             f"({result['skipped']} skipped), accuracy {accuracy}.",
             "", "| Method | " + " | ".join(title for _, title in COLUMNS) + " | s/image |",
             "|---" * (len(COLUMNS) + 2) + "|"]
    for name, metrics in result["methods"].items():
        cells = [_percent(metrics.get(key)) for key, _ in COLUMNS] + [_seconds(metrics.get("seconds_per_image"))]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Metrics in %; ↑ higher is better, ↓ lower is better. Targets: ground-truth labels "
                  "where known, else the predicted class.", ""]
    lines += [_method_line(name, metrics) for name, metrics in result["methods"].items()]
    return "\n".join(lines) + "\n"


def _method_line(name: str, metrics: dict) -> str:
    return (f"- **{name}**: ADCC {_percent(metrics.get('adcc'))}%, pointing game "
            f"{_percent(metrics.get('pointing_game'))}%, deletion {_percent(metrics.get('deletion_auc'))}%, "
            f"insertion {_percent(metrics.get('insertion_auc'))}%, "
            f"{_seconds(metrics.get('seconds_per_image'))} s per image over {metrics['n']} images")


def _percent(value: float | None) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{100 * value:.2f}"


def _seconds(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


def examples_grid(examples: list[dict]) -> np.ndarray:
    """RGB picture: a row per example, the image with its boxes then each method's overlay."""
    rows = []
    for example in examples:
        image = example["image"].copy()
        for _, (x0, y0, x1, y1) in example["boxes"]:
            cv2.rectangle(image, (x0, y0), (x1 - 1, y1 - 1), (0, 255, 0), 2)
        tiles = [_caption(image, f"{example['name']}: {example['target']}")]
        tiles += [_caption(overlay(example["image"], map_hw), name) for name, map_hw in example["maps"].items()]
        rows.append(np.concatenate(tiles, axis=1))
    return np.concatenate(rows, axis=0)


def _caption(tile: np.ndarray, text: str) -> np.ndarray:
    """``tile`` with ``text`` in small white letters on a dark strip at the top."""
    out = tile.copy()
    cv2.rectangle(out, (0, 0), (out.shape[1] - 1, 15), (0, 0, 0), -1)
    cv2.putText(out, text, (3, 11), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (255, 255, 255), 1, cv2.LINE_AA)
    return out
