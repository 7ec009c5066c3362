"""The model under evaluation and the saliency methods compared on it."""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import onnx

from ..baselines import centre_maps, random_maps, rise_maps
from ..errors import OptionError
from ..explainer import Explainer, to_scores
from ..graph.model import load_model
from ..graph.split import SplitInfo, is_split_folder
from ..runtime import make_session

MapFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


class EvalModel:
    """The model under evaluation: a softmax score function and ViT-ReciproCAM explainers per kernel.

    ``options`` are Explainer options (block, cls_token, residual, providers, max_batch); the
    kernel is chosen per method and scores are always softmax, as the metrics need.
    """

    def __init__(self, model: str | os.PathLike | onnx.ModelProto, **options):
        clash = {"kernel", "score"} & set(options)
        if clash:
            raise OptionError(f"eval sets {', '.join(sorted(clash))} itself; pick methods instead")
        self.source = model
        self.options = options
        self._explainers: dict[str, Explainer] = {}
        self.explainer("3x3")
        folder = not isinstance(model, onnx.ModelProto) and is_split_folder(model)
        self._forward = None if folder else make_session(load_model(model), options.get("providers"))

    @property
    def name(self) -> str:
        return self.source.graph.name if isinstance(self.source, onnx.ModelProto) else str(self.source)

    @property
    def info(self) -> SplitInfo:
        return self.explainer("3x3").info

    def explainer(self, kernel: str) -> Explainer:
        """The explainer with ``kernel`` (built on first use)."""
        if kernel not in self._explainers:
            self._explainers[kernel] = Explainer(self.source, kernel=kernel, score="softmax", **self.options)
        return self._explainers[kernel]

    def score_fn(self, images: np.ndarray) -> np.ndarray:
        """Softmax scores [N, C] of the unmasked model (one forward pass of the whole batch)."""
        if self._forward is None:  # a split folder: prefix + suffix, image by image
            return self.explainer("3x3").predict(images)
        info = self.info
        if info.static_batch is not None:
            logits = np.concatenate([self._forward.run(None, {info.input_name: x[None]})[0] for x in images])
        else:
            logits = self._forward.run(None, {info.input_name: np.ascontiguousarray(images, np.float32)})[0]
        return to_scores(logits, "softmax")


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
    return lambda images, targets: rise_maps(model.score_fn, images, targets, model.info.grid,
                                             n_masks=settings.rise_masks, seed=settings.seed,
                                             batch_size=settings.batch_size)


def _random(model: EvalModel, settings: MethodSettings) -> MapFn:
    rng = np.random.default_rng(settings.seed)  # fresh maps per call: random maps are not coherent
    return lambda images, targets: random_maps(len(images), model.info.grid, int(rng.integers(2**32)))


def _centre(model: EvalModel, settings: MethodSettings) -> MapFn:
    return lambda images, targets: centre_maps(len(images), model.info.grid)


METHODS: dict[str, Callable[[EvalModel, MethodSettings], MapFn]] = {
    "reciprocam-3x3": _reciprocam("3x3"),
    "reciprocam-1x1": _reciprocam("1x1"),
    "rise": _rise,
    "random": _random,
    "centre": _centre,
}


def make_methods(model: EvalModel, names: Sequence[str], settings: MethodSettings) -> dict[str, MapFn]:
    """name -> function(images [B,3,H,W], targets [B]) -> maps [B, h, w] in [0, 1]."""
    unknown = [name for name in names if name not in METHODS]
    if unknown or not names:
        given = ", ".join(unknown) if unknown else "none given"
        raise OptionError(f"unknown methods ({given}); choose from {', '.join(METHODS)}")
    return {name: METHODS[name](model, settings) for name in dict.fromkeys(names)}
