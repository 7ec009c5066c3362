"""The ViT families the tests export to ONNX: random weights at a fixed seed.

Each entry builds a torch model and names its blocks' (block, first LayerNorm)
modules and its classifier heads. ``make_model`` then makes the two blocks that
the tests tap (-2 and -1) sensitive: unit-gain Linear layers and query/key
projections at QK_GAIN, so attention is peaky and masked copies score
differently (the frameworks' 0.02-std init makes every copy score almost the
same, and min-max then magnifies float32 noise); heads get a scale that keeps
softmax in its sensitive range. Earlier blocks keep the framework's init, so the
prefix stays numerically tame.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

SEED = 0
QK_GAIN = 3.0


@dataclass(frozen=True)
class Family:
    name: str
    build: Callable[[], torch.nn.Module]
    blocks: Callable[[torch.nn.Module], list[tuple[torch.nn.Module, torch.nn.Module]]]
    heads: Callable[[torch.nn.Module], list[torch.nn.Linear]]
    input_size: tuple[int, int] = (224, 224)


def make_model(family: Family) -> torch.nn.Module:
    """The family's model in eval mode, seeded and made sensitive as described above."""
    torch.manual_seed(SEED)
    model = family.build()
    with torch.no_grad():
        for block, _ in family.blocks(model)[-2:]:
            _sensitise(block)
        for head in family.heads(model):
            torch.nn.init.normal_(head.weight, std=2.0 / head.in_features**0.5)
    return model.eval()


def _sensitise(block: torch.nn.Module) -> None:
    for name, module in block.named_modules():
        if isinstance(module, torch.nn.Linear):
            torch.nn.init.normal_(module.weight, std=1.0 / module.in_features**0.5)
            if name.endswith(("q_proj", "k_proj", "query", "key")):
                module.weight *= QK_GAIN
            elif name.endswith("qkv"):
                module.weight[: 2 * module.in_features] *= QK_GAIN
        elif isinstance(module, torch.nn.MultiheadAttention):
            torch.nn.init.normal_(module.in_proj_weight, std=1.0 / module.embed_dim**0.5)
            module.in_proj_weight[: 2 * module.embed_dim] *= QK_GAIN


def _timm(name: str, **kwargs) -> Callable[[], torch.nn.Module]:
    def build() -> torch.nn.Module:
        import timm

        return timm.create_model(name, pretrained=False, num_classes=10, **kwargs)

    return build


def _timm_blocks(model):
    return [(b, b.norm1) for b in model.blocks]


def _timm_heads(model):
    return [h for h in (model.head, getattr(model, "head_dist", None)) if h is not None]


def _torchvision() -> torch.nn.Module:
    from torchvision.models import VisionTransformer

    return VisionTransformer(
        image_size=224, patch_size=16, num_layers=4, num_heads=4, hidden_dim=128, mlp_dim=256, num_classes=10
    )


def _huggingface() -> torch.nn.Module:
    from transformers import ViTConfig, ViTForImageClassification

    from export.export_vit import LogitsOnly

    config = ViTConfig(
        hidden_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=128,
        image_size=224,
        patch_size=16,
        num_labels=10,
    )
    return LogitsOnly(ViTForImageClassification(config))


def _hf_blocks(model):
    vit = model.model.vit
    layers = vit.layers if hasattr(vit, "layers") else vit.encoder.layer  # transformers 5 vs 4
    return [(b, b.layernorm_before) for b in layers]


FAMILIES = {
    f.name: f
    for f in [
        Family("timm-vit-tiny", _timm("vit_tiny_patch16_224"), _timm_blocks, _timm_heads),
        Family("timm-deit-tiny", _timm("deit_tiny_patch16_224"), _timm_blocks, _timm_heads),
        Family(
            "timm-deit-tiny-distilled", _timm("deit_tiny_distilled_patch16_224", depth=4), _timm_blocks, _timm_heads
        ),
        Family(
            "timm-no-cls-avgpool",
            _timm("vit_tiny_patch16_224", depth=4, class_token=False, global_pool="avg"),
            _timm_blocks,
            _timm_heads,
        ),
        Family("timm-patch32", _timm("vit_small_patch32_224", depth=3), _timm_blocks, _timm_heads),
        Family(
            "timm-160x224",
            _timm("vit_tiny_patch16_224", depth=3, img_size=(160, 224)),
            _timm_blocks,
            _timm_heads,
            (160, 224),
        ),
        Family(
            "torchvision", _torchvision, lambda m: [(b, b.ln_1) for b in m.encoder.layers], lambda m: [m.heads.head]
        ),
        Family("huggingface", _huggingface, _hf_blocks, lambda m: [m.model.classifier]),
    ]
}
