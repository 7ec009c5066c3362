"""Presets with several taps (reciprocam+): the weighted sum of each tap's map, against the PyTorch reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from reciprocam_onnx import Explainer, MultiTapExplainer, Options, open_explainer
from reciprocam_onnx.cli import main
from reciprocam_onnx.engine.scores import minmax_normalise
from reciprocam_onnx.engine.taps import combine_maps
from reciprocam_onnx.errors import OptionError
from reciprocam_onnx.options import PRESETS, preset_taps
from tests.conftest import random_images
from tests.reference_check import TOLERANCE
from tests.torch_reference import as_float64, reference_explain

PLUS = "reciprocam+"
IMAGE = str(Path(__file__).resolve().parents[1] / "examples" / "images" / "arrow.png")


def reference_preset(model, fam, images: np.ndarray, info) -> tuple[np.ndarray, np.ndarray]:
    """(weighted sum of the min-max maps of every tap of reciprocam+ for the predicted class, min-max
    normalised [B, h, w], before the preset's power; the largest change one tap's map takes from float64
    to float32 [B])."""
    total, noise = 0.0, 0.0
    preset = PRESETS[PLUS]
    for tap, weight in zip(preset.taps, preset.tap_weights()):
        options = {k: v for k, v in tap.items() if k != "block"}
        refs = [
            reference_explain(m, *fam.blocks(m)[tap["block"]], images, info.grid, info.prefix_tokens, **options)
            for m in (as_float64(model), model)
        ]
        total = total + weight * refs[0].maps
        noise = np.maximum(noise, np.abs(refs[0].maps - refs[1].maps).max(axis=(1, 2)))
    return minmax_normalise(total), noise


def test_reciprocam_plus_matches_the_reference(exported):
    path, model, fam = exported("timm-deit-tiny-distilled")
    images = random_images(2, fam.input_size, seed=11)
    ex = open_explainer(path, preset=PLUS, max_batch=64)
    assert isinstance(ex, MultiTapExplainer)
    assert [t.options.block for t in ex.taps] == [tap["block"] % 4 for tap in PRESETS[PLUS].taps]
    assert all(t.options.max_batch == 64 for t in ex.taps)
    out = ex.explain(images)
    expected, noise = reference_preset(model, fam, images, ex.info)
    well_posed = noise <= TOLERANCE / 4
    assert well_posed.any(), "no map was well-posed enough to compare"
    # compared before the power (map ** gamma is steep near 0 for gamma < 1; its inverse is not)
    unpowered = out.maps.astype(np.float64) ** (1 / PRESETS[PLUS].gamma)
    np.testing.assert_allclose(unpowered[well_posed], expected[well_posed], atol=2 * TOLERANCE)
    np.testing.assert_allclose(out.scores.sum(axis=1), 1.0, atol=1e-6)  # softmax, whatever the taps read
    every = ex.explain_all(images)
    np.testing.assert_allclose(every[np.arange(2), out.targets], out.maps, atol=1e-6)
    given = ex.explain(images, targets=[4, 5])
    assert given.targets.tolist() == [4, 5] and not np.allclose(given.maps, out.maps)


def _counted(function, calls: list[str]):
    def counted(*args, **kwargs):
        calls.append(function.__name__)
        return function(*args, **kwargs)

    return counted


def test_taps_share_one_split_and_one_prefix_run(exported, monkeypatch):
    """One analysis, one verification and one prefix session for the four taps; the maps are those of four
    independent Explainers (each its own split and prefix run), bit for bit up to 1e-5."""
    import reciprocam_onnx.split.pipeline as pipeline

    path, _, fam = exported("timm-deit-tiny-distilled")
    calls: list[str] = []
    for name in ("analyse", "verify_shared", "verify_split"):
        monkeypatch.setattr(pipeline, name, _counted(getattr(pipeline, name), calls))
    ex = open_explainer(path, preset=PLUS)
    assert calls == ["analyse", "verify_shared"]
    assert len({id(tap._prefix) for tap in ex.taps}) == 1 and ex.taps[0]._prefix is ex._prefix
    assert len({output.name for output in ex._prefix.get_outputs()}) == 3 * 2  # R and F's projection, 3 blocks
    images = random_images(3, fam.input_size, seed=5)
    out = ex.explain(images, all_classes=True)
    alone = [Explainer(path, tap) for tap in preset_taps(PLUS)]
    every = combine_maps([tap.explain_all(images) for tap in alone], PRESETS[PLUS].weights, PRESETS[PLUS].gamma)
    np.testing.assert_allclose(out.every, every, atol=1e-5, rtol=0)
    given = ex.explain(images[:2], targets=[1, 2])
    np.testing.assert_allclose(given.maps, every[[0, 1], [1, 2]], atol=1e-5, rtol=0)


def test_weights_and_gamma_combine_the_taps_maps(exported):
    """Each tap's map times its weight, summed, min-max normalised, then raised to gamma: no peak moves."""
    path, _, fam = exported("timm-deit-tiny-distilled")
    images = random_images(2, fam.input_size, seed=3)
    taps = [Options(block=-1, score="logits"), Options(block=-2, window="removed")]
    out = MultiTapExplainer(path, taps, weights=(2.0, 0.5), gamma=0.5).explain(images)
    single = [Explainer(path, tap).explain(images, out.targets).maps for tap in taps]
    summed = minmax_normalise(2.0 * single[0] + 0.5 * single[1])
    np.testing.assert_allclose(out.maps, summed**0.5, atol=1e-6)
    assert (out.maps.reshape(2, -1).argmax(1) == summed.reshape(2, -1).argmax(1)).all()
    assert not np.allclose(out.maps, minmax_normalise(single[0] + single[1]) ** 0.5, atol=1e-3)
    for weights, gamma in (((1.0,), 1.0), ((1.0, 0.0), 1.0), ((1.0, 1.0), 0.0)):
        with pytest.raises(OptionError, match="one positive weight each and a positive gamma"):
            MultiTapExplainer(path, taps, weights=weights, gamma=gamma)


def test_presets_refuse_what_they_cannot_honour(exported, tmp_path, capsys):
    path, _, _ = exported("timm-deit-tiny-distilled")
    with pytest.raises(OptionError, match="sets block itself"):
        open_explainer(path, preset=PLUS, block=-2)
    args = ["explain", str(path), IMAGE, "-o", str(tmp_path), "--preset", PLUS, "--kernel", "3x3"]
    assert main(args) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "sets kernel itself" in err[0]
    from reciprocam_onnx import fuse

    fused = tmp_path / "fused.onnx"
    fused.write_bytes(fuse(path).SerializeToString())
    with pytest.raises(OptionError, match="built with one tap: re-fuse the model with --preset reciprocam"):
        open_explainer(fused, preset=PLUS)


def test_cli_explain_with_the_preset(tmp_path, capsys):
    """The bundled demo model, explained with reciprocam+: an overlay and a map, softmax scores printed."""
    assert main(["explain", IMAGE, "-o", str(tmp_path), "--preset", PLUS]) == 0
    saved = np.load(tmp_path / "arrow.map.npy")
    assert saved.shape == (14, 14) and saved.min() == 0 and saved.max() == 1
    assert (tmp_path / "arrow.overlay.png").is_file()
    assert "target: arrow" in capsys.readouterr().out
