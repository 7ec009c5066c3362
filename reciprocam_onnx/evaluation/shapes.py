"""Synthetic "shapes" dataset: one (or two) coloured shapes on a cluttered background.

Images are 224x224 RGB ``uint8`` arrays rendered with OpenCV. Every sample is
deterministic given its random generator; :func:`generate` seeds sample ``i``
with ``np.random.default_rng([seed, i])`` so any subset can be regenerated.

Bounding boxes are ``(x0, y0, x1, y1)`` in pixels, inclusive-exclusive: the
object's mask pixels satisfy ``x0 <= x < x1`` and ``y0 <= y < y1``.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

import cv2
import numpy as np

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing.Unpack is 3.11+; only the type checker needs it

CLASS_NAMES: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "star",
    "cross",
    "ring",
    "diamond",
    "hexagon",
    "arrow",
    "crescent",
)

Box = tuple[int, int, int, int]
_SHIFT = 4  # sub-pixel bits used for polygon rendering
_MIN_COLOUR_DISTANCE = 160  # L1 distance between object colour and background mean


@dataclass(frozen=True)
class ShapeSample:
    """One image holding exactly one shape.

    ``image`` is (H, W, 3) uint8 RGB, ``mask`` is (H, W) bool and ``box`` is
    ``(x0, y0, x1, y1)`` inclusive-exclusive, the tight box around ``mask``.
    """

    image: np.ndarray
    label: int
    box: Box
    mask: np.ndarray


@dataclass(frozen=True)
class TwoShapeSample:
    """One image holding two non-overlapping shapes of different classes."""

    image: np.ndarray
    labels: tuple[int, int]
    boxes: tuple[Box, Box]
    masks: tuple[np.ndarray, np.ndarray]


def _polygon(points: np.ndarray, centre: np.ndarray, radius: float, angle: float) -> np.ndarray:
    """Scale unit-radius ``points`` by ``radius``, rotate by ``angle`` and move to ``centre``."""
    c, s = np.cos(angle), np.sin(angle)
    rotation = np.array([[c, -s], [s, c]])
    return points @ rotation.T * radius + centre


def _fill(mask: np.ndarray, points: np.ndarray, value: int = 1) -> None:
    """Fill the polygon ``points`` (float pixel coordinates) into ``mask`` in place."""
    fixed = np.round(points * (1 << _SHIFT)).astype(np.int32)
    cv2.fillPoly(mask, [fixed], value, lineType=cv2.LINE_8, shift=_SHIFT)


def _disc(mask: np.ndarray, centre: np.ndarray, radius: float, value: int = 1) -> None:
    """Fill a disc into ``mask`` in place."""
    fixed = tuple(int(v) for v in np.round(centre * (1 << _SHIFT)))
    cv2.circle(mask, fixed, int(round(radius * (1 << _SHIFT))), value, -1, cv2.LINE_8, _SHIFT)


def _regular(n: int, inner: float | None = None, phase: float = np.pi / 2) -> np.ndarray:
    """Unit-radius regular polygon with ``n`` corners, or a star when ``inner`` is set."""
    if inner is None:
        angles = phase + 2 * np.pi * np.arange(n) / n
        return np.stack([np.cos(angles), -np.sin(angles)], axis=1)
    angles = phase + np.pi * np.arange(2 * n) / n
    radii = np.where(np.arange(2 * n) % 2 == 0, 1.0, inner)
    return np.stack([radii * np.cos(angles), -radii * np.sin(angles)], axis=1)


_SQUARE = _regular(4, phase=np.pi / 4)
_TRIANGLE = _regular(3)
_STAR = _regular(5, inner=0.42)
_HEXAGON = _regular(6)
_DIAMOND = np.array([[0.0, -1.0], [0.55, 0.0], [0.0, 1.0], [-0.55, 0.0]])
_CROSS = np.array(
    [
        [-0.3, -0.95],
        [0.3, -0.95],
        [0.3, -0.3],
        [0.95, -0.3],
        [0.95, 0.3],
        [0.3, 0.3],
        [0.3, 0.95],
        [-0.3, 0.95],
        [-0.3, 0.3],
        [-0.95, 0.3],
        [-0.95, -0.3],
        [-0.3, -0.3],
    ]
)
_ARROW = np.array([[-1.0, -0.2], [0.15, -0.2], [0.15, -0.6], [1.0, 0.0], [0.15, 0.6], [0.15, 0.2], [-1.0, 0.2]])


def _draw_polygon(points: np.ndarray) -> Callable[[np.ndarray, np.ndarray, float, float], None]:
    """Renderer for a rigid polygon shape."""

    def draw(mask: np.ndarray, centre: np.ndarray, radius: float, angle: float) -> None:
        _fill(mask, _polygon(points, centre, radius, angle))

    return draw


def _draw_circle(mask: np.ndarray, centre: np.ndarray, radius: float, angle: float) -> None:
    _disc(mask, centre, radius)


def _draw_ring(mask: np.ndarray, centre: np.ndarray, radius: float, angle: float) -> None:
    _disc(mask, centre, radius)
    _disc(mask, centre, 0.55 * radius, 0)


def _draw_crescent(mask: np.ndarray, centre: np.ndarray, radius: float, angle: float) -> None:
    _disc(mask, centre, radius)
    offset = 0.5 * radius * np.array([np.cos(angle), np.sin(angle)])
    _disc(mask, centre + offset, 0.85 * radius, 0)


_RENDERERS: tuple[Callable[[np.ndarray, np.ndarray, float, float], None], ...] = (
    _draw_circle,
    _draw_polygon(_SQUARE),
    _draw_polygon(_TRIANGLE),
    _draw_polygon(_STAR),
    _draw_polygon(_CROSS),
    _draw_ring,
    _draw_polygon(_DIAMOND),
    _draw_polygon(_HEXAGON),
    _draw_polygon(_ARROW),
    _draw_crescent,
)


def _shape_mask(label: int, size: int, centre: np.ndarray, radius: float, angle: float) -> np.ndarray:
    """Boolean (size, size) mask of shape ``label``."""
    mask = np.zeros((size, size), np.uint8)
    _RENDERERS[label](mask, centre, radius, angle)
    return mask.astype(bool)


def _background(rng: np.random.Generator, size: int, clutter: float) -> tuple[np.ndarray, np.ndarray]:
    """Smooth noise texture with distractor lines and elongated blobs; returns (image, mean colour)."""
    base = rng.uniform(0, 255, 3)
    cells = int(rng.integers(3, 9))
    noise = rng.normal(0.0, 1.0, (cells, cells, 3)).astype(np.float32)
    texture = cv2.resize(noise, (size, size), interpolation=cv2.INTER_CUBIC)
    image = base + 30.0 * clutter * texture
    image = np.clip(image, 0, 255).astype(np.uint8)
    _draw_lines(rng, image, int(rng.integers(0, 7) * clutter))
    _draw_blobs(rng, image, int(rng.integers(0, 5) * clutter))
    return image, base


def _random_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    red, green, blue = (int(v) for v in rng.integers(0, 256, 3))
    return red, green, blue


def _draw_lines(rng: np.random.Generator, image: np.ndarray, count: int) -> None:
    """Draw ``count`` random straight lines (not any shape class)."""
    size = image.shape[0]
    for _ in range(count):
        p0 = tuple(int(v) for v in rng.integers(0, size, 2))
        p1 = tuple(int(v) for v in rng.integers(0, size, 2))
        cv2.line(image, p0, p1, _random_colour(rng), int(rng.integers(1, 4)), cv2.LINE_AA)


def _draw_blobs(rng: np.random.Generator, image: np.ndarray, count: int) -> None:
    """Draw ``count`` thin elongated ellipses (too elongated to be any shape class)."""
    size = image.shape[0]
    for _ in range(count):
        centre = tuple(int(v) for v in rng.integers(0, size, 2))
        major = float(rng.uniform(6, 22))
        axes = (int(major), max(1, int(major * rng.uniform(0.12, 0.3))))
        angle = float(rng.uniform(0, 180))
        cv2.ellipse(image, centre, axes, angle, 0, 360, _random_colour(rng), -1, cv2.LINE_AA)


def _object_colour(rng: np.random.Generator, background: np.ndarray) -> np.ndarray:
    """Random colour far (L1) from the background mean colour."""
    for _ in range(32):
        colour = rng.uniform(0, 255, 3)
        if np.abs(colour - background).sum() >= _MIN_COLOUR_DISTANCE:
            return colour
    return 255.0 - background


def _paint(rng: np.random.Generator, image: np.ndarray, mask: np.ndarray, background: np.ndarray) -> None:
    """Paint ``mask`` in a random (slightly shaded) colour that contrasts with the background."""
    colour = _object_colour(rng, background)
    ys, xs = np.nonzero(mask)
    gradient = rng.normal(0.0, 0.15, 2)
    shade = 1.0 + (xs - xs.mean()) / image.shape[1] * gradient[0] + (ys - ys.mean()) / image.shape[0] * gradient[1]
    image[ys, xs] = np.clip(colour * shade[:, None], 0, 255).astype(np.uint8)


def _box(mask: np.ndarray) -> Box:
    """Tight inclusive-exclusive box around a non-empty mask."""
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def _finish(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Add mild sensor noise and, sometimes, a slight blur."""
    noisy = image.astype(np.int16) + rng.integers(-6, 7, image.shape, dtype=np.int16)
    out = np.clip(noisy, 0, 255).astype(np.uint8)
    if rng.random() < 0.3:
        out = cv2.GaussianBlur(out, (3, 3), 0)
    return out


def make_sample(
    rng: np.random.Generator,
    size: int = 224,
    clutter: float = 1.0,
    min_scale: float = 28,
    max_scale: float = 90,
) -> ShapeSample:
    """Render one image with a single shape of a random class.

    ``min_scale``/``max_scale`` bound the shape's diameter in pixels and
    ``clutter`` (0 to 1) scales the background texture and distractors.
    """
    label = int(rng.integers(len(CLASS_NAMES)))
    image, base = _background(rng, size, clutter)
    radius = rng.uniform(min_scale, max_scale) / 2
    centre = rng.uniform(radius + 1, size - radius - 1, 2)
    mask = _shape_mask(label, size, centre, radius, rng.uniform(0, 2 * np.pi))
    _paint(rng, image, mask, base)
    return ShapeSample(_finish(rng, image), label, _box(mask), mask)


def make_two_object_sample(
    rng: np.random.Generator,
    size: int = 224,
    clutter: float = 1.0,
    min_scale: float = 28,
    max_scale: float = 80,
) -> TwoShapeSample:
    """Render one image with two non-overlapping shapes of two different classes."""
    first, second = (int(v) for v in rng.choice(len(CLASS_NAMES), 2, replace=False))
    labels = (first, second)
    image, base = _background(rng, size, clutter)
    radii = rng.uniform(min_scale, max_scale, 2) / 2
    while True:
        centres = [rng.uniform(r + 1, size - r - 1, 2) for r in radii]
        if np.linalg.norm(centres[0] - centres[1]) > radii.sum() + 4:
            break
        radii = np.maximum(radii * 0.95, min_scale / 2)
    mask_a, mask_b = (
        _shape_mask(label, size, centre, radius, rng.uniform(0, 2 * np.pi))
        for label, centre, radius in zip(labels, centres, radii)
    )
    masks = (mask_a, mask_b)
    for mask in masks:
        _paint(rng, image, mask, base)
    return TwoShapeSample(_finish(rng, image), labels, (_box(masks[0]), _box(masks[1])), masks)


class SampleOptions(TypedDict, total=False):
    """Keyword arguments of :func:`make_sample` that :func:`generate` passes on."""

    size: int
    clutter: float
    min_scale: float
    max_scale: float


def generate(n: int, seed: int, start: int = 0, **kwargs: Unpack[SampleOptions]) -> list[ShapeSample]:
    """Samples ``start .. start+n-1`` of the stream ``seed``; sample ``i`` uses ``default_rng([seed, i])``.

    Extra keyword arguments are passed to :func:`make_sample`.
    """
    return [make_sample(np.random.default_rng([seed, i]), **kwargs) for i in range(start, start + n)]


def save_samples(samples: Sequence[ShapeSample | TwoShapeSample], folder: str | Path) -> Path:
    """Write ``NNNNN.png`` images and a ``labels.csv`` (file,label,x0,y0,x1,y1) into ``folder``.

    ``label`` is the class index into :data:`CLASS_NAMES`; a two-object sample
    gets one row per object. Returns the CSV path.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    csv_path = folder / "labels.csv"
    with csv_path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "label", "x0", "y0", "x1", "y1"])
        for index, sample in enumerate(samples):
            name = f"{index:05d}.png"
            cv2.imwrite(str(folder / name), cv2.cvtColor(sample.image, cv2.COLOR_RGB2BGR))
            if isinstance(sample, ShapeSample):
                objects = [(sample.label, sample.box)]
            else:
                objects = list(zip(sample.labels, sample.boxes))
            for label, box in objects:
                writer.writerow([name, label, *box])
    return csv_path
