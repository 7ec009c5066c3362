"""Several taps of one model, one map: the sum of their min-max maps, min-max normalised again.

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


class MultiTapExplainer:
    """Maps of several taps summed: a preset with more than one (``open_explainer(model, preset="reciprocam+")``).

    ``info`` and ``options`` are the first tap's; ``scores`` are always softmax.
    """

    def __init__(
        self,
        model: str | os.PathLike | onnx.ModelProto,
        taps: Sequence[Options],
        *,
        providers: Sequence[str] | None = None,
    ):
        if not taps:
            raise OptionError("a multi-tap explainer needs at least one tap")
        self.taps = tuple(Explainer(model, tap, providers=providers) for tap in taps)
        grids = {tap.info.grid for tap in self.taps}
        if len(grids) > 1:
            raise OptionError(f"the taps' token grids differ ({sorted(grids)}): their maps cannot be summed")
        self.info: SplitInfo = self.taps[0].info
        self.options: Options = self.taps[0].options

    def explain(self, images: np.ndarray, targets: Targets = None) -> Explanation:
        """Maps [B, h, w] for the given targets, or for each image's predicted class."""
        first = self.taps[0].explain(images, targets)
        maps = [first.maps] + [tap.explain(images, first.targets).maps for tap in self.taps[1:]]
        return Explanation(minmax_normalise(np.sum(maps, axis=0)), first.targets, self._softmax(first.scores))

    def explain_all(self, images: np.ndarray) -> np.ndarray:
        """Maps for every class: float32 [B, C, h, w]."""
        return minmax_normalise(np.sum([tap.explain_all(images) for tap in self.taps], axis=0))

    def predict(self, images: np.ndarray) -> np.ndarray:
        """The model's softmax scores [B, C]."""
        return self._softmax(self.taps[0].predict(images))

    def _softmax(self, scores: np.ndarray) -> np.ndarray:
        return to_scores(scores, SCORES[0]) if self.taps[0].options.score != SCORES[0] else scores
