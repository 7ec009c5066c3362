"""Attention rollout from the ONNX graph's attention Softmax outputs, against PyTorch's attention probabilities."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reciprocam_onnx import AttentionRollout
from reciprocam_onnx.cli import main
from reciprocam_onnx.errors import GraphStructureError
from tests.conftest import random_images
from tests.torch_reference import reference_rollout

IMAGES = random_images(2, (224, 224), seed=5)


def timm_attentions(model: torch.nn.Module, images: np.ndarray) -> list[torch.Tensor]:
    """Each block's attention probabilities [B, heads, T, T], read from timm's unfused attention."""
    caught: list[torch.Tensor] = []
    hooks = []
    for block in model.blocks:
        block.attn.fused_attn = False
        hooks.append(block.attn.attn_drop.register_forward_hook(lambda m, args, out: caught.append(args[0])))
    try:
        with torch.no_grad():
            model(torch.from_numpy(images))
    finally:
        for hook in hooks:
            hook.remove()
        for block in model.blocks:
            block.attn.fused_attn = True
    return caught


def huggingface_attentions(model: torch.nn.Module, images: np.ndarray) -> list[torch.Tensor]:
    """The attentions a Hugging Face ViT returns with output_attentions (eager attention)."""
    vit = model.model
    before, vit.config._attn_implementation = vit.config._attn_implementation, "eager"
    try:
        with torch.no_grad():
            return list(vit(pixel_values=torch.from_numpy(images), output_attentions=True).attentions)
    finally:
        vit.config._attn_implementation = before


@pytest.mark.parametrize(
    "family, attentions",
    [
        ("timm-deit-tiny", timm_attentions),
        ("timm-no-cls-avgpool", timm_attentions),  # no class token: the mean row
        ("huggingface", huggingface_attentions),
    ],
)
def test_rollout_matches_pytorch(family, attentions, exported):
    path, model, fam = exported(family)
    rollout = AttentionRollout(path)
    out = rollout.explain(IMAGES)
    expected = reference_rollout(attentions(model, IMAGES), rollout.facts.prefix_tokens, rollout.grid)
    assert out.maps.shape == expected.shape == (2, 14, 14)
    assert np.ptp(expected, axis=(1, 2)).min() == 1.0  # not flat: the comparison means something
    np.testing.assert_allclose(out.maps, expected, atol=1e-4)
    np.testing.assert_array_equal(out.targets, out.scores.argmax(axis=1))
    assert np.array_equal(rollout.explain(IMAGES, targets=[3, 4]).maps, out.maps)  # class-agnostic


@pytest.mark.filterwarnings("ignore")
def test_rollout_refuses_windowed_attention(tmp_path, capsys):
    """Swin's token grid changes between stages and its attention is windowed: rollout says so in one line,
    from the API and from `reciprocam eval`."""
    import timm

    from export.export_vit import export_onnx

    model = timm.create_model(
        "swin_tiny_patch4_window7_224",
        pretrained=False,
        num_classes=10,
        depths=(1, 1, 1, 2),
        embed_dim=32,
        num_heads=(1, 2, 2, 4),
    ).eval()
    path = export_onnx(model, tmp_path / "swin.onnx", (224, 224))
    with pytest.raises(GraphStructureError, match="one token grid through every block"):
        AttentionRollout(path)
    args = ["eval", str(path), "--n", "1", "--methods", "rollout", "-o", str(tmp_path / "report")]
    assert main(args) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "stages" in err[0], err


def test_cli_eval_with_rollout(exported, tmp_path, capsys):
    path, _, _ = exported("timm-deit-tiny")
    args = ["eval", str(path), "--n", "2", "--methods", "rollout,centre", "--auc-steps", "2", "-o", str(tmp_path)]
    assert main(args) == 0
    assert "| rollout |" in capsys.readouterr().out
