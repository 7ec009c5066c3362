"""Several taps of one model, one map: the weighted sum of their min-max maps, min-max normalised again
and raised to a power (``gamma``).

A preset such as ``reciprocam+`` (options.PRESETS) taps the model at more than
one block or with more than one copy rule. The model is cut once per block
behind one shared prefix (split/shared.py), analysed and verified once; the
prefix runs once per batch of images, and each tap is an ``Explainer`` of its
cut (its own exact rewrites) reading the shared outputs. Every tap explains
the same targets.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx

from ..contract import SplitInfo
from ..errors import OptionError
from ..graph.runtime import make_session, release_memory
from ..options import SCORES, Options
from ..split.pipeline import resolve_block, split_blocks
from .base import Explanation, Targets, check_images, choose_targets
from .explainer import Explainer, tap_scores
from .scores import minmax_normalise, to_scores


def combine_maps(maps: Sequence[np.ndarray], weights: Sequence[float], gamma: float = 1.0) -> np.ndarray:
    """Taps' min-max maps (same shape each), weighted, summed, min-max normalised and raised to ``gamma``."""
    summed = minmax_normalise(np.tensordot(np.asarray(weights, dtype=np.float32), np.stack(maps), axes=1))
    return summed if gamma == 1.0 else summed**gamma


class MultiTapExplainer:
    """Maps of several taps summed: a preset with more than one (``open_explainer(model, preset="reciprocam+")``).

    ``weights``: one per tap (default all 1); ``gamma``: the power the summed map is raised to (1: none).
    The taps differ in block and copy or read-out options only (one cut per block, one shared prefix).
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
        cuts = {(tap.optimize, tap.input_size, tap.cache) for tap in taps}
        if len(cuts) > 1:
            raise OptionError("the taps of one explainer share a cut: give them one optimize, input_size and cache")
        self.weights, self.gamma = weights, float(gamma)
        first = taps[0]
        asked = [tap.block for tap in taps]
        shared = split_blocks(model, asked, optimize=first.optimize, input_size=first.input_size, cache=first.cache)
        with tempfile.TemporaryDirectory(prefix="reciprocam-") as folder:
            path = shared.cuts[0].prefix_file  # ONNX Runtime holds far less memory reading a file than given bytes
            if path is None:
                path = Path(folder) / "prefix.onnx"
                path.write_bytes(shared.prefix.SerializeToString())
            self._prefix = make_session(path, providers)
        blocks = shared.cuts[0].info.blocks
        opened: dict[int, Explainer] = {}
        tapped: list[Explainer] = []
        for tap in taps:  # a later tap of a block: the first's with_options (its suffix session, if same residual)
            block = resolve_block(tap.block, blocks)
            same = opened.get(block)
            if same is None:
                explainer = Explainer.behind(shared.at(block), self._prefix, tap, providers)
            else:
                explainer = same.with_options(tap)
            opened.setdefault(block, explainer)
            tapped.append(explainer)
        self.taps = tuple(tapped)
        del shared
        release_memory()
        grids = {tap.info.grid for tap in self.taps}
        if len(grids) > 1:
            raise OptionError(f"the taps' token grids differ ({sorted(grids)}): their maps cannot be summed")
        self.info: SplitInfo = self.taps[0].info
        self.options: Options = self.taps[0].options

    def explain(self, images: np.ndarray, targets: Targets = None, *, all_classes: bool = False) -> Explanation:
        """Maps [B, h, w] for the given targets, or for each image's predicted class; with ``all_classes``,
        every class's map too (``Explanation.every``)."""
        scores = tap_scores(self.taps, self._prefix, check_images(images, self.info.image), targets)
        chosen = choose_targets(targets, scores[0][0], self.info.classes)
        taps = [tap.explanation(*found, chosen, all_classes) for tap, found in zip(self.taps, scores)]
        softmax = self._softmax(scores[0][0])
        if not all_classes:
            return Explanation(combine_maps([tap.maps for tap in taps], self.weights, self.gamma), chosen, softmax)
        every = combine_maps([tap.every for tap in taps if tap.every is not None], self.weights, self.gamma)
        return Explanation(every[np.arange(len(every)), chosen], chosen, softmax, every)

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
