"""OpenVINO XAI's ViT-ReciproCAM as a baseline, on the same CPU and in the same process.

    explain = make_openvino_explainer("deit_s.onnx", blocks_after_tap=2, precision="f32")
    maps = explain(image)            # image: float32 [1, 3, H, W], already normalised
    explain.target_layer, explain.inference_precision

``openvino-xai`` (which pulls ``openvino``) is *not* a dependency of this project:
everything here imports it lazily, and :func:`openvino_available` says whether
it can be used. Benchmarks should skip the baseline when it is False.

What OpenVINO XAI (1.1) does, read from ``openvino_xai/methods/white_box/recipro_cam.py``
and ``openvino_xai/inserter/model_parser.py``:

* ``target_layer`` is the friendly name of an OpenVINO op: the residual ``Add``
  *between* two transformer blocks, i.e. the input x_b of the target block b.
  Its output must have exactly two consumers: the next residual ``Add`` (skip
  path, masked through input 0 of that Add) and the start of the target
  block's first LayerNorm (``MVN`` for an ONNX ``LayerNormalization``).
* OpenVINO XAI follows the LayerNorm chain (single consumers) down to the
  first ``Add`` (the LayerNorm's bias add) and feeds the masked copies of that
  LayerNorm output to all its consumers, and masked copies of x_b to the skip
  Add: the residual is masked too (our ``Explainer(residual="masked")``).
* Without ``target_layer`` it counts ``Add`` ops with two non-constant 3-D
  inputs from the output backwards and takes the (2k+1)-th (k = blocks after the
  tap, +1 for the Add before the final norm). We name the node explicitly
  instead (:func:`vit_target_layer`), found structurally, not by name: the
  block inputs are the 3-D tensors consumed by one residual ``Add`` plus a
  branch that reaches a ``Softmax`` before rejoining that Add (the attention
  half of a block; the MLP half has no Softmax). ``blocks_after_tap=n`` takes
  the n-th of them from the end, so n blocks run after the tap, like our
  ``Explainer(block=-n)``. The (2k+1)-th-Add rule is kept as a cross-check
  (``explain.auto_target_layer``).
* Mosaic: 3x3 Gaussian (1,2,1 / 2,4,2 / 1,2,1 over 16, cropped at the border,
  not renormalised) with the CLS token kept (``use_gaussian=True``,
  ``cls_token=True``: OpenVINO XAI's defaults, which are the paper's defaults,
  so we keep them). Scores are the raw logits (no softmax). With
  ``embed_scaling=True`` (its default) each class map is min-max scaled to
  0..255 inside the graph and returned as uint8.
* It compiles the model with ``ov.Core().compile_model(model, "CPU")`` and no
  config, so to choose the precision we build the XAI model with
  ``prepare_model=False`` and compile it ourselves with the CPU plugin's
  ``INFERENCE_PRECISION_HINT`` (``"f32"``) or with no hint (``"default"``:
  bf16 on CPUs with AMX / avx512_bf16), then read the precision back from the
  compiled model. bf16 keeps ~3 significant digits of each logit, so when the
  masked copies' logits differ by less than that (random weights, or a tap in
  the last block) the bf16 map can come out flat.
"""

from __future__ import annotations

import functools
import importlib
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

PRECISIONS = ("f32", "default")
SALIENCY_OUTPUT = "saliency_map"  # openvino_xai.common.utils.SALIENCY_MAP_OUTPUT_NAME
_BRANCH_SEARCH_LIMIT = 2000  # ops visited per candidate branch (a ViT block has ~60)


@functools.lru_cache(maxsize=1)
def openvino_available() -> bool:
    """True when ``openvino`` and ``openvino_xai`` import (with ViT-ReciproCAM present)."""
    try:
        importlib.import_module("openvino")
        xai = importlib.import_module("openvino_xai")
        _vit_method(xai)
    except Exception as e:  # ImportError, or a broken install (e.g. a numpy ABI mismatch)
        log.debug("OpenVINO XAI unavailable: %s", e)
        return False
    return True


def openvino_version() -> str:
    """``"openvino <version>, openvino-xai <version>"``, or a note that they are missing."""
    if not openvino_available():
        return "openvino-xai not installed"
    from importlib.metadata import PackageNotFoundError, version

    import openvino as ov

    try:
        xai_version = version("openvino-xai")
    except PackageNotFoundError:
        xai_version = getattr(importlib.import_module("openvino_xai"), "__version__", "unknown")
    return f"openvino {ov.__version__}, openvino-xai {xai_version}"


def _vit_method(xai: Any) -> Any:
    """The ViT-ReciproCAM member of ``xai.Method`` (VITRECIPROCAM in 1.x)."""
    for name in ("VITRECIPROCAM", "VIT_RECIPROCAM", "ViTReciproCAM"):
        if hasattr(xai.Method, name):
            return getattr(xai.Method, name)
    for member in xai.Method:
        if "vit" in str(member.value).lower():
            return member
    raise AttributeError(f"no ViT-ReciproCAM in openvino_xai.Method: {list(xai.Method)}")


# --------------------------------------------------------------------------- target layer


def _consumers(node: Any) -> list:
    return [t.get_node() for t in node.output(0).get_target_inputs()]


def _reaches_softmax(start: Any, stop: Any) -> bool:
    """Whether the ops downstream of ``start`` (not going past ``stop``) include a Softmax."""
    stop_name = stop.get_friendly_name()
    seen, queue = set(), deque([start])
    while queue and len(seen) < _BRANCH_SEARCH_LIMIT:
        node = queue.popleft()
        name = node.get_friendly_name()
        if name in seen or name == stop_name:
            continue
        seen.add(name)
        if node.get_type_name() == "Softmax":
            return True
        for out in node.outputs():
            queue.extend(t.get_node() for t in out.get_target_inputs())
    return False


def block_inputs(model: Any) -> list:
    """The ops whose output is the input x_b of each transformer block, in graph order.

    x_b is a 3-D [B, T, D] tensor with exactly two consumers: the block's
    residual ``Add`` and the first op of its LayerNorm (the branch), where the
    branch reaches a ``Softmax`` (attention) before the Add. Those are exactly
    the nodes OpenVINO XAI's ViTReciproCAM accepts as ``target_layer``.
    """
    found = []
    for op in model.get_ordered_ops():
        if op.get_type_name() in ("Constant", "Parameter", "Result") or len(op.outputs()) != 1:
            continue
        shape = op.get_output_partial_shape(0)
        if shape.rank.is_dynamic or shape.rank.get_length() != 3:
            continue
        consumers = _consumers(op)
        if len(consumers) != 2:
            continue
        adds = [c for c in consumers if c.get_type_name() == "Add"]
        if len(adds) != 1:
            continue
        residual = adds[0]
        branch = next(c for c in consumers if c.get_type_name() != "Add")
        if _reaches_softmax(branch, residual):
            found.append(op)
    return found


def vit_target_layer(model: Any, blocks_after_tap: int = 2) -> str:
    """Friendly name of the OpenVINO op to pass as ``target_layer`` so that
    ``blocks_after_tap`` transformer blocks run after the tap (our ``block=-n``)."""
    inputs = block_inputs(model)
    if not inputs:
        raise ValueError(
            "no transformer block found in the OpenVINO graph "
            "(expected residual Adds around LayerNorm -> attention with a Softmax)"
        )
    if not 1 <= blocks_after_tap <= len(inputs):
        raise ValueError(
            f"blocks_after_tap must be in 1..{len(inputs)} for this model "
            f"({len(inputs)} blocks), not {blocks_after_tap}"
        )
    target = inputs[-blocks_after_tap]
    name = target.get_friendly_name()
    # OpenVINO XAI masks input 0 of the skip Add as the residual: check that it is ours.
    residual = next(c for c in _consumers(target) if c.get_type_name() == "Add")
    skip = residual.input(0).get_source_output().get_node().get_friendly_name()
    if skip != name:
        raise ValueError(
            f"the skip path of {residual.get_friendly_name()} is its input 1, but OpenVINO XAI "
            f"masks input 0 ({skip}) as the residual: it would mask the wrong tensor"
        )
    return name


def ovxai_auto_target_layer(model: Any, blocks_after_tap: int) -> str | None:
    """What OpenVINO XAI would pick by itself (``k=blocks_after_tap``, ``final_norm=True``)."""
    from openvino_xai.inserter.model_parser import IRParserCls, ModelType

    try:
        node = IRParserCls.get_target_node(model, ModelType.TRANSFORMER, None, 2 * blocks_after_tap + 1)
    except Exception:  # its RuntimeError when nothing matches
        return None
    return node.get_friendly_name()


# --------------------------------------------------------------------------- explainer


@dataclass
class OpenVINOExplainer:
    """Callable: ``explain(image)`` -> the predicted class's saliency map, [1, h, w].

    uint8 in 0..255 with ``embed_scaling=True`` (OpenVINO XAI's default), raw
    float32 class scores (logits of the masked copies) otherwise. One call is
    one inference of the XAI model: the original logits and all class maps
    come out of the same run and the predicted class's map is picked.
    """

    explainer: Any  # openvino_xai.Explainer
    compiled_model: Any  # openvino.CompiledModel
    target_layer: str
    auto_target_layer: str | None
    blocks_after_tap: int
    precision: str  # what was asked: "f32" or "default"
    inference_precision: str  # what the compiled model reports, e.g. "f32" / "bf16"
    config: dict = field(default_factory=dict)
    last_target: int | None = None

    def __call__(self, image: np.ndarray) -> np.ndarray:
        image = np.ascontiguousarray(image, dtype=np.float32)
        if image.ndim != 4 or image.shape[0] != 1:
            raise ValueError(f"expected one image [1, 3, H, W], got {image.shape}")
        out = self.explainer.model_forward(image)  # preprocess_fn is the identity
        logits = out[self.compiled_model.output(0)]
        maps = out[SALIENCY_OUTPUT]  # [1, classes, h, w]
        self.last_target = int(np.argmax(logits[0]))
        return np.array(maps[:, self.last_target])  # a copy: the request's buffers are reused

    def all_maps(self, image: np.ndarray) -> np.ndarray:
        """Every class's map from one run, [1, classes, h, w]."""
        return np.array(self.explainer.model_forward(np.ascontiguousarray(image, np.float32))[SALIENCY_OUTPUT])


def _precision_config(precision: str) -> dict:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    return {"INFERENCE_PRECISION_HINT": "f32"} if precision == "f32" else {}


def make_openvino_explainer(
    onnx_path: str,
    blocks_after_tap: int = 2,
    precision: str = "f32",
    *,
    embed_scaling: bool = True,
    use_gaussian: bool = True,
    cls_token: bool = True,
    num_threads: int | None = None,
) -> Callable[[np.ndarray], np.ndarray]:
    """OpenVINO XAI's white-box ViT-ReciproCAM for an ONNX ViT, compiled for the CPU.

    ``precision="f32"`` sets the CPU plugin's ``INFERENCE_PRECISION_HINT`` to f32;
    ``"default"`` leaves OpenVINO's choice (bf16 where the CPU has AMX /
    avx512_bf16). The returned :class:`OpenVINOExplainer` takes one normalised
    float32 image [1, 3, H, W] and returns the predicted class's map [1, h, w];
    ``.target_layer`` / ``.inference_precision`` tell what was used.
    """
    if not openvino_available():
        raise RuntimeError("openvino-xai is not installed (pip install openvino-xai)")
    config = _precision_config(precision)
    if num_threads is not None:
        config["INFERENCE_NUM_THREADS"] = int(num_threads)

    import openvino as ov
    import openvino_xai as xai
    from openvino_xai.explainer import ExplainMode

    core = ov.Core()
    model = core.read_model(str(onnx_path))  # the ONNX frontend, as openvino_xai.Explainer(path) does
    target = vit_target_layer(model, blocks_after_tap)
    auto = ovxai_auto_target_layer(model, blocks_after_tap)
    if auto is not None and auto != target:
        log.warning(
            "OpenVINO XAI's own choice for %d blocks after the tap is %s, ours is %s", blocks_after_tap, auto, target
        )

    explainer = xai.Explainer(
        model=model,
        task=xai.Task.CLASSIFICATION,
        preprocess_fn=lambda x: x,  # images come normalised, NCHW
        explain_mode=ExplainMode.WHITEBOX,
        explain_method=_vit_method(xai),
        target_layer=target,
        embed_scaling=embed_scaling,
        device_name="CPU",
        use_gaussian=use_gaussian,
        cls_token=cls_token,
        prepare_model=False,  # we compile it ourselves, with the precision config
    )
    method = explainer.method
    xai_model = method.prepare_model(load_model=False)
    compiled = core.compile_model(xai_model, "CPU", config)
    method._model_compiled = compiled  # no public setter in openvino-xai 1.1
    hint = compiled.get_property("INFERENCE_PRECISION_HINT")  # an ov.Type
    used = hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint)
    log.info("OpenVINO XAI ViT-ReciproCAM: target %s, %s asked, %s used", target, precision, used)
    return OpenVINOExplainer(explainer, compiled, target, auto, blocks_after_tap, precision, used, config)
