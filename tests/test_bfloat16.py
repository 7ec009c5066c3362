"""precision="bfloat16": the masked copies in OpenVINO's bfloat16 CPU plugin, each map checked against a
few float32 cells (engine/fidelity.py), and recomputed in float32 (or warned about) where rounding erased it.

On a CPU without bfloat16 arithmetic the explainer says so and runs in float32; the tests assert
whichever of the two this CPU does, so they check the path that runs here."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from reciprocam_onnx import Explainer
from reciprocam_onnx.cli import main
from reciprocam_onnx.engine import openvino_suffix
from reciprocam_onnx.engine.fidelity import MIN_PEARSON, checked_cells, estimated_pearson
from reciprocam_onnx.errors import OptionError
from reciprocam_onnx.evaluation.shapes import generate
from tests.conftest import random_images

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "models" / "shapes_vit.onnx"
BF16 = openvino_suffix.bfloat16_supported()


def pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.array([np.corrcoef(x.ravel(), y.ravel())[0, 1] for x, y in zip(a, b)])


def test_the_pearson_estimate_ignores_affine_changes_and_sees_noise():
    rng = np.random.default_rng(0)
    exact = rng.standard_normal(196)
    cells = checked_cells(196)
    assert len(cells) == 16 and cells[0] == 0 and cells[-1] == 195
    assert estimated_pearson(3.0 * exact[cells] + 7.0, exact[cells]) == pytest.approx(1.0)  # same min-max map
    for seed in range(1, 11):  # rounding noise of 5% of the map's spread passes, 40% does not
        noise = np.random.default_rng(seed).standard_normal(196)
        assert estimated_pearson((exact + 0.05 * noise)[cells], exact[cells]) >= MIN_PEARSON
        assert estimated_pearson((exact + 0.4 * noise)[cells], exact[cells]) < MIN_PEARSON
    assert estimated_pearson(np.zeros(16), exact[cells]) == 0.0  # a flat map shows nothing
    assert checked_cells(9) == list(range(9))
    bigger = checked_cells(576)  # a 24x24 grid (384 px) checks 8% of its cells, evenly spread
    assert len(bigger) == 48 and bigger[0] == 0 and bigger[-1] == 575 and len(set(np.diff(bigger))) <= 2


def test_bfloat16_maps_follow_float32_on_a_sensitised_model(exported):
    path, _, fam = exported("timm-deit-tiny")
    exact = Explainer(path, providers=["CPUExecutionProvider"])
    reduced = exact.with_options(precision="bfloat16")
    assert (reduced._reduced is not None) == BF16
    images = random_images(4, fam.input_size, seed=5)
    a, b = exact.explain(images), reduced.explain(images)
    np.testing.assert_array_equal(a.targets, b.targets)
    np.testing.assert_array_equal(a.scores, b.scores)  # the unmasked copy runs in float32
    correlation = pearson(a.maps, b.maps)
    assert correlation.min() >= 0.95 and correlation.mean() >= 0.98, correlation
    if BF16:
        assert not np.array_equal(a.maps, b.maps)  # it did compute in bfloat16


class Rounding:
    """A stand-in for OpenVINO's runner: the float32 suffix, its logits rounded to ``step``; counts the copies."""

    def __init__(self, session, output: str, step: float):
        self.session, self.output, self.step, self.copies = session, output, step, 0

    def run(self, feeds: dict, out: np.ndarray) -> None:
        out[...] = np.round(self.session.run([self.output], feeds)[0] / self.step) * self.step
        self.copies += len(out)


@pytest.mark.parametrize("step", [1e-6, 1e3], ids=["resolved", "erased"])
def test_every_cell_runs_once_and_the_checked_cells_are_kept(exported, step):
    """The check's cells are not run again: in reduced precision when the check passes (a fine rounding
    step), in float32 when it fails (a step that erases the map); either way the map is what the
    precision that ran gives, cell for cell."""
    path, _, fam = exported("timm-deit-tiny")
    exact = Explainer(path, providers=["CPUExecutionProvider"])
    reduced = exact.with_options(precision="bfloat16", unresolved="recompute")
    reduced._reduced = Rounding(reduced._suffix, reduced.info.output_name, step)
    float32_copies = []
    run_suffix = reduced._run_suffix
    reduced._run_suffix = lambda tapped, image, slots, out: (
        float32_copies.append(len(out)),
        run_suffix(tapped, image, slots, out),
    )
    image = random_images(1, fam.input_size, seed=6)
    cells = exact.info.grid[0] * exact.info.grid[1]
    _, scores = reduced.cell_scores(image)
    checked = len(checked_cells(cells))
    if step < 1:
        assert reduced._reduced.copies == cells and sum(float32_copies) == 1 + checked
        np.testing.assert_allclose(scores, exact.cell_scores(image)[1], atol=1e-5)
    else:
        assert reduced._reduced.copies == checked and sum(float32_copies) == 1 + cells
        np.testing.assert_array_equal(scores, exact.cell_scores(image)[1])


@pytest.mark.parametrize("unresolved", ["recompute", "warn"])
def test_maps_rounding_erased_are_recomputed_or_reported(unresolved, caplog):
    """The demo model is confident: at block -2 its cells' softmax scores differ by ~1e-5, below
    bfloat16's step, for most images."""
    exact = Explainer(DEMO)
    reduced = exact.with_options(precision="bfloat16", unresolved=unresolved)
    images = np.stack([exact.info.preprocess(s.image)[0] for s in generate(5, seed=31)])  # 5: all named
    with caplog.at_level(logging.WARNING, logger="reciprocam_onnx"):
        a, b = exact.explain(images), reduced.explain(images)
    messages = [r.getMessage() for r in caplog.records]
    if not BF16:
        assert any("no bfloat16 arithmetic" in m for m in messages)
        np.testing.assert_array_equal(a.maps, b.maps)
        return
    [line] = [m for m in messages if "bfloat16 rounding erased" in m]
    erased = [int(k) for k in line.split("(")[1].split(")")[0].split(", ")]
    assert erased, line
    kept = [k for k in range(len(images)) if k not in erased]
    if unresolved == "recompute":
        assert line.endswith("recomputed in float32")
        np.testing.assert_array_equal(a.maps[erased], b.maps[erased])
    else:
        assert "precision='float32'" in line
        assert (pearson(a.maps[erased], b.maps[erased]) < 0.999).all()
    assert (pearson(a.maps[kept], b.maps[kept]) > 0.9).all()  # those it kept (often none on this model)


def test_without_openvino_bfloat16_says_how_to_get_it(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_openvino(name, *args, **kwargs):
        if name == "openvino":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    openvino_suffix._core.cache_clear()
    monkeypatch.setattr(builtins, "__import__", no_openvino)
    try:
        with pytest.raises(OptionError, match=r"reciprocam-onnx\[openvino\]"):
            Explainer(DEMO, precision="bfloat16")
    finally:
        openvino_suffix._core.cache_clear()


def test_a_cpu_without_bfloat16_runs_float32_and_says_so(monkeypatch, caplog):
    monkeypatch.setattr("reciprocam_onnx.engine.explainer.bfloat16_supported", lambda: False)
    image = Explainer(DEMO).info.preprocess(ROOT / "examples" / "images" / "star.png")[0][None]
    with caplog.at_level(logging.WARNING, logger="reciprocam_onnx"):
        reduced = Explainer(DEMO, precision="bfloat16")
    assert any("no bfloat16 arithmetic" in r.getMessage() for r in caplog.records)
    np.testing.assert_array_equal(reduced.explain(image).maps, Explainer(DEMO).explain(image).maps)


def test_cli_precision_bfloat16(tmp_path, capsys):
    image = ROOT / "examples" / "images" / "star.png"
    assert main(["explain", str(DEMO), str(image), "-o", str(tmp_path), "--precision", "bfloat16"]) == 0
    assert "target: star" in capsys.readouterr().out
    assert np.load(tmp_path / "star.map.npy").shape == (14, 14)
