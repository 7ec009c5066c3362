"""The model under evaluation and the saliency methods compared on it."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import onnx

from ..contract import SplitInfo, is_split_folder
from ..engine.base import SaliencyExplainer
from ..engine.explainer import Explainer
from ..engine.fused_explainer import open_explainer
from ..engine.fused_graph import fused_options, model_of
from ..engine.scores import to_scores
from ..errors import OptionError, onnxruntime_errors
from ..graph.model import load_model
from ..graph.runtime import make_session
from ..options import KERNELS, SCORES, Options
from .baselines import centre_maps, random_maps, rise_maps

MapFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
SOFTMAX = SCORES[0]


class EvalModel:
    """The model under evaluation: a softmax score function and ViT-ReciproCAM explainers per kernel,
    all from one split.

    ``options`` set the cut and the copies (block, cls_token, residual, max_batch, ...); the kernel
    is chosen per method and scores are always softmax, as the metrics need. A fused graph is
    evaluated as built: its own maps (its one kernel, its scores), and the model inside it for scores.
    """

    def __init__(
        self,
        model: str | os.PathLike | onnx.ModelProto,
        options: Options | None = None,
        providers: Sequence[str] | None = None,
    ):
        options = options or Options()
        clash = sorted(name for name in ("kernel", "score") if name in options.changed())
        if clash:
            raise OptionError(f"eval sets {', '.join(clash)} itself; pick methods instead")
        self.source = model
        proto = None if not isinstance(model, onnx.ModelProto) and is_split_folder(model) else load_model(model)
        self._explainers: dict[str, SaliencyExplainer]
        if proto is not None and fused_options(proto) is not None:
            fused = open_explainer(proto, options, providers=providers)  # refuses options it was not built with
            self._explainers = {fused.options.kernel: fused}
            proto = model_of(proto)
        else:
            base = Explainer(model, options.updated(score=SOFTMAX), providers=providers)
            self._explainers = {kernel: base.with_options(kernel=kernel) for kernel in KERNELS}
        self._forward = None if proto is None else make_session(proto, providers)

    @property
    def name(self) -> str:
        return self.source.graph.name if isinstance(self.source, onnx.ModelProto) else str(self.source)

    @property
    def info(self) -> SplitInfo:
        return next(iter(self._explainers.values())).info

    @property
    def kernels(self) -> tuple[str, ...]:
        """The kernels it explains with: both, or a fused graph's own."""
        return tuple(self._explainers)

    def explainer(self, kernel: str) -> SaliencyExplainer:
        """The explainer with ``kernel``."""
        if kernel not in self._explainers:
            raise OptionError(
                f"this fused graph explains with kernel {self.kernels[0]} only; evaluate the model itself for {kernel}"
            )
        return self._explainers[kernel]

    def score_fn(self, images: np.ndarray) -> np.ndarray:
        """Softmax scores [N, C] of the unmasked model (one forward pass of the whole batch)."""
        if self._forward is None:  # a split folder: prefix + suffix, image by image
            return self.explainer(self.kernels[0]).predict(images)
        info = self.info
        with onnxruntime_errors("running the model"):
            if info.static_batch is not None:
                logits = np.concatenate([self._forward.run(None, {info.input_name: x[None]})[0] for x in images])
            else:
                logits = self._forward.run(None, {info.input_name: np.ascontiguousarray(images, np.float32)})[0]
        return to_scores(logits, SOFTMAX)


@dataclass(frozen=True)
class MethodSettings:
    """What the methods need besides the model."""

    rise_masks: int = 2000
    seed: int = 0
    batch_size: int = 16


def _reciprocam(kernel: str) -> Callable[[EvalModel, MethodSettings], MapFn]:
    def make(model: EvalModel, settings: MethodSettings) -> MapFn:
        explainer = model.explainer(kernel)
        return lambda images, targets: explainer.explain(images, targets).maps

    return make


def _rise(model: EvalModel, settings: MethodSettings) -> MapFn:
    return lambda images, targets: rise_maps(
        model.score_fn,
        images,
        targets,
        model.info.grid,
        n_masks=settings.rise_masks,
        seed=settings.seed,
        batch_size=settings.batch_size,
    )


def _random(model: EvalModel, settings: MethodSettings) -> MapFn:
    rng = np.random.default_rng(settings.seed)  # fresh maps per call: random maps are not coherent
    return lambda images, targets: random_maps(len(images), model.info.grid, int(rng.integers(2**32)))


def _centre(model: EvalModel, settings: MethodSettings) -> MapFn:
    return lambda images, targets: centre_maps(len(images), model.info.grid)


METHODS: dict[str, Callable[[EvalModel, MethodSettings], MapFn]] = {
    **{f"reciprocam-{kernel}": _reciprocam(kernel) for kernel in KERNELS},
    "rise": _rise,
    "random": _random,
    "centre": _centre,
}


def default_methods(model: EvalModel) -> list[str]:
    """Every method that applies to ``model`` (a fused graph has one kernel)."""
    kernel = {f"reciprocam-{k}": k for k in KERNELS}
    return [name for name in METHODS if name not in kernel or kernel[name] in model.kernels]


def make_methods(model: EvalModel, names: Sequence[str] | None, settings: MethodSettings) -> dict[str, MapFn]:
    """name -> function(images [B,3,H,W], targets [B]) -> maps [B, h, w] in [0, 1]; ``names`` None:
    the default methods."""
    names = default_methods(model) if names is None else names
    unknown = [name for name in names if name not in METHODS]
    if unknown or not names:
        given = ", ".join(unknown) if unknown else "none given"
        raise OptionError(f"unknown methods ({given}); choose from {', '.join(METHODS)}")
    return {name: METHODS[name](model, settings) for name in dict.fromkeys(names)}
