"""``reciprocam eval`` and reciprocam_onnx.evaluation end to end, on a tiny ViT and a few images."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from reciprocam_onnx import evaluation as ev
from reciprocam_onnx.cli import main
from reciprocam_onnx.errors import ImageError, OptionError
from reciprocam_onnx.evaluation import methods
from reciprocam_onnx.evaluation.data import Dataset
from reciprocam_onnx.evaluation.parts import merge_parts, start_part
from reciprocam_onnx.evaluation.shapes import generate, save_samples

FAST = {"rise_masks": 24, "auc_steps": 3, "progress": False}
RATES = set(ev.METRICS) - {"seconds_per_image"}
DISCRIMINATIVE = {key for key in RATES if key.startswith("discriminative")}


@pytest.fixture(scope="module")
def vit(exported):
    return exported("timm-patch32")[0]


@pytest.fixture(scope="module")
def model(vit):
    return ev.EvalModel(vit, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def rise_calls():
    return []


@pytest.fixture(scope="module")
def report(model, rise_calls, tmp_path_factory):
    """All methods on 3 shapes images in batches of 2, RISE spied on; written to a folder."""
    spy = pytest.MonkeyPatch()
    real = methods.rise_maps
    spy.setattr(methods, "rise_maps", lambda *a, **k: rise_calls.append(k["n_masks"]) or real(*a, **k))
    try:
        dataset = ev.shapes_dataset(3, seed=1, size=(224, 224))
        result = ev.evaluate(model, dataset, batch_size=2, **FAST)
    finally:
        spy.undo()
    folder = tmp_path_factory.mktemp("report")
    ev.write_report(result, folder)
    return result, folder


def check_metrics(methods: dict, names, n: int) -> None:
    """Every metric of every method is present; rates lie in [0, 1] (or are None), times >= 0."""
    assert list(methods) == list(names)
    for name, metrics in methods.items():
        assert set(metrics) == set(ev.METRICS) | {"n"}, name
        assert metrics["n"] == n
        assert metrics["seconds_per_image"] >= 0
        for key in RATES:
            assert metrics[key] is None or 0.0 <= metrics[key] <= 1.0, (name, key, metrics[key])


def test_every_method_has_every_metric_in_range(report):
    result, _ = report
    assert result["n"] == 3 and result["skipped"] == 0
    assert 0.0 <= result["accuracy"] <= 1.0
    check_metrics(result["methods"], ev.METHODS, 3)
    for name, metrics in result["methods"].items():
        missing = [key for key in RATES - DISCRIMINATIVE if metrics[key] is None]
        assert not missing, (name, missing)
        assert all(metrics[key] is None for key in DISCRIMINATIVE)  # one object per image
    assert result["methods"]["centre"]["coherency"] == pytest.approx(1.0)


def test_rise_uses_the_configured_number_of_masks(report, rise_calls):
    result, _ = report
    assert rise_calls and set(rise_calls) == {24}  # maps and coherency, per batch
    assert result["settings"]["rise_masks"] == 24
    assert "RISE: 24 masks for the maps and for the coherency pass." in ev.report_markdown(result)


def test_rise_coherency_pass_can_use_fewer_masks(model, monkeypatch):
    calls: list[int] = []
    real = methods.rise_maps
    monkeypatch.setattr(methods, "rise_maps", lambda *a, **k: calls.append(k["n_masks"]) or real(*a, **k))
    dataset = ev.shapes_dataset(2, seed=1, size=(224, 224))
    result = ev.evaluate(model, dataset, ["rise"], batch_size=2, rise_coherency_masks=8, **FAST)
    assert calls == [24, 8]  # the maps, then the explanation images for coherency
    assert result["settings"]["rise_coherency_masks"] == 8
    assert "RISE: 24 masks for the maps, 8 for the coherency pass (Coh, ADCC)." in ev.report_markdown(result)
    with pytest.raises(OptionError, match="RISE masks"):
        ev.evaluate(model, dataset, ["rise"], rise_coherency_masks=0, **FAST)


def test_report_files(report):
    result, folder = report
    text = (folder / "report.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    saved = json.loads(text)
    assert set(saved) >= {"model", "dataset", "n", "skipped", "accuracy", "methods"}
    assert "examples" not in saved
    check_metrics(saved["methods"], ev.METHODS, 3)
    table = (folder / "report.md").read_text()
    assert all(f"| {name} |" in table and f"**{name}**" in table for name in ev.METHODS)
    adcc = result["methods"]["reciprocam-3x3"]["adcc"]
    assert f"{100 * adcc:.2f}" in table
    picture = cv2.imread(str(folder / "examples.png"))
    assert picture.shape == (3 * 224, (1 + len(ev.METHODS)) * 224, 3)


def test_pointing_game_by_class_adds_up_to_the_overall_one(report, model):
    result, folder = report
    names = [model.info.model.label(sample.label) for sample in generate(3, 1)]
    by_class = json.loads((folder / "report.json").read_text())["pointing_game_by_class"]
    assert list(by_class) == list(ev.METHODS)
    for name, table in by_class.items():
        assert sum(entry["n"] for entry in table.values()) == 3
        assert sorted(table) == sorted(set(names))
        overall = sum(entry["pointing_game"] * entry["n"] for entry in table.values()) / 3
        assert overall == pytest.approx(result["methods"][name]["pointing_game"])
    text = (folder / "report.md").read_text()
    assert len(set(names)) == 3 and "## Pointing game by class" in text
    assert all(f"| {name} |" in text for name in names)


def test_json_safe_turns_nan_into_null():
    assert ev.json_safe({"a": float("nan"), "b": [np.float32(0.5), np.int64(2), np.inf], "c": True}) == {
        "a": None,
        "b": [0.5, 2, None],
        "c": True,
    }


def test_folder_dataset_skips_and_counts_a_broken_image(model, tmp_path):
    save_samples(generate(3, seed=2), tmp_path)
    (tmp_path / "00001.png").write_bytes(b"\x89PNG not really")
    dataset = ev.folder_dataset(tmp_path, None, (224, 224))
    result = ev.evaluate(model, dataset, ["reciprocam-3x3", "centre"], batch_size=4, **FAST)
    assert (result["n"], result["skipped"]) == (2, 1)
    check_metrics(result["methods"], ["reciprocam-3x3", "centre"], 2)
    assert result["methods"]["centre"]["pointing_game"] is not None
    assert result["accuracy"] is not None


def test_shapes_dataset_matches_the_generator():
    item = next(iter(ev.shapes_dataset(1, seed=5, size=(224, 224))))
    sample = generate(1, seed=5)[0]
    assert np.array_equal(item.image_rgb, sample.image)
    assert item.label == sample.label and item.boxes == [(sample.label, sample.box)]
    assert item.tensor.shape == (3, 224, 224) and item.tensor.dtype == np.float32


@pytest.mark.parametrize(
    "source, mode, box, expected",
    [
        ((448, 448), "stretch", (10, 20, 110, 120), (5, 10, 55, 60)),
        ((224, 300), "crop", (0, 0, 100, 50), (0, 0, 62, 50)),  # 38 columns cropped on the left
        ((224, 300), "crop", (0, 0, 30, 50), None),  # cropped away
    ],
)
def test_fit_box_follows_the_pixels(source, mode, box, expected):
    assert ev.fit_box(box, source, (224, 224), mode) == expected


def test_cli_two_objects_writes_the_report(vit, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(
        [
            "eval",
            str(vit),
            "--dataset",
            "shapes",
            "--n",
            "2",
            "--seed",
            "3",
            "--two-objects",
            "--methods",
            "reciprocam-3x3,centre",
            "--auc-steps",
            "3",
            "-o",
            str(out),
            "--cpu",
        ]
    )
    assert code == 0
    assert "| reciprocam-3x3 |" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["examples.png", "report.json", "report.md"]
    saved = json.loads((out / "report.json").read_text())
    assert saved["accuracy"] is None  # two classes per image: no single label
    check_metrics(saved["methods"], ["reciprocam-3x3", "centre"], 2)
    for m in saved["methods"].values():
        first, second = m["discriminative_pointing_game_first"], m["discriminative_pointing_game_second"]
        assert m["discriminative_pointing_game"] == pytest.approx((first + second) / 2)  # each pair counts both


def test_cli_rejects_an_unknown_method(vit, tmp_path, capsys):
    code = main(["eval", str(vit), "--n", "1", "--methods", "gradcam", "-o", str(tmp_path), "--cpu"])
    assert code == 1
    assert "unknown methods (gradcam)" in capsys.readouterr().err


def flaky_shapes(n: int, loaded: list[int], stop_at: int | None) -> Dataset:
    """``n`` shapes images whose entry 1 is unreadable; reading entry ``stop_at`` interrupts the run."""
    shapes = list(ev.shapes_dataset(n, seed=4, size=(224, 224)))

    def load(index: int):
        if index == stop_at:
            raise KeyboardInterrupt
        loaded.append(index)
        if index == 1:
            raise ImageError("entry 1: unreadable")
        return shapes[index]

    return Dataset("flaky shapes", range(n), load)


def without_times(result: dict) -> dict:
    methods = {name: {k: v for k, v in m.items() if k != "seconds_per_image"} for name, m in result["methods"].items()}
    return {**result, "methods": methods, "examples": None}


def test_an_interrupted_evaluation_resumes_to_the_uninterrupted_result(model, tmp_path):
    names = ["reciprocam-3x3", "random", "centre"]
    whole = ev.evaluate(model, flaky_shapes(5, [], None), names, batch_size=2, **FAST)
    checkpoint = tmp_path / ev.CHECKPOINT
    loaded: list[int] = []
    with pytest.raises(KeyboardInterrupt):  # after the first batch (entries 0-2, 1 unreadable) was saved
        ev.evaluate(model, flaky_shapes(5, loaded, 3), names, batch_size=2, checkpoint=checkpoint, **FAST)
    assert checkpoint.exists() and loaded == [0, 1, 2]
    loaded.clear()
    resumed = ev.evaluate(model, flaky_shapes(5, loaded, None), names, batch_size=2, checkpoint=checkpoint, **FAST)
    assert loaded == [3, 4]  # the saved entries are not read again
    assert (resumed["n"], resumed["skipped"]) == (4, 1)
    assert without_times(resumed) == without_times(whole)
    assert [e["name"] for e in resumed["examples"]] == [e["name"] for e in whole["examples"]]
    for mine, theirs in zip(resumed["examples"], whole["examples"]):
        assert np.array_equal(mine["image"], theirs["image"]) and mine["boxes"] == theirs["boxes"]
        assert all(np.array_equal(mine["maps"][name], theirs["maps"][name]) for name in names)


def test_two_parts_of_a_run_merge_into_the_uninterrupted_run(model, tmp_path):
    """Entries 0-3 and 3-5 run as parts (evaluation/parts.py), merged, then finished: the whole run's result."""
    names = ["reciprocam-3x3", "random", "centre"]
    whole = ev.evaluate(model, flaky_shapes(6, [], None), names, batch_size=2, **FAST)
    first, second, merged = tmp_path / "first.npz", tmp_path / "second.npz", tmp_path / "merged.npz"
    with pytest.raises(KeyboardInterrupt):  # entries 0-2 (1 unreadable) saved
        ev.evaluate(model, flaky_shapes(6, [], 3), names, batch_size=2, checkpoint=first, **FAST)
    with pytest.raises(OptionError, match="over 6 entries cannot begin at entry 7"):
        start_part(first, 7, second)
    start_part(first, 3, second)
    loaded: list[int] = []
    with pytest.raises(KeyboardInterrupt):  # entries 3-4 saved
        ev.evaluate(model, flaky_shapes(6, loaded, 5), names, batch_size=2, checkpoint=second, **FAST)
    assert loaded == [3, 4]
    with pytest.raises(OptionError, match="ends at entry 5, where the second does not start"):
        merge_parts(second, first, merged)
    assert merge_parts(first, second, merged)["consumed"] == 5
    loaded.clear()
    resumed = ev.evaluate(model, flaky_shapes(6, loaded, None), names, batch_size=2, checkpoint=merged, **FAST)
    assert loaded == [5]
    assert_same(without_times(resumed), without_times(whole))


def assert_same(got, want, where: str = "result") -> None:
    """Equal, but for floats, which may differ by rounding (the merged sums are added in another order)."""
    if isinstance(want, dict):
        assert list(got) == list(want), where
        for key in want:
            assert_same(got[key], want[key], f"{where}[{key!r}]")
    elif isinstance(want, list | tuple):
        assert len(got) == len(want), where
        for k, (a, b) in enumerate(zip(got, want)):
            assert_same(a, b, f"{where}[{k}]")
    elif isinstance(want, float):
        assert got == pytest.approx(want, rel=1e-12, abs=1e-15), where
    else:
        assert got == want, where


def test_a_checkpoint_of_another_run_is_refused(model, tmp_path):
    checkpoint = tmp_path / ev.CHECKPOINT
    ev.evaluate(model, ev.shapes_dataset(1, seed=4, size=(224, 224)), ["centre"], checkpoint=checkpoint, **FAST)
    with pytest.raises(OptionError, match=r"another run \(methods differ\); delete it"):
        ev.evaluate(model, ev.shapes_dataset(1, seed=4, size=(224, 224)), ["random"], checkpoint=checkpoint, **FAST)
    checkpoint.write_bytes(b"not a checkpoint")
    with pytest.raises(OptionError, match="cannot resume from"):
        ev.evaluate(model, ev.shapes_dataset(1, seed=4, size=(224, 224)), ["centre"], checkpoint=checkpoint, **FAST)
