"""Run a fused explain graph (engine/fused_graph.py) with the Explainer's interface."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx

from ..contract import FUSED_OPTIONS_KEY, FUSED_OUTPUTS, is_split_folder
from ..errors import OptionError, onnxruntime_errors
from ..graph.model import file_metadata, load_model
from ..graph.runtime import make_session
from ..options import FUSED, PRESETS, Options, preset_taps, resolve
from ..split.pipeline import resolve_block
from .base import Explanation, SaliencyExplainer, Targets, check_images, choose_targets
from .explainer import Explainer
from .fused_graph import fused_options, fused_preset, fused_score
from .scores import check_finite, to_scores
from .taps import MultiTapExplainer

log = logging.getLogger(__name__)


class FusedExplainer:
    """Explanations from one run of a fused graph: logits and every class's map.

    ``preset``: the preset whose taps the graph combines (None: one tap); ``options`` and ``info`` are its
    first tap's, and a preset's scores are softmax, as MultiTapExplainer's are.
    """

    def __init__(self, model: onnx.ModelProto, providers: Sequence[str] | None = None):
        found = fused_options(model)
        if found is None:
            raise OptionError("not a fused graph: build one with `reciprocam fuse`")
        self.options, self.info = found
        self.preset = fused_preset(model)
        self._score = fused_score(model)
        self._session = make_session(model, providers)

    def _run(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        images = check_images(images, self.info.image)
        with onnxruntime_errors("running the fused graph"):
            logits, saliency = self._session.run(list(FUSED_OUTPUTS[:2]), {self.info.input_name: images})
        check_finite(logits)
        return to_scores(logits, self._score), saliency

    def explain(self, images: np.ndarray, targets: Targets = None, *, all_classes: bool = False) -> Explanation:
        """Maps [B, h, w] for the given targets, or for each image's predicted class; with ``all_classes``,
        every class's map too (``Explanation.every``)."""
        scores, saliency = self._run(images)
        chosen = choose_targets(targets, scores, self.info.classes)
        every = saliency if all_classes else None
        return Explanation(saliency[np.arange(len(chosen)), chosen], chosen, scores, every)

    def explain_all(self, images: np.ndarray) -> np.ndarray:
        """Maps for every class: float32 [B, C, h, w]."""
        return self._run(images)[1]

    def predict(self, images: np.ndarray) -> np.ndarray:
        """The model's scores [B, C] (softmax or logits, as the graph was built; softmax for a preset)."""
        return self._run(images)[0]


def open_explainer(
    model: str | os.PathLike | onnx.ModelProto,
    options: Options | None = None,
    *,
    providers: Sequence[str] | None = None,
    preset: str | None = None,
    **changes: Any,
) -> SaliencyExplainer:
    """A FusedExplainer for a fused graph (asked options must agree with it), else an Explainer; with
    ``preset`` (options.PRESETS, e.g. "reciprocam+"), the preset's taps over the options given."""
    if preset is not None:
        return _preset_explainer(model, preset, options, providers, changes)
    if not isinstance(model, onnx.ModelProto) and is_split_folder(model):
        return Explainer(model, options, providers=providers, **changes)
    proto = _fused_graph(model)
    if proto is None:
        return Explainer(model, options, providers=providers, **changes)
    fused = FusedExplainer(proto, providers)
    asked = resolve(options, **changes)
    explicit = set(changes) | set(asked.changed() if options is not None else {})
    _check_agrees(fused, asked, explicit)
    return fused


def _preset_explainer(
    model: str | os.PathLike | onnx.ModelProto,
    preset: str,
    options: Options | None,
    providers: Sequence[str] | None,
    changes: dict[str, Any],
) -> SaliencyExplainer:
    """An Explainer for a one-tap preset, a MultiTapExplainer for more; the model itself only."""
    asked = resolve(options, **changes)
    explicit = set(changes) | set(asked.changed() if options is not None else {})
    taps = preset_taps(preset, asked, explicit)
    split_folder = not isinstance(model, onnx.ModelProto) and is_split_folder(model)
    if split_folder and len(taps) > 1:
        raise OptionError(f"preset {preset} taps {len(taps)} blocks: give the model file, not a split folder")
    proto = None if split_folder else _fused_graph(model)
    if proto is not None:
        fused = FusedExplainer(proto, providers)
        if fused.preset != (preset if PRESETS[preset].combines else None):
            built = f"with preset {fused.preset}" if fused.preset else "with one tap"
            raise OptionError(f"this fused graph was built {built}: re-fuse the model with --preset {preset}")
        _check_agrees(fused, asked, explicit)
        return fused
    chosen = PRESETS[preset]
    if not chosen.combines:
        return Explainer(model, taps[0], providers=providers)
    return MultiTapExplainer(model, taps, weights=chosen.weights, gamma=chosen.gamma, providers=providers)


def _fused_graph(model: str | os.PathLike | onnx.ModelProto) -> onnx.ModelProto | None:
    """``model`` loaded if it is a fused graph, else None; a file whose metadata says it is none is not loaded
    here (a cached split of it may be all the Explainer reads)."""
    if not isinstance(model, onnx.ModelProto):
        props = file_metadata(model)
        if props is not None and FUSED_OPTIONS_KEY not in props:
            return None
    proto = load_model(model)
    return proto if fused_options(proto) is not None else None


def _check_agrees(fused: FusedExplainer, asked: Options, explicit: set[str]) -> None:
    """OptionError unless every option asked for explicitly is one the fused graph was built with."""
    baked, blocks = fused.options, fused.info.blocks
    unbaked = sorted(name for name in explicit if name not in FUSED)
    if unbaked:
        raise OptionError(
            f"a fused graph cannot honour {', '.join(unbaked)}: it runs its copies as it was built; "
            "use the model itself (or a split folder) for these options"
        )
    if fused.preset is not None:
        clash = sorted(explicit & {key for tap in PRESETS[fused.preset].taps for key in tap})
        if clash:
            raise OptionError(f"this fused graph's preset {fused.preset} sets {', '.join(clash)} itself")
    differ = {}
    for name in sorted(explicit):
        value, built = getattr(asked, name), getattr(baked, name)
        same = resolve_block(value, blocks) == built % blocks if name == "block" else value == built
        if not same:
            differ[name] = (value, built)
    if differ:
        detail = ", ".join(f"{k}={v!r} (graph: {b!r})" for k, (v, b) in differ.items())
        raise OptionError(f"this fused graph was built with other options: {detail}; re-fuse the model")
