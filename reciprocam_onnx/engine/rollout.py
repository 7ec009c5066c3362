"""Attention rollout (Abnar & Zuidema, 2020) on ONNX Runtime: the usual white-box baseline.

One forward pass with every block's attention probabilities as extra outputs
(the Softmax the block finder sees in each attention sublayer,
analysis/attention.py). Per block, the heads' mean ``A`` is mixed with the
identity for the residual path and its rows renormalised, ``Â = (A + I) / 2``;
the product ``Â_L ... Â_1`` says how much each token of the input flows into
each token at the top. The map is the first prefix token's row (the class
token) over the patch tokens, or, with no prefix token, the mean of all rows,
min-max normalised. It is the same for every class.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from ..analysis.attention import attention_probabilities
from ..analysis.facts import ModelFacts, analyse
from ..contract import is_split_folder
from ..errors import GraphStructureError, OptionError, onnxruntime_errors
from ..graph.export import export_like
from ..graph.model import load_model
from ..graph.runtime import make_session
from ..graph.unfuse import unfuse_normalisations
from .base import Explanation, Targets, check_images, choose_targets
from .explainer import IMAGES_PER_PREFIX_RUN
from .scores import minmax_normalise, to_scores


class AttentionRollout:
    """Attention rollout maps of an ONNX ViT classifier.

    >>> rollout = AttentionRollout("model.onnx")
    >>> out = rollout.explain(images)                 # images: the model's input, normalised
    >>> out.maps                                      # [B, h, w], the same for every target
    """

    def __init__(
        self,
        model: str | os.PathLike | onnx.ModelProto,
        *,
        providers: Sequence[str] | None = None,
        input_size: tuple[int, int] | None = None,
    ):
        if not isinstance(model, onnx.ModelProto) and is_split_folder(model):
            raise OptionError("attention rollout reads the whole model: give the .onnx file, not a split folder")
        proto = load_model(model)
        graph = gs.import_onnx(proto)
        analysed = export_like(graph, proto) if unfuse_normalisations(graph) else proto
        self.facts: ModelFacts = analyse(analysed, graph, input_size)
        self._probabilities = attention_probabilities(graph, self.facts.blocks)
        if self.facts.all_blocks > len(self.facts.blocks):
            raise GraphStructureError(
                "attention rollout needs one token grid through every block; this model has stages "
                f"({self.facts.all_blocks} blocks, {len(self.facts.blocks)} in the last stage)"
            )
        del proto.graph.output[1:]
        proto.graph.output.extend(onnx.helper.make_value_info(name, onnx.TypeProto()) for name in self._probabilities)
        self._session = make_session(proto, providers)

    @property
    def grid(self) -> tuple[int, int]:
        return self.facts.grid

    def explain(self, images: np.ndarray, targets: Targets = None) -> Explanation:
        """Rollout maps [B, h, w] (class-agnostic), the given or predicted targets, softmax scores [B, C]."""
        images = check_images(images, self.facts.input)
        step = IMAGES_PER_PREFIX_RUN if self.facts.input.static_batch is None else 1  # bounds attention memory
        batches = [images[first : first + step] for first in range(0, len(images), step)]
        logits, maps = [], []
        for batch in batches:
            with onnxruntime_errors("running the model for its attention"):
                out = self._session.run(None, {self.facts.input.name: batch})
            logits.append(out[0].reshape(len(batch), -1))
            maps.append(self._rollout([self._heads_mean(i, a, len(batch)) for i, a in enumerate(out[1:])]))
        scores = to_scores(np.concatenate(logits), "softmax")
        chosen = choose_targets(targets, scores, scores.shape[1])
        return Explanation(np.concatenate(maps).astype(np.float32), chosen, scores)

    def _heads_mean(self, block: int, probabilities: np.ndarray, batch: int) -> np.ndarray:
        """One block's attention [B, T, T], the mean over heads of [B, heads, T, T] or [B*heads, T, T]."""
        tokens = self.facts.tokens
        if probabilities.shape[-2:] != (tokens, tokens) or probabilities.size % (batch * tokens * tokens):
            raise GraphStructureError(
                f"block {block}'s attention probabilities are {list(probabilities.shape)}, not over the model's "
                f"{tokens} tokens (windowed attention?): attention rollout needs global attention"
            )
        return probabilities.reshape(batch, -1, tokens, tokens).astype(np.float64).mean(axis=1)

    def _rollout(self, attention: list[np.ndarray]) -> np.ndarray:
        """Maps [B, h, w] from each block's head-mean attention [B, T, T], first block first."""
        batch, tokens, _ = attention[0].shape
        flow = np.broadcast_to(np.eye(tokens), (batch, tokens, tokens))
        for a in attention:
            mixed = (a + np.eye(tokens)) / 2
            flow = (mixed / mixed.sum(axis=-1, keepdims=True)) @ flow
        prefix = self.facts.prefix_tokens
        rows = flow[:, 0] if prefix else flow.mean(axis=1)
        return minmax_normalise(rows[:, prefix:].reshape(batch, *self.facts.grid))
