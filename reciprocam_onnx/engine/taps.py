"""Several taps of one model, one map: the weighted sum of their min-max maps, min-max normalised again
and raised to a power (``gamma``).

A preset such as ``reciprocam+`` (options.PRESETS) taps the model at more than
one block or with more than one copy rule; each tap is an ``Explainer`` of its
own (its own split and prefix run), and every tap explains the same targets.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import onnx

from ..contract import SplitInfo
from ..errors import OptionError
from ..options import SCORES, Options
from .base import Explanation, Targets
from .explainer import Explainer
from .scores import minmax_normalise, to_scores


def combine_maps(maps: Sequence[np.ndarray], weights: Sequence[float], gamma: float = 1.0) -> np.ndarray:
    """Taps' min-max maps (same shape each), weighted, summed, min-max normalised and raised to ``gamma``."""
    summed = minmax_normalise(np.tensordot(np.asarray(weights, dtype=np.float32), np.stack(maps), axes=1))
    return summed if gamma == 1.0 else summed**gamma


class MultiTapExplainer:
    """Maps of several taps summed: a preset with more than one (``open_explainer(model, preset="reciprocam+")``).

    ``weights``: one per tap (default all 1); ``gamma``: the power the summed map is raised to (1: none).
    ``info`` and ``options`` are the first tap's; ``scores`` are always softmax.
    """

    def __init__(
        self,
        model: str | os.PathLike | onnx.ModelProto,
        taps: Sequence[Options],
        *,
        weights: Sequence[float] | None = None,
        gamma: float = 1.0,
        providers: Sequence[str] | None = None,
    ):
        if not taps:
            raise OptionError("a multi-tap explainer needs at least one tap")
        weights = tuple(weights) if weights is not None else (1.0,) * len(taps)
        if len(weights) != len(taps) or not all(w > 0 for w in weights) or not gamma > 0:
            raise OptionError(f"taps need one positive weight each and a positive gamma, not {weights}, {gamma}")
        self.weights, self.gamma = weights, float(gamma)
        self.taps = tuple(Explainer(model, tap, providers=providers) for tap in taps)
        grids = {tap.info.grid for tap in self.taps}
        if len(grids) > 1:
            raise OptionError(f"the taps' token grids differ ({sorted(grids)}): their maps cannot be summed")
        self.info: SplitInfo = self.taps[0].info
        self.options: Options = self.taps[0].options

    def explain(self, images: np.ndarray, targets: Targets = None, *, all_classes: bool = False) -> Explanation:
        """Maps [B, h, w] for the given targets, or for each image's predicted class; with ``all_classes``,
        every class's map too (``Explanation.every``)."""
        first = self.taps[0].explain(images, targets, all_classes=all_classes)
        taps = [first] + [tap.explain(images, first.targets, all_classes=all_classes) for tap in self.taps[1:]]
        scores = self._softmax(first.scores)
        if not all_classes:
            maps = combine_maps([tap.maps for tap in taps], self.weights, self.gamma)
            return Explanation(maps, first.targets, scores)
        every = combine_maps([tap.every for tap in taps if tap.every is not None], self.weights, self.gamma)
        return Explanation(every[np.arange(len(every)), first.targets], first.targets, scores, every)

    def explain_all(self, images: np.ndarray) -> np.ndarray:
        """Maps for every class: float32 [B, C, h, w]."""
        every = self.explain(images, all_classes=True).every
        assert every is not None
        return every

    def predict(self, images: np.ndarray) -> np.ndarray:
        """The model's softmax scores [B, C]."""
        return self._softmax(self.taps[0].predict(images))

    def _softmax(self, scores: np.ndarray) -> np.ndarray:
        return to_scores(scores, SCORES[0]) if self.taps[0].options.score != SCORES[0] else scores
