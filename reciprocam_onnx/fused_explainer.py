"""Run a fused explain graph (see graph/fuse.py) with the Explainer's interface."""
from __future__ import annotations

import logging
import os
from typing import Sequence

import numpy as np
import onnx

from .errors import OptionError
from .explainer import Explainer, Explanation, check_images, choose_targets, to_scores
from .graph.fuse import fused_options
from .graph.model import load_model
from .graph.split import SplitInfo, is_split_folder
from .runtime import make_session

log = logging.getLogger(__name__)


class FusedExplainer:
    """Explanations from one run of a fused graph: logits and every class's map."""

    def __init__(self, model: onnx.ModelProto, providers: Sequence[str] | None = None):
        found = fused_options(model)
        if found is None:
            raise OptionError("not a fused graph: build one with `reciprocam fuse`")
        self.options, self.info = found
        self._session = make_session(model, providers)

    @property
    def score(self) -> str:
        return self.options["score"]

    def _run(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        images = check_images(images, self.info.input_shape)
        logits, saliency = self._session.run(["logits", "saliency"], {self.info.input_name: images})
        return to_scores(logits, self.score), saliency

    def explain(self, images: np.ndarray, targets: Sequence[int] | np.ndarray | None = None) -> Explanation:
        """Maps [B, h, w] for the given targets, or for each image's predicted class."""
        scores, saliency = self._run(images)
        chosen = choose_targets(targets, scores, self.info.classes)
        return Explanation(saliency[np.arange(len(chosen)), chosen], chosen, scores)

    def explain_all(self, images: np.ndarray) -> np.ndarray:
        """Maps for every class: float32 [B, C, h, w]."""
        return self._run(images)[1]


def open_explainer(model: str | os.PathLike | onnx.ModelProto, **options) -> Explainer | FusedExplainer:
    """A FusedExplainer for a fused graph (options must agree with it), else an Explainer."""
    if not isinstance(model, onnx.ModelProto) and is_split_folder(model):
        return Explainer(model, **options)
    proto = load_model(model)
    if fused_options(proto) is None:
        return Explainer(proto if isinstance(model, onnx.ModelProto) else model, **options)
    fused = FusedExplainer(proto, options.get("providers"))
    _check_agrees(fused.options, fused.info, options)
    return fused


def _check_agrees(baked: dict, info: SplitInfo, asked: dict) -> None:
    asked = {k: v for k, v in asked.items() if k in baked and v is not None}
    if "block" in asked:
        asked["block"] = asked["block"] % info.blocks
    differ = {k: (v, baked[k]) for k, v in asked.items() if v != baked[k]}
    if differ:
        detail = ", ".join(f"{k}={v!r} (graph: {b!r})" for k, (v, b) in differ.items())
        raise OptionError(f"this fused graph was built with other options: {detail}; re-fuse the model")
