"""Graphs as production ships them, each built the way users build it, explained and checked.

The README's "Supported graphs" table names these tests. float32 graphs are
compared with the PyTorch reference (tests/torch_reference.py); reduced
precision graphs with masked copies run one at a time through the model's own
plain cut.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
import torch

from export.export_vit import export_onnx
from reciprocam_onnx import Explainer, open_explainer
from reciprocam_onnx.cli import main
from reciprocam_onnx.errors import GraphStructureError, ImageError
from reciprocam_onnx.io.images import IMAGENET_MEAN, IMAGENET_STD
from tests.conftest import random_images
from tests.reference_check import assert_matches_reference
from tests.torch_reference import as_float64, reference_explain
from tests.zoo import FAMILIES, QK_GAIN, Family, _timm, make_model

IMAGES = random_images(2, (224, 224), seed=3)
EXAMPLE_IMAGE = Path(__file__).resolve().parents[1] / "examples" / "images" / "arrow.png"


def assert_explains_like_torch(
    path, model, fam, block: int = -2, tolerance: float = 1e-4, per_copy: bool = False, **options
) -> Explainer:
    """Explainer(path) at ``block`` against the PyTorch reference on two random images (``per_copy``: the
    reference runs its copies one at a time)."""
    ex = Explainer(path, block=block, **options)
    images = IMAGES if fam.input_size == (224, 224) else random_images(2, fam.input_size, seed=3)
    refs = [
        reference_explain(m, *fam.blocks(m)[block], images, ex.info.grid, ex.info.prefix_tokens, per_copy=per_copy)
        for m in (as_float64(model), model)
    ]
    compared = assert_matches_reference(ex, images, *refs, f"{path.name} block {block}", tolerance)
    assert compared.any(), "no target map was well-posed enough to compare"
    return ex


def assert_fused_matches(path, ex: Explainer, images: np.ndarray, tmp_path, atol: float = 1e-4, **options) -> None:
    """The fused graph of ``path`` gives the Explainer's maps for every class."""
    from reciprocam_onnx import fuse, open_explainer

    fused = tmp_path / "fused.onnx"
    onnx.save(fuse(path, block=ex.options.block, **options), fused)
    np.testing.assert_allclose(open_explainer(fused).explain_all(images), ex.explain_all(images), atol=atol)


@pytest.mark.parametrize("attention, dynamic", [("sdpa", True), ("eager", False)])
def test_huggingface_dynamo_export(attention, dynamic, tmp_path):
    """transformers 5.x ViT through torch.onnx.export(dynamo=True), torch's default exporter: shape reads
    of the image input and the all-zero attention mask inside the suffix are resolved."""
    fam = FAMILIES["huggingface"]
    model = make_model(fam)
    model.model.config._attn_implementation = attention
    path = export_onnx(model, tmp_path / "hf.onnx", fam.input_size, 18, dynamic, dynamo=True)
    ex = assert_explains_like_torch(path, model, fam)
    assert all(r.applied for r in ex.info.rewrites), ex.info.rewrites_line()


def plain_cut_logits(path, images: np.ndarray, block: int = -2, open_batch: bool = False) -> np.ndarray:
    """Logits [B, 1 + cells, C] of each image and each of its 3x3 masked copies, one copy per run through
    the model's own graph cut at the block (no rewrites), masks from tests/torch_reference.py. The cut's batch
    axis is 1; ``open_batch`` opens it, as the model's own is: ONNX Runtime fuses a MatMul and its bias Add
    into one Gemm only where shapes are fixed, and in float16 that Gemm rounds once where the model rounds
    twice."""
    import onnx
    import onnx_graphsurgeon as gs
    import onnxruntime as ort

    from reciprocam_onnx.analysis.facts import analyse
    from reciprocam_onnx.contract import NORMED, RESIDUAL
    from reciprocam_onnx.graph.export import export_like
    from reciprocam_onnx.graph.unfuse import unfuse_normalisations
    from reciprocam_onnx.split.cut import prefix_and_suffix
    from tests.torch_reference import reference_weights

    model = onnx.load(path)
    graph = gs.import_onnx(model)
    if unfuse_normalisations(graph):
        model = export_like(graph, model)
    facts = analyse(model, graph)
    parts = [export_like(g, model) for g in prefix_and_suffix(graph, facts, block % len(facts.blocks))]
    if open_batch and facts.input.static_batch is None:
        for part in parts:
            del part.graph.value_info[:]
            for value in (*part.graph.input, *part.graph.output):
                if value.type.tensor_type.shape.dim:
                    value.type.tensor_type.shape.dim[0].dim_param = "batch"
    prefix, suffix = (
        ort.InferenceSession(part.SerializeToString(), providers=["CPUExecutionProvider"]) for part in parts
    )
    weights = reference_weights(facts.grid, facts.prefix_tokens, "3x3", True)
    out = []
    for image in images:
        r, f = prefix.run([RESIDUAL, NORMED], {facts.input.name: image[None].astype(facts.input.dtype)})
        copies = [f] + [(f.astype(np.float64) * w[None, :, None]).astype(f.dtype) for w in weights]
        out.append([suffix.run(None, {RESIDUAL: r, NORMED: masked})[0][0] for masked in copies])
    return np.asarray(out, np.float32)


@pytest.fixture(scope="module")
def deit_float32(exported):
    return exported("timm-deit-tiny")


@pytest.mark.parametrize(
    "keep_io_types, kept_in_float32",
    [(True, None), (False, None), (True, ["LayerNormalization", "Softmax"])],
    ids=["float32-io", "float16-io", "layernorm-softmax-in-float32"],
)
def test_float16_graph(keep_io_types, kept_in_float32, deit_float32, tmp_path):
    """onnxruntime.transformers.float16 conversions: the cut keeps float16, float32 images are cast to the
    model's input type, scores come back float32. Masked copies score as they do one at a time through the
    float16 model's own plain cut, within 2e-3 of the logit scale, and the maps follow the float32 model's.
    LayerNorms and Softmax kept in float32 (wrapped in Casts by the converter) are found and cut as the
    model's own."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    path32, _, fam = deit_float32
    path = tmp_path / "half.onnx"
    half = convert_float_to_float16(onnx.load(path32), keep_io_types=keep_io_types, op_block_list=kept_in_float32)
    onnx.save(half, path)
    images = random_images(2, fam.input_size, seed=3)
    ex = Explainer(path, score="logits")
    assert ex.info.dtype == "float16" and ex.info.input_dtype == ("float32" if keep_io_types else "float16")
    unmasked, cells = ex.cell_scores(images)
    assert unmasked.dtype == cells.dtype == np.float32
    expected = plain_cut_logits(path, images, open_batch=True)
    scale = float(np.abs(expected).max())
    np.testing.assert_allclose(unmasked, expected[:, 0], atol=2e-3 * scale, rtol=0)
    np.testing.assert_allclose(cells, expected[:, 1:], atol=2e-3 * scale, rtol=0)
    full = Explainer(path32).explain(images)
    half = ex.with_options(score="softmax").explain(images.astype(np.float16))
    np.testing.assert_array_equal(half.targets, full.targets)
    for got, want in zip(half.maps, full.maps):
        assert np.corrcoef(got.ravel(), want.ravel())[0, 1] >= 0.98
    if not keep_io_types:  # the fused graph computes its copies in float16 too (here in ONNX Loop chunks)
        assert_fused_matches(path, ex.with_options(score="softmax"), images, tmp_path, atol=2e-2, chunk=50)
    if keep_io_types and kept_in_float32 is None:  # a masked residual: as slots, and as plain float16 rows
        masked = ex.with_options(residual="masked")
        assert "slots-through yes" in masked.info.rewrites_line()
        plain = Explainer(path, score="logits", residual="masked", optimize=False)
        np.testing.assert_allclose(masked.cell_scores(images)[1], plain.cell_scores(images)[1], atol=1e-2 * scale)


def test_reduced_precision_that_cannot_resolve_a_map_is_flagged():
    """A map is unresolved when its cells take few distinct scores (quantized outputs) or, in float16, spread
    over less than one rounding step at their magnitude."""
    from reciprocam_onnx.engine.scores import unresolved

    k = np.arange(16)
    logits = np.zeros((3, 17, 2), np.float32)
    logits[:, 0, 0] = 1.0  # class 0 predicted
    logits[0, 1:, 0] = 10.0 + 2.0 * (k % 2)  # two values: quantized
    logits[1, 1:, 0] = 1.0 + k * 1e-5  # 16 values within one float16 step (2**-10 at 1.0)
    logits[2, 1:, 0] = 10.0 + k * 0.1
    assert unresolved(logits, "float16").tolist() == [True, True, False]
    assert unresolved(logits, "float32").tolist() == [True, False, False]


class RawPixels(torch.nn.Module):
    """A classifier taking uint8 [B, H, W, 3] pixels and normalising them inside the graph."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.inner((pixels.permute(0, 3, 1, 2).float() - self.mean) / self.std)


@pytest.mark.filterwarnings("ignore")
def test_uint8_nhwc_input_normalised_inside_the_graph(tmp_path, capsys):
    """A uint8 NHWC model: preprocess and the CLI give it raw pixels; its maps are the float model's maps on
    the same pixels normalised (PyTorch reference)."""
    import onnx

    from reciprocam_onnx import preprocess

    fam = FAMILIES["timm-deit-tiny"]
    model = make_model(fam)
    path = tmp_path / "uint8.onnx"
    pixels = torch.zeros(1, *fam.input_size, 3, dtype=torch.uint8)
    torch.onnx.export(RawPixels(model).eval(), pixels, path, input_names=["pixels"], dynamo=False, opset_version=17)
    assert onnx.load(path).graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    ex = Explainer(path)
    assert (ex.info.input_dtype, ex.info.input_layout) == ("uint8", "NHWC")
    picture = np.random.default_rng(1).integers(0, 256, (300, 260, 3), dtype=np.uint8)
    raw, fitted = preprocess(picture, fam.input_size, layout="NHWC", dtype="uint8")
    assert raw.dtype == np.uint8 and raw.shape == (*fam.input_size, 3)
    normalised, _ = preprocess(picture, fam.input_size)
    out = ex.explain(raw)
    refs = [
        reference_explain(m, *fam.blocks(m)[-2], normalised[None], ex.info.grid, ex.info.prefix_tokens)
        for m in (as_float64(model), model)
    ]
    assert_matches_reference(ex, raw[None], *refs, "uint8 NHWC")
    with pytest.raises(ImageError, match="uint8"):
        ex.explain(normalised.transpose(1, 2, 0))
    image = tmp_path / "picture.png"
    cv2.imwrite(str(image), picture[:, :, ::-1])
    assert main(["explain", str(path), str(image), "-o", str(tmp_path / "out")]) == 0
    saved = np.load(tmp_path / "out" / "picture.map.npy")
    np.testing.assert_allclose(saved, out.maps[0], atol=1e-6)
    assert_fused_matches(path, ex, raw[None], tmp_path)


def _quantize(path, tmp_path, kind: str):
    """The model quantized with onnxruntime.quantization as its docs show: pre-processed, then static QDQ
    (calibrated on random images) or dynamic."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Images(CalibrationDataReader):
        def __init__(self):
            self.batches = iter({"input": random_images(1, (224, 224), seed=s)} for s in range(4))

        def get_next(self):
            return next(self.batches, None)

    prepared, out = tmp_path / "prepared.onnx", tmp_path / f"{kind}.onnx"
    quant_pre_process(str(path), str(prepared))
    if kind == "qdq":
        quantize_static(str(prepared), str(out), Images(), quant_format=QuantFormat.QDQ)
    else:
        quantize_dynamic(str(prepared), str(out))
    return out


@pytest.mark.parametrize("kind", ["qdq", "dynamic"])
def test_int8_graph(kind, deit_float32, tmp_path):
    """Static QDQ (blocks found through QuantizeLinear/DequantizeLinear) and dynamic quantization (one copy
    per run, one image per prefix run: the model's run-time scales are per copy): every copy scores exactly
    as it does alone through the quantized model's own cut, for the Explainer and the fused graph."""

    path = _quantize(deit_float32[0], tmp_path, kind)
    images = random_images(2, (224, 224), seed=3)
    ex = Explainer(path, score="logits")
    assert ex.info.copies_per_run == (1 if kind == "dynamic" else None)
    unmasked, cells = ex.cell_scores(images)
    expected = plain_cut_logits(path, images)
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(unmasked, expected[:, 0], atol=1e-4 * scale, rtol=0)
    np.testing.assert_allclose(cells, expected[:, 1:], atol=1e-4 * scale, rtol=0)
    assert_fused_matches(path, ex, images, tmp_path, score="logits")
    if kind == "dynamic":  # reciprocam+'s shared prefix (its deepest cut's) quantizes too: every tap runs it per image
        plus = open_explainer(path, preset="reciprocam+")
        assert {tap.info.static_batch for tap in plus.taps} == {1}


@pytest.mark.parametrize("half", [False, True], ids=["float32", "float16"])
def test_onnxruntime_optimizer_output(half, tmp_path):
    """onnxruntime.transformers.optimizer (model type vit): SkipLayerNormalization and BiasGelu. float32 maps
    match PyTorch; its float16 conversion scores as the plain cut does, within float16 noise."""
    from onnxruntime.transformers import optimizer

    fam = FAMILIES["huggingface"]
    model = make_model(fam)
    path = export_onnx(model, tmp_path / "hf.onnx", fam.input_size)
    optimized = optimizer.optimize_model(str(path), model_type="vit", num_heads=4, hidden_size=64)
    ops = {node.op_type for node in optimized.model.graph.node}
    assert {"SkipLayerNormalization", "BiasGelu"} <= ops
    if half:
        optimized.convert_float_to_float16(keep_io_types=True)
    path = tmp_path / "optimized.onnx"
    optimized.save_model_to_file(str(path))
    if not half:
        ex = assert_explains_like_torch(path, model, fam)
        assert all(r.applied for r in ex.info.rewrites), ex.info.rewrites_line()
        return
    images = random_images(2, fam.input_size, seed=3)
    _, cells = Explainer(path, score="logits").cell_scores(images)
    expected = plain_cut_logits(path, images, open_batch=True)
    # ONNX Runtime's CPU computes float16 ops in float32 and rounds to float16 where a tensor is kept: the
    # plain cut keeps the tensors its Shape reads, which the split resolves to constants (2.2e-3; both lie
    # 1.1e-2 from the float32 model's scores, docs/design.md)
    np.testing.assert_allclose(cells, expected[:, 1:], atol=3e-3 * float(np.abs(expected).max()), rtol=0)


# optimum-onnx pins transformers 4.x: it runs from its own folder, ahead of this environment's transformers 5.
OPTIMUM = [
    "optimum-onnx==0.1.0",
    "optimum==2.1.0",
    "transformers==4.57.6",
    "huggingface_hub<1.0",
    "tokenizers>=0.22,<=0.23.0",
    "requests",
    "urllib3",
    "idna",
    "charset_normalizer",
    "certifi",
]


def test_optimum_export(tmp_path):
    """`optimum-cli export onnx` of a Hugging Face ViT: an input of open size, whose size, mean, std and
    class names come from the config files optimum writes beside the model; maps match PyTorch."""
    import subprocess
    import sys

    from transformers import ViTImageProcessor

    fam = FAMILIES["huggingface"]
    model = make_model(fam)
    model.model.config.id2label = {i: f"class {i}" for i in range(10)}
    model.model.save_pretrained(tmp_path / "hf")
    ViTImageProcessor(size={"height": 224, "width": 224}).save_pretrained(tmp_path / "hf")
    packages = tmp_path / "optimum"
    pip = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "-q",
        "--no-cache-dir",
        "--no-deps",
        "--target",
        str(packages),
        *OPTIMUM,
    ]
    subprocess.run(pip, check=True, capture_output=True)
    export = [sys.executable, "-m", "optimum.exporters.onnx", "--model", str(tmp_path / "hf")]
    export += ["--task", "image-classification", str(tmp_path / "onnx")]
    subprocess.run(export, check=True, capture_output=True, env={**os.environ, "PYTHONPATH": str(packages)})
    path = tmp_path / "onnx" / "model.onnx"
    dims = [d.dim_param or d.dim_value for d in onnx.load(path).graph.input[0].type.tensor_type.shape.dim]
    assert all(isinstance(d, str) for d in dims), dims  # optimum leaves every input dimension open
    ex = assert_explains_like_torch(path, model, fam)
    assert ex.info.input_shape == (3, 224, 224) and ex.info.model.label(3) == "class 3"
    assert ex.info.model.mean == (0.5, 0.5, 0.5)
    bare = tmp_path / "bare.onnx"  # the same graph without its config files
    bare.write_bytes(path.read_bytes())
    with pytest.raises(GraphStructureError, match=r"--input-size H W"):
        Explainer(bare)
    assert main(["split", str(bare), "--input-size", "224", "224", "-o", str(tmp_path / "split")]) == 0
    np.testing.assert_allclose(Explainer(tmp_path / "split").explain_all(IMAGES), ex.explain_all(IMAGES), atol=1e-6)


class DenseHead(torch.nn.Module):
    """A ViT backbone with a small convolutional decoder: a [B, 1, H, W] map, not class scores."""

    def __init__(self):
        super().__init__()
        import timm

        self.vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=3, num_classes=0)
        self.decoder = torch.nn.Sequential(
            torch.nn.Conv2d(192, 16, 3, padding=1),
            torch.nn.BatchNorm2d(16),
            torch.nn.LeakyReLU(),
            torch.nn.ConvTranspose2d(16, 8, 2, stride=2),
            torch.nn.Conv2d(8, 1, 1),
            torch.nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.vit.forward_features(x)[:, 1:]
        grid = tokens.transpose(1, 2).unflatten(2, (14, 14))
        return torch.nn.functional.interpolate(self.decoder(grid), size=x.shape[2:], mode="bilinear")


@pytest.mark.filterwarnings("ignore")
def test_dense_head_is_split_and_refused_by_explain(tmp_path, capsys):
    """`reciprocam split` cuts a model whose output is a map (prefix + suffix reproduce it, for a batch of
    images); `explain` refuses it in one line."""
    import onnxruntime as ort

    from reciprocam_onnx.contract import NORMED, RESIDUAL, load_split

    torch.manual_seed(0)
    path = export_onnx(DenseHead().eval(), tmp_path / "dense.onnx")
    assert main(["split", str(path), "--no-optimize", "-o", str(tmp_path / "split")]) == 0
    split = load_split(tmp_path / "split")
    prefix, suffix, model = (
        ort.InferenceSession(g.SerializeToString(), providers=["CPUExecutionProvider"])
        for g in (split.prefix, split.suffix, onnx.load(path))
    )
    expected = model.run(None, {"input": IMAGES})[0]
    assert expected.shape == (2, 1, 224, 224)
    tapped = dict(zip((RESIDUAL, NORMED), prefix.run([RESIDUAL, NORMED], {"input": IMAGES})))
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(suffix.run(None, tapped)[0], expected, atol=1e-4 * scale, rtol=0)
    capsys.readouterr()
    assert main(["explain", str(path), str(EXAMPLE_IMAGE), "-o", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not class scores [B, C]" in err[0], err


def _cait() -> torch.nn.Module:
    """A small CaiT made sensitive beyond the zoo's two tapped blocks: layer scales of 1 (timm's 1e-5 makes
    every branch vanish) and class-attention blocks with unit-gain projections, queries and keys at QK_GAIN."""
    model = _timm("cait_xxs24_224", depth=3)()
    with torch.no_grad():
        for block in [*model.blocks[-2:], *model.blocks_token_only]:
            block.gamma_1.fill_(1.0)
            block.gamma_2.fill_(1.0)
        for name, module in model.blocks_token_only.named_modules():
            if isinstance(module, torch.nn.Linear):
                torch.nn.init.normal_(module.weight, std=1.0 / module.in_features**0.5)
                if name.endswith(("attn.q", "attn.k")):
                    module.weight *= QK_GAIN
    return model


CAIT = Family(
    "timm-cait",
    _cait,
    lambda m: [(b, b.norm1) for b in m.blocks],  # the self-attention stage; class attention is in the suffix
    lambda m: [m.head],
)


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("block", [-2, -1])
def test_cait_taps_the_self_attention_stage(block, tmp_path):
    """CaiT: the blocks are the self-attention stage; its class-attention stage (which concatenates the class
    token, expanded to a batch the export baked in) runs in the suffix for any batch of copies. Its maps
    carry ~1e-4 of float32 noise (PyTorch float32 against float64), so they are compared at 1e-3."""
    model = make_model(CAIT)
    path = export_onnx(model, tmp_path / "cait.onnx", CAIT.input_size, 17, dynamic_batch=block == -1)
    ex = assert_explains_like_torch(path, model, CAIT, block, tolerance=1e-3)
    assert ex.info.blocks == 3 and ex.info.prefix_tokens == 0


def _hf_swin() -> torch.nn.Module:
    from transformers import SwinConfig, SwinForImageClassification

    from export.export_vit import LogitsOnly

    config = SwinConfig(embed_dim=32, depths=[1, 1, 1, 2], num_heads=[1, 2, 2, 4], window_size=7, num_labels=10)
    return LogitsOnly(SwinForImageClassification(config))


SWINS = {
    "timm": Family(
        "timm-swin",
        _timm("swin_tiny_patch4_window7_224", depths=(1, 1, 1, 2), embed_dim=32, num_heads=(1, 2, 2, 4)),
        lambda m: [(b, b.norm1) for layer in m.layers for b in layer.blocks],
        lambda m: [m.head.fc],
    ),
    "huggingface": Family(
        "hf-swin",
        _hf_swin,
        lambda m: [(b, b.layernorm_before) for layer in m.model.swin.encoder.layers for b in layer.blocks],
        lambda m: [m.model.classifier],
    ),
}


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("source", sorted(SWINS))
def test_swin_taps_its_last_stage(source, tmp_path):
    """Swin (timm's [B, h, w, C] grid and Hugging Face's [B, L, C] tokens; windowed, shifted-window attention,
    mean pooling): the blocks are its last stage's, whose 7x7 token grid is the map's."""
    fam = SWINS[source]
    model = make_model(fam)
    path = export_onnx(model, tmp_path / "swin.onnx", fam.input_size)
    for block in (-2, -1):
        ex = assert_explains_like_torch(path, model, fam, block, per_copy=True)  # Swin reads B off its input
        assert (ex.info.blocks, ex.info.grid, ex.info.prefix_tokens) == (2, (7, 7), 0)
    assert_fused_matches(path, ex, IMAGES, tmp_path)
