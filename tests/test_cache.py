"""The split cache (split/cache.py): a second opening reads the verified split instead of making it."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

import reciprocam_onnx.split.pipeline as pipeline
from reciprocam_onnx import Explainer, open_explainer
from reciprocam_onnx.cli import main
from reciprocam_onnx.contract import INFO_FILE, SHARED_FILE, SUFFIX_FILE
from tests.conftest import random_images

DEMO = Path(__file__).resolve().parents[1] / "models" / "shapes_vit.onnx"
IMAGE = DEMO.parents[1] / "examples" / "images" / "star.png"


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """The cache on, in a folder of this test's; counts the analyses (the work a cached opening skips)."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("RECIPROCAM_CACHE", str(folder))
    return folder


@pytest.fixture
def analyses(monkeypatch) -> list[int]:
    calls: list[int] = []
    real = pipeline.analyse

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "analyse", counted)
    return calls


def entries(folder: Path) -> list[Path]:
    return sorted(entry for entry in folder.iterdir() if not entry.name.startswith("."))


def test_a_second_opening_reads_the_split_from_the_cache(cache, analyses):
    images = random_images(2, (224, 224), seed=3)
    first = Explainer(DEMO).explain(images)
    assert len(analyses) == 1 and len(entries(cache)) == 1 and (entries(cache)[0] / INFO_FILE).is_file()
    second = Explainer(DEMO)
    assert len(analyses) == 1  # read, not made
    np.testing.assert_array_equal(second.explain(images).maps, first.maps)
    Explainer(DEMO, block=-1)  # another cut: another entry
    assert len(analyses) == 2 and len(entries(cache)) == 2


def test_presets_share_one_cached_split(cache, analyses):
    images = random_images(1, (224, 224), seed=4)
    first = open_explainer(DEMO, preset="reciprocam+").explain(images)
    again = open_explainer(DEMO, preset="reciprocam+")
    assert len(analyses) == 1 and (entries(cache)[0] / SHARED_FILE).is_file()
    np.testing.assert_array_equal(again.explain(images).maps, first.maps)


def test_a_changed_model_or_no_cache_makes_the_split_again(cache, analyses, tmp_path):
    model = tmp_path / "model.onnx"
    shutil.copy(DEMO, model)
    Explainer(model)
    proto = onnx.load(model)
    proto.metadata_props.add(key="note", value="retrained")
    onnx.save(proto, model)
    Explainer(model)
    assert len(analyses) == 2 and len(entries(cache)) == 2
    Explainer(model, cache=False)
    assert len(analyses) == 3 and len(entries(cache)) == 2
    assert main(["explain", str(model), str(IMAGE), "-o", str(tmp_path / "out"), "--no-cache", "--block", "-1"]) == 0
    assert len(analyses) == 4 and len(entries(cache)) == 2


def test_a_torn_entry_is_made_again(cache, analyses, caplog):
    maps = Explainer(DEMO).explain(random_images(1, (224, 224))).maps
    (entries(cache)[0] / SUFFIX_FILE).write_bytes(b"torn")
    with caplog.at_level(logging.WARNING, logger="reciprocam_onnx"):
        again = Explainer(DEMO)
    assert len(analyses) == 2 and "unreadable and is made again" in caplog.text and "torn or edited" in caplog.text
    np.testing.assert_array_equal(again.explain(random_images(1, (224, 224))).maps, maps)
    assert len(analyses) == 2 and len(entries(cache)) == 1


def test_the_cache_keeps_to_its_size_limit(cache, analyses, monkeypatch):
    """Least recently used entries go past RECIPROCAM_CACHE_BYTES; so does a killed run's day-old staging
    folder, not a fresh one (another run's, still writing)."""
    monkeypatch.setenv("RECIPROCAM_CACHE_BYTES", "1")  # room for the newest entry only
    (cache / ".killed").mkdir(parents=True)
    os.utime(cache / ".killed", (1, 1))
    (cache / ".writing").mkdir()
    Explainer(DEMO, block=-1)
    assert not (cache / ".killed").exists() and (cache / ".writing").is_dir()
    Explainer(DEMO, block=-2)
    assert [entry.name for entry in entries(cache)] == [entries(cache)[0].name] and len(entries(cache)) == 1
    Explainer(DEMO, block=-2)
    assert len(analyses) == 2  # the newest was kept


def test_a_cache_folder_that_cannot_be_written_is_one_warning(tmp_path, monkeypatch, caplog):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("RECIPROCAM_CACHE", str(blocker))
    with caplog.at_level(logging.WARNING, logger="reciprocam_onnx"):
        Explainer(DEMO)
    lines = [r.getMessage() for r in caplog.records if "cache" in r.getMessage()]
    assert len(lines) == 1 and "cannot keep the split in the cache folder" in lines[0]
