"""Explainer (ONNX Runtime) against the PyTorch reference, for every family and export.

Options follow a pairwise covering of (kernel, cls_token, score, block,
residual, batch size, window), COVERING. Each export runs one of two HALVES of its
rows (each half holds both values of every option). Every family is exported
twice, with both opsets, both batch modes and both halves between the two
(EXPORTS): every pair of option values, every option value with every family,
opset and batch mode, and every pair of family, opset, batch mode and half is tested.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from reciprocam_onnx import Explainer, save_split, split_model
from reciprocam_onnx.errors import OptionError
from tests.conftest import random_images
from tests.reference_check import SCORE_TOLERANCE, TOLERANCE, assert_matches_reference
from tests.torch_reference import as_float64, reference_explain
from tests.zoo import FAMILIES

COVERING = [
    (0, 0, 0, 0, 0, 0, 0),
    (0, 0, 0, 0, 1, 1, 1),
    (0, 1, 1, 1, 0, 0, 0),
    (1, 0, 1, 1, 0, 1, 1),
    (1, 1, 0, 1, 1, 0, 1),
    (1, 1, 1, 0, 1, 1, 0),
]
HALVES = ((0, 3, 5), (1, 2, 4))
KERNEL, CLS, SCORE, BLOCK, RESIDUAL, BATCH, WINDOW = (
    ("3x3", "1x1"),
    (True, False),
    ("softmax", "logits"),
    (-2, -1),
    ("unmasked", "masked"),
    (1, 2),
    ("kept", "removed"),
)


PATTERNS = (  # a family's two exports: (opset, dynamic batch, half) each
    ((14, True, 0), (17, False, 1)),
    ((14, False, 1), (17, True, 0)),
    ((14, True, 1), (17, False, 0)),
    ((14, False, 0), (17, True, 1)),
)
EXPORTS = [
    pytest.param(family, *export, id=f"{family}-{export[0]}-{'dynamic' if export[1] else 'static'}")
    for k, family in enumerate(sorted(FAMILIES))
    for export in PATTERNS[k % len(PATTERNS)]
]


@pytest.mark.parametrize("family, opset, dynamic, half", EXPORTS)
def test_maps_match_torch_reference(family, opset, dynamic, half, exported, tmp_path):
    path, model, fam = exported(family, opset, dynamic)
    splits = {}
    for b in BLOCK:
        split = split_model(path, block=b)  # optimised suffix (rewrites/): the default
        onnx.checker.check_model(split.suffix, full_check=True)
        splits[b] = save_split(split, tmp_path / f"block{b}")
    model64 = as_float64(model)
    compared = []
    for row in (COVERING[i] for i in HALVES[half]):
        kernel, cls_token, score, block, residual, batch, window = (
            options[i] for options, i in zip((KERNEL, CLS, SCORE, BLOCK, RESIDUAL, BATCH, WINDOW), row)
        )
        ex = Explainer(splits[block], kernel=kernel, cls_token=cls_token, score=score, residual=residual, window=window)
        images = random_images(batch, fam.input_size, seed=sum(row))
        refs = [
            reference_explain(
                m,
                *fam.blocks(m)[block],
                images,
                ex.info.grid,
                ex.info.prefix_tokens,
                kernel,
                cls_token,
                score,
                residual,
                window=window,
            )
            for m in (model64, model)
        ]
        where = f"{family} {kernel} {window} cls={cls_token} {score} block={block} {residual} B={batch}"
        compared.extend(assert_matches_reference(ex, images, *refs, where))
    assert np.mean(compared) >= 0.6, f"only {np.mean(compared):.0%} of the target maps were well-posed"
    assert_same_as_unoptimised(path, BLOCK[half], splits[BLOCK[half]], fam)


def assert_same_as_unoptimised(path, block: int, folder, fam) -> None:
    """The rewritten suffix scores every copy as the plain cut does. At block -2 the residual is masked, so
    every block after the cut runs on slots where the head reads prefix rows (rewrites/slots_through.py);
    at block -1 (nothing runs after the target block's attention) the default residual is compared."""
    images = random_images(2, fam.input_size, seed=7)
    residual = "masked" if block == -2 else "unmasked"
    fast_ex = Explainer(folder, residual=residual)
    slow_ex = Explainer(path, block=block, optimize=False, residual=residual)
    for fast, slow in zip(fast_ex.cell_scores(images), slow_ex.cell_scores(images)):
        np.testing.assert_allclose(fast, slow, atol=SCORE_TOLERANCE * max(1.0, float(np.abs(slow).max())))
    masked = fast_ex if residual == "masked" else fast_ex.with_options(residual="masked")
    through = {r.name: r for r in masked.info.rewrites}.get("slots-through")
    if fam.name == "timm-no-cls-avgpool":  # mean pooling reads every row
        assert through is not None and not through.applied, through
    elif block == -2:  # at block -1 nothing runs after the target block's attention
        assert through is not None and through.applied, through


def test_given_targets_are_explained(exported):
    path, model, fam = exported("timm-deit-tiny-distilled")
    ex = Explainer(path)
    images = random_images(2, fam.input_size)
    targets = [3, 7]
    out = ex.explain(images, targets=targets)
    model = as_float64(model)
    block, norm = fam.blocks(model)[-2]
    ref = reference_explain(model, block, norm, images, ex.info.grid, ex.info.prefix_tokens, targets=targets)
    assert out.targets.tolist() == targets
    np.testing.assert_allclose(out.maps, ref.maps, atol=TOLERANCE, rtol=0)


def test_chunk_size_does_not_change_maps(exported):
    path, _, fam = exported("timm-patch32")
    images = random_images(3, fam.input_size)
    whole = Explainer(path, max_batch=1000).explain_all(images)
    for rows in (1, 7, 50):
        np.testing.assert_allclose(Explainer(path, max_batch=rows).explain_all(images), whole, atol=1e-6)


def test_float16_scores_stay_close_to_float32(exported):
    """precision="float16" (meant for CUDA; ONNX Runtime also runs it on CPU) changes raw scores by
    float16 rounding only; a bad precision name is refused."""
    path, _, fam = exported("timm-deit-tiny")
    images = random_images(2, fam.input_size)
    full = Explainer(path, score="logits").cell_scores(images)[1]
    half = Explainer(path, score="logits", precision="float16").cell_scores(images)[1]
    np.testing.assert_allclose(half, full, atol=2e-2 * float(np.abs(full).max()))
    with pytest.raises(OptionError, match="precision"):
        Explainer(path, precision="int4")
