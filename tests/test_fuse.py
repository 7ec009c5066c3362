"""The fused explain graph against Explainer.explain_all and the original model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from reciprocam_onnx import Explainer, FusedExplainer, fuse, open_explainer
from reciprocam_onnx.engine.explainer import bytes_per_copy
from reciprocam_onnx.engine.fused_graph import FUSED_BUDGET_BYTES, default_chunk, fused_options, model_of
from reciprocam_onnx.errors import OptionError
from reciprocam_onnx.graph.runtime import make_session
from reciprocam_onnx.options import PRESETS
from tests.conftest import random_images
from tests.zoo import FAMILIES

OPTIONS = [  # (kernel, cls_token, score, block, residual, batch, chunk, window): one per export, each on 4+
    ("3x3", True, "softmax", -2, "unmasked", 3, None, "removed"),
    ("1x1", False, "logits", -1, "masked", 1, 40, "removed"),
    ("3x3", False, "logits", -2, "masked", 1, None, "kept"),
    ("1x1", True, "softmax", -1, "unmasked", 3, 64, "kept"),
]
SALIENCY_TOLERANCE = 1e-4
PLUS = "reciprocam+"
DEMO = Path(__file__).resolve().parents[1] / "models" / "shapes_vit.onnx"
LOGIT_TOLERANCE = 1e-5


# family x opset x batch as a pairwise covering: every family meets both opsets and both batch kinds, and
# every (opset, batch) pair occurs (the full grid runs in test_explainer_reference.py)
EXPORTS = [
    (family, opset, dynamic)
    for k, family in enumerate(sorted(FAMILIES))
    for opset, dynamic in (((14, True), (17, False)) if k % 2 == 0 else ((14, False), (17, True)))
]


@pytest.mark.parametrize("family, opset, dynamic", EXPORTS)
def test_fused_graph_equals_explainer_and_model(family, opset, dynamic, exported):
    path, _, fam = exported(family, opset, dynamic)
    original = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    choice = (sorted(FAMILIES).index(family) + 2 * (opset == 17) + dynamic) % len(OPTIONS)
    kernel, cls_token, score, block, residual, batch, chunk, window = OPTIONS[choice]
    options = dict(block=block, kernel=kernel, cls_token=cls_token, score=score, residual=residual, window=window)
    fused = fuse(path, chunk=chunk, **options)
    onnx.checker.check_model(fused, full_check=True)
    session = make_session(fused)  # all graph optimisations on
    images = random_images(batch, fam.input_size, seed=batch)
    logits, saliency, saliency_u8 = session.run(None, {"input": images})
    expected = np.concatenate([original.run(None, {"input": images[i : i + 1]})[0] for i in range(batch)])
    np.testing.assert_allclose(logits, expected, atol=LOGIT_TOLERANCE, rtol=0)
    reference = Explainer(path, **options).explain_all(images)
    where = f"{family} {options} B={batch} chunk={chunk}"
    np.testing.assert_allclose(saliency, reference, atol=SALIENCY_TOLERANCE, rtol=0, err_msg=where)
    assert saliency_u8.dtype == np.uint8
    np.testing.assert_array_equal(saliency_u8, np.round(255 * saliency).astype(np.uint8))
    plain = model_of(fused)  # the model back, without the explanation branch (what eval scores with)
    assert b"reciprocam/copies/" not in plain.SerializeToString() and len(plain.graph.output) == 1
    np.testing.assert_array_equal(make_session(plain).run(None, {"input": images})[0], logits)


def test_fused_metadata_and_explainer(exported):
    path, _, fam = exported("timm-patch32")
    fused = fuse(path, kernel="1x1")
    props = {p.key: p.value for p in fused.metadata_props}
    assert (
        '"kernel": "1x1"' in props["reciprocam.fused"] and '"grid": [\n    7,\n    7\n  ]' in props["reciprocam.split"]
    )
    images = random_images(2, fam.input_size)
    out = open_explainer(fused).explain(images, targets=[1, 2])
    ref = Explainer(path, kernel="1x1").explain(images, targets=[1, 2])
    np.testing.assert_allclose(out.maps, ref.maps, atol=SALIENCY_TOLERANCE)
    np.testing.assert_allclose(out.scores, ref.scores, atol=1e-5)
    assert isinstance(open_explainer(fused, kernel="1x1"), FusedExplainer)
    with pytest.raises(OptionError, match="kernel='3x3'"):
        open_explainer(fused, kernel="3x3")


def test_fused_graph_refuses_options_it_cannot_honour(exported):
    """A fused graph bakes its options: runtime options and other values are refused, not ignored."""
    path, _, _ = exported("timm-patch32")
    fused = fuse(path, block=-1)
    assert isinstance(open_explainer(fused, block=-1), FusedExplainer)  # -1 is the block it was built at
    for changes, needle in (
        ({"max_batch": 4}, "cannot honour max_batch"),
        ({"precision": "float16"}, "precision"),
        ({"block": 0}, "block=0"),
        ({"optimize": False}, "optimize=False"),
    ):
        with pytest.raises(OptionError, match=needle):
            open_explainer(fused, **changes)
    with pytest.raises(OptionError, match="max_batch and precision"):
        fuse(path, max_batch=4)


@pytest.mark.parametrize("family", ["timm-deit-tiny-distilled", "huggingface"])
def test_fused_preset_equals_the_multi_tap_explainer(family, exported, tmp_path):
    """reciprocam+ in one graph: its four taps' copies, their min-max maps weighted, summed, normalised and
    raised to gamma inside it, against MultiTapExplainer (which tests/test_taps.py checks against PyTorch)."""
    path, _, fam = exported(family)
    fused = tmp_path / "fused.onnx"
    onnx.save(fuse(path, preset=PLUS), fused)
    onnx.checker.check_model(str(fused), full_check=True)
    ex = open_explainer(fused, preset=PLUS)
    assert isinstance(ex, FusedExplainer) and ex.preset == PLUS
    assert isinstance(open_explainer(fused), FusedExplainer)
    images = random_images(2, fam.input_size, seed=7)
    got = ex.explain(images, all_classes=True)
    want = open_explainer(path, preset=PLUS).explain(images, all_classes=True)
    assert got.targets.tolist() == want.targets.tolist()
    np.testing.assert_allclose(got.scores, want.scores, atol=1e-6, rtol=0)  # softmax, as the explainer's
    np.testing.assert_allclose(got.every, want.every, atol=SALIENCY_TOLERANCE, rtol=0, err_msg=family)
    assert not np.allclose(got.every, open_explainer(path).explain_all(images), atol=1e-2)  # not the paper's
    taps = json.loads({p.key: p.value for p in onnx.load(fused).metadata_props}["reciprocam.preset"])
    blocks = [tap["block"] % ex.info.blocks for tap in PRESETS[PLUS].taps]
    assert [tap["block"] for tap in taps["taps"]] == blocks and taps["gamma"] == PRESETS[PLUS].gamma
    for changes, needle in (
        ({"kernel": "3x3"}, "preset reciprocam\\+ sets kernel itself"),
        ({"max_batch": 2}, "cannot honour max_batch"),
    ):
        with pytest.raises(OptionError, match=needle):
            open_explainer(fused, **changes)
    with pytest.raises(OptionError, match="built with preset reciprocam\\+: re-fuse the model with --preset paper"):
        open_explainer(fused, preset="paper")


def test_fuse_bounds_its_memory_by_default():
    """Without chunk, the copies run in as few Loop steps as fit FUSED_BUDGET_BYTES per image, evened out (the
    demo model: 114 copies fit, so 2 steps of 98 for its 196); a chunk given is kept, and copies that all fit
    run in one step."""
    fused = fuse(DEMO)
    options, info = fused_options(fused)
    most = FUSED_BUDGET_BYTES // bytes_per_copy(info)
    assert options.chunk == -(-info.cells // 2) and most < info.cells <= 2 * most
    assert any(node.op_type == "Loop" for node in fused.graph.node)
    assert fused_options(fuse(DEMO, chunk=50))[0].chunk == 50
    assert default_chunk(info, 8) is None
