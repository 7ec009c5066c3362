"""The model under evaluation and the saliency methods compared on it."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import onnx

from ..contract import SplitInfo, is_split_folder
from ..engine.base import SaliencyExplainer
from ..engine.explainer import Explainer
from ..engine.fused_explainer import open_explainer
from ..engine.fused_graph import fused_options, model_of
from ..engine.rollout import AttentionRollout
from ..engine.scores import to_scores
from ..engine.taps import MultiTapExplainer
from ..errors import OptionError, UserError, onnxruntime_errors
from ..graph.model import load_model
from ..graph.runtime import make_session
from ..options import KERNELS, PRESETS, SCORES, Options, preset_taps
from .baselines import centre_maps, random_maps, rise_maps

MapFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
SOFTMAX = SCORES[0]
PLUS = "reciprocam+"
# ViT-ReciproCAM methods: the paper with each kernel (the copy and read-out options each changes), and the
# reciprocam+ preset (options.PRESETS: its own blocks and copies, the run options given)
RECIPROCAM_METHODS: dict[str, dict[str, Any]] = {f"reciprocam-{kernel}": {"kernel": kernel} for kernel in KERNELS}


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
        clash = sorted(name for name in ("kernel", "window", "score") if name in options.changed())
        if clash:
            raise OptionError(f"eval sets {', '.join(clash)} itself; pick methods instead")
        self.source = model
        proto = None if not isinstance(model, onnx.ModelProto) and is_split_folder(model) else load_model(model)
        self._explainers: dict[str, SaliencyExplainer]
        self._fused = proto is not None and fused_options(proto) is not None
        if proto is not None and self._fused:
            fused = open_explainer(proto, options, providers=providers)  # refuses options it was not built with
            self._explainers = {f"reciprocam-{fused.options.kernel}": fused}
            proto = model_of(proto)
        else:
            base = Explainer(model, options.updated(score=SOFTMAX), providers=providers)
            self._explainers = {name: base.with_options(**changes) for name, changes in RECIPROCAM_METHODS.items()}
        self._forward = None if proto is None else make_session(proto, providers)
        self._proto, self._options, self._providers = proto, options, providers
        self._rollout: AttentionRollout | None = None
        self._plus: MultiTapExplainer | None = None

    def plus(self) -> MultiTapExplainer:
        """The reciprocam+ preset on the same model (built on first use) with the run options given; its taps
        set their own blocks and copies. OptionError for a split folder or a fused graph."""
        if self._proto is None or self._fused:
            what = "a split folder's one cut" if self._proto is None else "a fused graph's own copies"
            raise OptionError(f"{PLUS} taps the model at its own blocks, not {what}: evaluate the model file")
        if self._plus is None:
            taps, preset = preset_taps(PLUS, self._options), PRESETS[PLUS]
            self._plus = MultiTapExplainer(
                self._proto, taps, weights=preset.weights, gamma=preset.gamma, providers=self._providers
            )
        return self._plus

    def rollout(self) -> AttentionRollout:
        """Attention rollout of the same model (built on first use); OptionError for a split folder."""
        if self._proto is None:
            raise OptionError("attention rollout reads the whole model: evaluate the .onnx file, not a split folder")
        if self._rollout is None:
            self._rollout = AttentionRollout(
                self._proto, providers=self._providers, input_size=self.info.input_shape[1:]
            )
        return self._rollout

    def has(self, method: str) -> bool:
        """Does ``method`` apply to this model? (rollout needs one global attention Softmax per block,
        reciprocam+ the model file and three blocks, the others a fused graph's own kernel)"""
        if method not in (PLUS, "rollout"):
            return method not in RECIPROCAM_METHODS or method in self._explainers
        try:
            self.plus() if method == PLUS else self.rollout()
        except UserError:
            return False
        return True

    @property
    def name(self) -> str:
        return self.source.graph.name if isinstance(self.source, onnx.ModelProto) else str(self.source)

    @property
    def options(self) -> Options:
        """The options given: the cut and the copies; each method sets its own kernel and read-out."""
        return self._options

    @property
    def info(self) -> SplitInfo:
        return next(iter(self._explainers.values())).info

    @property
    def reciprocam_methods(self) -> tuple[str, ...]:
        """The paper's ViT-ReciproCAM methods it explains with: both kernels, or a fused graph's own."""
        return tuple(self._explainers)

    def explainer(self, method: str) -> SaliencyExplainer:
        """The explainer of ViT-ReciproCAM method ``method`` (RECIPROCAM_METHODS, or reciprocam+)."""
        if method == PLUS:
            return self.plus()
        if method not in self._explainers:
            raise OptionError(
                f"this fused graph explains as {self.reciprocam_methods[0]} only; evaluate the model itself for "
                f"{method}"
            )
        return self._explainers[method]

    def score_fn(self, images: np.ndarray) -> np.ndarray:
        """Softmax scores [N, C] of the unmasked model (one forward pass of the whole batch)."""
        if self._forward is None:  # a split folder: prefix + suffix, image by image
            return next(iter(self._explainers.values())).predict(images)
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
    rise_coherency_masks: int | None = None  # RISE masks for the coherency pass (None: rise_masks)


@dataclass(frozen=True)
class Method:
    """A method's maps, and what explains its explanation images for coherency (the same
    function, or RISE with ``rise_coherency_masks``)."""

    maps: MapFn
    coherency: MapFn


def _reciprocam(method: str) -> Callable[[EvalModel, MethodSettings], MapFn]:
    def make(model: EvalModel, settings: MethodSettings) -> MapFn:
        explainer = model.explainer(method)
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


def _rollout(model: EvalModel, settings: MethodSettings) -> MapFn:
    rollout = model.rollout()
    return lambda images, targets: rollout.explain(images, targets).maps


def _random(model: EvalModel, settings: MethodSettings) -> MapFn:
    def maps(images: np.ndarray, targets: np.ndarray) -> np.ndarray:
        # drawn from the seed and the call's inputs: other images or targets (coherency, the other class of a
        # pair) get other maps, and a resumed run the maps of an uninterrupted one
        digest = hashlib.blake2b(np.ascontiguousarray(images).tobytes(), digest_size=8)
        digest.update(np.ascontiguousarray(targets, np.int64).tobytes())
        return random_maps(len(images), model.info.grid, [settings.seed, int.from_bytes(digest.digest(), "little")])

    return maps


def _centre(model: EvalModel, settings: MethodSettings) -> MapFn:
    return lambda images, targets: centre_maps(len(images), model.info.grid)


METHODS: dict[str, Callable[[EvalModel, MethodSettings], MapFn]] = {
    **{name: _reciprocam(name) for name in (*RECIPROCAM_METHODS, PLUS)},
    "rise": _rise,
    "rollout": _rollout,
    "random": _random,
    "centre": _centre,
}


def default_methods(model: EvalModel) -> list[str]:
    """Every method that applies to ``model`` (EvalModel.has)."""
    return [name for name in METHODS if model.has(name)]


def make_methods(model: EvalModel, names: Sequence[str] | None, settings: MethodSettings) -> dict[str, Method]:
    """name -> Method, whose functions take (images [B,3,H,W], targets [B]) and return maps
    [B, h, w] in [0, 1]; ``names`` None: the default methods."""
    names = default_methods(model) if names is None else names
    unknown = [name for name in names if name not in METHODS]
    if unknown or not names:
        given = ", ".join(unknown) if unknown else "none given"
        raise OptionError(f"unknown methods ({given}); choose from {', '.join(METHODS)}")
    methods = {}
    for name in dict.fromkeys(names):
        maps = METHODS[name](model, settings)
        coherency = maps
        if name == "rise" and settings.rise_coherency_masks not in (None, settings.rise_masks):
            coherency = _rise(model, replace(settings, rise_masks=settings.rise_coherency_masks))
        methods[name] = Method(maps, coherency)
    return methods
