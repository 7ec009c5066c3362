"""Evaluation datasets: images fitted to the model with their labels and boxes."""

from __future__ import annotations

import csv
import logging
import math
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

import numpy as np

from ..errors import ImageError, OptionError
from ..io.images import RESIZE_MODES, check_resize, load_image, preprocess
from .shapes import generate, make_two_object_sample

log = logging.getLogger(__name__)

Box = tuple[int, int, int, int]
Labelled = tuple[int | None, list[tuple[int, Box]]]  # (the image's label or None, its boxes)
Entry = TypeVar("Entry")


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


class Dataset(Generic[Entry]):
    """A named stream of EvalItems built lazily from ``entries``; unreadable ones are logged,
    skipped and counted in ``skipped``."""

    def __init__(self, name: str, entries: Sequence[Entry], load: Callable[[Entry], EvalItem]):
        self.name = name
        self._entries = list(entries)
        self._load = load
        self.skipped = self.consumed = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[EvalItem]:
        return self.items()

    def items(self, start: int = 0, skipped: int = 0) -> Iterator[EvalItem]:
        """The items from entry ``start`` on (``skipped`` of those before it were unreadable); ``consumed``
        counts the entries read so far."""
        self.skipped, self.consumed = skipped, start
        for entry in self._entries[start:]:
            self.consumed += 1
            try:
                yield self._load(entry)
            except ImageError as exc:
                self.skipped += 1
                log.warning("skipped: %s", exc)


def make_item(
    name: str,
    rgb: np.ndarray,
    label: int | None,
    boxes: Iterable[tuple[int, Box]],
    size: tuple[int, int],
    mean=None,
    std=None,
    resize: str = RESIZE_MODES[0],
) -> EvalItem:
    """Fit ``rgb`` and its boxes to the model's ``size`` (H, W) and normalise it."""
    tensor, fitted = preprocess(rgb, size, mean, std, resize)
    moved = [(cls, fit_box(box, rgb.shape[:2], size, resize)) for cls, box in boxes]
    return EvalItem(name, fitted, tensor, label, [(cls, box) for cls, box in moved if box is not None])


def fit_box(box: Box, source_hw: tuple[int, int], size: tuple[int, int], mode: str) -> Box | None:
    """``box`` moved the way :func:`preprocess.fit_image` moves the pixels; None if cropped away."""
    (h, w), (height, width) = source_hw, size
    x0, y0, x1, y1 = box
    if (h, w) == (height, width):
        return int(x0), int(y0), int(x1), int(y1)
    if mode == "stretch":
        sx, sy, left, top = width / w, height / h, 0, 0
    else:
        scale = max(height / h, width / w)
        new_w, new_h = max(width, round(w * scale)), max(height, round(h * scale))
        sx, sy, left, top = new_w / w, new_h / h, (new_w - width) // 2, (new_h - height) // 2
    fitted = (
        min(max(math.floor(x0 * sx - left), 0), width),
        min(max(math.floor(y0 * sy - top), 0), height),
        min(max(math.ceil(x1 * sx - left), 0), width),
        min(max(math.ceil(y1 * sy - top), 0), height),
    )
    return fitted if fitted[2] > fitted[0] and fitted[3] > fitted[1] else None


def shapes_dataset(n: int, seed: int, size: tuple[int, int], mean=None, std=None, two_objects: bool = False) -> Dataset:
    """``n`` synthetic shapes images generated on the fly; image ``i`` depends only on (seed, i)."""
    _check_fit(size, RESIZE_MODES[0])
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


def folder_dataset(
    folder: str | os.PathLike,
    labels_csv: str | os.PathLike | None,
    size: tuple[int, int],
    mean=None,
    std=None,
    resize: str = RESIZE_MODES[0],
    n: int | None = None,
) -> Dataset:
    """Images of ``folder`` listed in ``labels_csv`` (default FOLDER/labels.csv), first ``n`` files.

    Rows are file,label[,x0,y0,x1,y1] (read_labels_csv says how rows of one file combine). An image
    with a box reaching outside it is skipped, with a line saying so.
    """
    _check_fit(size, resize)
    if n is not None and (not isinstance(n, int) or n < 1):
        raise OptionError(f"n must be a whole number of at least 1, not {n!r}")
    folder = Path(folder)
    files = read_labels_csv(Path(labels_csv) if labels_csv else folder / "labels.csv")

    def load(entry: tuple[str, Labelled]) -> EvalItem:
        file, (label, boxes) = entry
        rgb = load_image(folder / file)
        height, width = rgb.shape[:2]
        outside = [box for _, box in boxes if box[0] < 0 or box[1] < 0 or box[2] > width or box[3] > height]
        if outside:
            raise ImageError(f"{file}: box {outside[0]} of labels.csv reaches outside the {width}x{height} image")
        return make_item(file, rgb, label, boxes, size, mean, std, resize)

    return Dataset(f"folder {folder}", list(files.items())[:n], load)


def read_labels_csv(path: Path) -> dict[str, Labelled]:
    """file -> (label, boxes) from a CSV with a file,label[,x0,y0,x1,y1] header.

    A row without a box labels the image; rows with boxes add objects. An image's label is that of
    its rows without a box (which must agree: OptionError), else the class of its boxes when they are
    all one class, else None (objects of several classes: explained for the model's prediction, and
    logged).
    """
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:  # -sig: as spreadsheets save it
            reader = csv.DictReader(handle)
            rows = list(reader)
            columns = set(reader.fieldnames or ())
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise OptionError(f"cannot read labels file {path}: {exc}") from exc
    if not {"file", "label"} <= columns or not rows:
        raise OptionError(f"{path} needs a header file,label[,x0,y0,x1,y1] and at least one row")
    stated: dict[str, tuple[int, int]] = {}  # file -> (label, line) of its rows without a box
    boxes: dict[str, list[tuple[int, Box]]] = {}
    for line, row in enumerate(rows, start=2):
        file = row["file"]
        label, box = _parse_row(row, f"{path} line {line}")
        boxes.setdefault(file, [])
        if box is not None:
            boxes[file].append((label, box))
        elif stated.setdefault(file, (label, line))[0] != label:
            first, first_line = stated[file]
            raise OptionError(f"{path} line {line}: {file} is labelled {label} here and {first} on line {first_line}")
    files: dict[str, Labelled] = {}
    several: list[str] = []
    for file, objects in boxes.items():
        classes = {cls for cls, _ in objects}
        known = stated[file][0] if file in stated else classes.pop() if len(classes) == 1 else None
        several += [file] if known is None else []
        files[file] = (known, objects)
    if several:
        log.warning(
            "%d images of %s have boxes of several classes and no row without a box to label them (%s%s): "
            "they are explained for the model's prediction",
            len(several),
            path,
            ", ".join(several[:3]),
            ", ..." if len(several) > 3 else "",
        )
    return files


def _check_fit(size: tuple[int, int], resize: str) -> None:
    """OptionError unless ``size`` is two whole numbers above 0 and ``resize`` a resize mode."""
    if not (len(size) == 2 and all(isinstance(v, (int, np.integer)) and v > 0 for v in size)):
        raise OptionError(f"size must be two whole numbers above 0 (height, width), not {size!r}")
    check_resize(resize)


def _parse_row(row: dict, where: str) -> tuple[int, Box | None]:
    coords = [row.get(key) for key in ("x0", "y0", "x1", "y1")]
    given = [v for v in coords if v is not None and v != ""]
    if 0 < len(given) < len(coords):
        raise OptionError(f"{where}: give all of x0,y0,x1,y1 or none, not {len(given)} of them")
    try:
        label = int(row["label"])
        box: Box | None = None
        if given:
            x0, y0, x1, y1 = (int(float(v)) for v in given)
            box = (x0, y0, x1, y1)
    except (TypeError, ValueError, OverflowError) as exc:
        raise OptionError(f"{where}: label must be a class index and x0,y0,x1,y1 finite numbers ({exc})") from None
    if box is not None and (box[2] <= box[0] or box[3] <= box[1]):
        raise OptionError(f"{where}: box needs x0 < x1 and y0 < y1, got {box}")
    return label, box
