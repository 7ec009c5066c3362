"""Tests for the synthetic shapes dataset and the shipped demo model (no torch needed)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from reciprocam_onnx.evaluation.shapes import (
    CLASS_NAMES,
    ShapeSample,
    generate,
    make_two_object_sample,
    save_samples,
)

ROOT = Path(__file__).resolve().parents[1]


def _inside(mask: np.ndarray, box: tuple[int, int, int, int]) -> bool:
    """True when every mask pixel lies in the inclusive-exclusive box."""
    x0, y0, x1, y1 = box
    ys, xs = np.nonzero(mask)
    return bool(xs.min() >= x0 and xs.max() < x1 and ys.min() >= y0 and ys.max() < y1)


def test_generate_is_deterministic_per_seed() -> None:
    first, again, other = generate(4, seed=7), generate(4, seed=7), generate(4, seed=8)
    for a, b in zip(first, again):
        assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)
        assert (a.label, a.box) == (b.label, b.box)
    assert not any(np.array_equal(a.image, c.image) for a, c in zip(first, other))


def test_sample_depends_only_on_seed_and_index() -> None:
    assert np.array_equal(generate(1, seed=3, start=5)[0].image, generate(6, seed=3)[5].image)


def test_samples_are_well_formed() -> None:
    labels = set()
    for sample in generate(60, seed=0):
        assert sample.image.shape == (224, 224, 3) and sample.image.dtype == np.uint8
        assert sample.mask.shape == (224, 224) and sample.mask.dtype == bool
        assert 0 <= sample.label < len(CLASS_NAMES)
        assert sample.mask.any()
        assert _inside(sample.mask, sample.box)
        labels.add(sample.label)
    assert len(labels) == len(CLASS_NAMES)


def test_two_object_samples() -> None:
    for i in range(20):
        sample = make_two_object_sample(np.random.default_rng([1, i]))
        assert sample.labels[0] != sample.labels[1]
        assert all(0 <= label < len(CLASS_NAMES) for label in sample.labels)
        assert not np.logical_and(*sample.masks).any()
        for mask, box in zip(sample.masks, sample.boxes):
            assert mask.any() and _inside(mask, box)


def test_save_samples_writes_images_and_csv(tmp_path: Path) -> None:
    samples: list = [*generate(3, seed=2), make_two_object_sample(np.random.default_rng(0))]
    csv_path = save_samples(samples, tmp_path)
    with csv_path.open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["file", "label", "x0", "y0", "x1", "y1"]
    assert len(rows) == 5
    for row, sample in zip(rows, samples[:3]):
        assert isinstance(sample, ShapeSample)
        assert int(row["label"]) == sample.label
        assert tuple(int(row[k]) for k in ("x0", "y0", "x1", "y1")) == sample.box
        image = cv2.cvtColor(cv2.imread(str(tmp_path / row["file"])), cv2.COLOR_BGR2RGB)
        assert np.array_equal(image, sample.image)
    assert {int(row["label"]) for row in rows[3:]} == set(samples[3].labels)


def test_shipped_model_classifies_example_images() -> None:
    ort = pytest.importorskip("onnxruntime")
    manifest = json.loads((ROOT / "models" / "manifest.json").read_text())
    entry = manifest["models"][manifest["default"]]
    session = ort.InferenceSession(str(ROOT / "models" / entry["file"]), providers=["CPUExecutionProvider"])
    mean = np.array(entry["mean"], np.float32)
    std = np.array(entry["std"], np.float32)
    images = sorted(p for p in (ROOT / "examples" / "images").glob("*.png") if p.stem in entry["classes"])
    assert len(images) >= 4
    for path in images:
        rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0
        x = ((rgb - mean) / std).transpose(2, 0, 1)[None].astype(np.float32)
        logits = session.run(None, {session.get_inputs()[0].name: x})[0]
        assert entry["classes"][int(logits.argmax())] == path.stem, path.name


def test_shipped_model_maps_point_at_the_object() -> None:
    """ViT-ReciproCAM with the defaults on the shipped model puts most maps' maximum in the object's box.

    A trained model is the only place where a map has a right answer; random-weight
    tests cannot catch an explainer that is exact but explains the wrong thing.
    """
    from reciprocam_onnx import Explainer
    from reciprocam_onnx.evaluation.metrics import pointing_game
    from reciprocam_onnx.io.images import normalise

    entry = json.loads((ROOT / "models" / "manifest.json").read_text())["models"]["shapes-vit"]
    samples = generate(40, seed=entry["heldout_seed"])
    x = np.stack([normalise(s.image, entry["mean"], entry["std"]) for s in samples])
    out = Explainer(ROOT / "models" / entry["file"]).explain(x, targets=[s.label for s in samples])
    hits = [pointing_game(m, s.box, s.image.shape[:2]) for m, s in zip(out.maps, samples)]
    assert np.mean(hits) >= 0.7, f"pointing game {np.mean(hits):.2f} on 40 held-out images"
