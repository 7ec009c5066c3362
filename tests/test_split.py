"""Block finding, splitting and the split folder, on real exports."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import onnxruntime as ort
import pytest

from reciprocam_onnx import Explainer, load_split, save_split, split_model
from reciprocam_onnx.analysis.blocks import find_blocks
from reciprocam_onnx.analysis.facts import analyse
from reciprocam_onnx.contract import RESIDUAL, SLOT_LOG_COUNT, TOKEN_SLOT
from reciprocam_onnx.engine.suffix import engine_suffix
from reciprocam_onnx.errors import BlockIndexError, SplitMismatchError
from reciprocam_onnx.graph.export import export_like
from reciprocam_onnx.split.verify import verify_split
from tests.conftest import random_images

EXPECTED = {  # family: (blocks, prefix tokens, grid, width)
    "timm-vit-tiny": (12, 1, (14, 14), 192),
    "timm-deit-tiny-distilled": (4, 2, (14, 14), 192),
    "timm-no-cls-avgpool": (4, 0, (14, 14), 192),
    "timm-patch32": (3, 1, (7, 7), 384),
    "timm-160x224": (3, 1, (10, 14), 192),
    "torchvision": (4, 1, (14, 14), 128),
    "huggingface": (3, 1, (14, 14), 64),
}


@pytest.mark.parametrize("opset", [14, 17])
@pytest.mark.parametrize("family", sorted(EXPECTED))
def test_facts_are_read_off_the_graph(family, opset, exported):
    path, _, _ = exported(family, opset)
    facts = analyse(onnx.load(str(path)))
    blocks, prefix, grid, width = EXPECTED[family]
    assert (len(facts.blocks), facts.prefix_tokens, facts.grid, facts.width, facts.classes) == (
        blocks,
        prefix,
        grid,
        width,
        10,
    )
    assert facts.tokens == prefix + grid[0] * grid[1]


def test_decomposed_layernorm_with_swapped_operands_is_found(exported, tmp_path):
    """Commutative Mul/Add operands in either order (opset 14 decomposes LayerNorm)."""
    path, _, _ = exported("timm-deit-tiny-distilled", 14)
    model = onnx.load(str(path))
    swapped = 0
    for node in model.graph.node:
        if node.op_type in ("Mul", "Add") and "norm" in node.name:
            node.input[0], node.input[1] = node.input[1], node.input[0]
            swapped += 1
    assert swapped > 8
    assert len(find_blocks(gs.import_onnx(model))) == 4
    verify_split(model, split_model(model, verify=False))


def test_split_folder_roundtrip(exported, tmp_path):
    path, _, fam = exported("timm-patch32", 17, False)
    folder = save_split(split_model(path, block=-1), tmp_path / "split")
    info = json.loads((folder / "split.json").read_text())
    assert (info["block"], info["grid"], info["prefix_tokens"], info["static_batch"]) == (2, [7, 7], 1, 1)
    assert load_split(folder).info == split_model(path, block=-1).info
    images = random_images(2, fam.input_size)
    np.testing.assert_array_equal(Explainer(folder).explain_all(images), Explainer(path, block=-1).explain_all(images))


@pytest.mark.parametrize("family", ["timm-vit-tiny", "torchvision", "huggingface"])
def test_static_batch_suffix_takes_any_batch(family, exported):
    """A batch-1 export's suffix runs 5 different copies at once, R broadcast from batch 1."""
    path, _, fam = exported(family, 17, False)
    split = split_model(path)
    onnx.checker.check_model(split.suffix, full_check=True)
    prefix = ort.InferenceSession(split.prefix.SerializeToString())
    suffix = ort.InferenceSession(split.suffix.SerializeToString())
    names = [RESIDUAL, *split.info.masked_inputs]
    tapped = dict(zip(names, prefix.run(names, {"input": random_images(1, fam.input_size)})))
    scales = np.linspace(0.2, 1.0, 5, dtype=np.float32)[:, None, None]

    def run(scale):
        feeds = {k: v if k == RESIDUAL else v * scale for k, v in tapped.items()}
        if split.info.slots:  # one slot per token
            rows, tokens = len(scale), split.info.tokens
            feeds[SLOT_LOG_COUNT] = np.zeros((rows, tokens), np.float32)
            feeds[TOKEN_SLOT] = np.tile(np.arange(tokens), (rows, 1))
        return suffix.run(None, feeds)[0]

    batched = run(scales)
    single = [run(s[None])[0] for s in scales]
    np.testing.assert_allclose(batched, np.stack(single), atol=1e-5)


def test_block_out_of_range(exported):
    path, _, _ = exported("huggingface")
    with pytest.raises(BlockIndexError, match="out of range.*3 blocks"):
        split_model(path, block=3)
    with pytest.raises(BlockIndexError):
        split_model(path, block=-4)


def test_broken_split_is_detected(exported):
    path, _, _ = exported("timm-patch32")
    split = split_model(path, verify=False)
    graph = gs.import_onnx(split.suffix)
    head = [n for n in graph.nodes if n.op == "Gemm"][-1]
    head.inputs[2] = gs.Constant("shifted_bias", np.asarray(head.inputs[2].values) + 1.0)
    broken = type(split)(split.prefix, export_like(graph, split.suffix), split.info)
    with pytest.raises(SplitMismatchError, match="differs"):
        verify_split(onnx.load(str(path)), broken)


@pytest.mark.parametrize(
    "family, sliced, hoisted",
    [
        ("timm-vit-tiny", True, 1),
        ("timm-deit-tiny-distilled", True, 1),
        ("timm-no-cls-avgpool", False, 1),
        ("huggingface", True, 3),
        ("torchvision", True, 0),
    ],
)
def test_optimised_suffix_structure(family, sliced, hoisted, exported):
    """Head-row slicing where the head reads fixed rows; F projected once per image where it can be;
    the target block's attention on distinct rows everywhere."""
    path, _, _ = exported(family)
    split = split_model(path)
    gathers = [n for n in split.suffix.graph.node if n.name.endswith("_head_rows_gather")]
    assert len(gathers) == (2 if sliced else 0)
    assert sum(name.startswith("normed_projected_") for name in split.info.masked_inputs) == hoisted
    assert split.info.optimized and not split_model(path, optimize=False).info.optimized
    assert split.info.slots  # the target block's attention runs on distinct rows
    onnx.checker.check_model(split.suffix, full_check=True)
    onnx.checker.check_model(engine_suffix(split.suffix, "masked"), full_check=True)
    assert {SLOT_LOG_COUNT, TOKEN_SLOT} <= {i.name for i in split.suffix.graph.input}
