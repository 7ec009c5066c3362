"""The one shape of every graph rewrite, and the loop that runs a declared list of them.

A pass is a function that changes a ``Surgery`` in place, or raises
``NotApplicable(reason)`` to decline; it may decline half-way, because
``run_passes`` hands it a copy and keeps the copy only when it applied. Each
outcome is recorded as a ``contract.Rewrite`` (applied, or not and why).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from ..analysis.blocks import Block
from ..analysis.facts import ModelFacts
from ..contract import NORMED, SLOT_LOG_COUNT, TOKEN_SLOT, Rewrite
from ..errors import GraphStructureError, InternalError
from ..graph.export import export_like
from ..graph.probe import tensor_shapes

log = logging.getLogger(__name__)

Shapes = dict[str, tuple[int, ...]]


class NotApplicable(Exception):
    """A pass declines: the graph does not have the form it rewrites."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class NothingToDo(NotApplicable):
    """A pass declines because the graph has none of what it is for (not recorded as an outcome)."""


@dataclass
class Surgery:
    """A split under construction: the graphs the passes change and the facts they read."""

    suffix: gs.Graph
    like: onnx.ModelProto  # IR version and opsets to export with
    prefix: gs.Graph | None = None
    facts: ModelFacts | None = None
    index: int = 0  # the target block
    masked: list[str] = field(default_factory=lambda: [NORMED])  # suffix inputs the copies mask
    head_rows: list[str] = field(default_factory=list)  # Gathers that pick the head's rows (head-rows pass)
    slots: bool = False  # the suffix takes its masked inputs as slots (slots pass)
    copies_per_run: int | None = None  # the suffix takes only this many copies per run (one-copy-per-run pass)
    _shapes: Shapes | None = None

    @property
    def target(self) -> Block:
        return self.model_facts.blocks[self.index]

    @property
    def model_facts(self) -> ModelFacts:
        if self.facts is None:
            raise InternalError("this pass needs the model's facts, and the surgery has none")
        return self.facts

    def shapes(self) -> Shapes:
        """Every suffix tensor's shape for one copy of one image, given as one slot per token where the
        suffix takes slots (run once in ONNX Runtime, then kept)."""
        if self._shapes is None:
            inputs = {t.name: t for t in self.suffix.inputs}
            tokens = int(inputs[TOKEN_SLOT].shape[1]) if TOKEN_SLOT in inputs else self.model_facts.tokens
            feeds = {name: _probe_feed(tensor, tokens) for name, tensor in inputs.items()}
            names = [name for name in self.suffix.tensors() if name]
            self._shapes = tensor_shapes(self.export_suffix(), feeds, names)
        return self._shapes

    def export_suffix(self) -> onnx.ModelProto:
        return export_like(self.suffix.cleanup().toposort(), self.like)

    def export_prefix(self) -> onnx.ModelProto:
        if self.prefix is None:
            raise InternalError("this surgery has no prefix")
        return export_like(self.prefix.cleanup().toposort(), self.like)

    def copy(self, prefix_too: bool = True) -> Surgery:
        """A copy to change; ``prefix_too=False`` shares the prefix graph (for a pass that leaves it alone)."""
        prefix = self.prefix.copy() if self.prefix is not None and prefix_too else self.prefix
        return replace(
            self, suffix=self.suffix.copy(), prefix=prefix, masked=list(self.masked), head_rows=list(self.head_rows)
        )


def _probe_feed(tensor: gs.Variable, tokens: int) -> np.ndarray:
    """A suffix input for one copy of one image: zero rows, or the slot tables of one slot per token."""
    if tensor.name == SLOT_LOG_COUNT:
        return np.zeros((1, tokens), np.float32)
    if tensor.name == TOKEN_SLOT:
        return np.arange(tokens, dtype=np.int64)[None]
    return np.zeros((1, tokens, int(tensor.shape[-1])), tensor.dtype)


@dataclass(frozen=True)
class Pass:
    """A named rewrite; a ``required`` one that declines stops the split with its reason.
    ``keeps_shapes``: at batch 1 every tensor keeps its name and shape; ``changes_prefix``: it changes the
    prefix graph too (the others leave it alone, so their trial copies share it)."""

    name: str
    run: Callable[[Surgery], None]
    required: bool = False
    keeps_shapes: bool = False
    changes_prefix: bool = False


def run_passes(surgery: Surgery, passes: Sequence[Pass]) -> tuple[Surgery, tuple[Rewrite, ...]]:
    """Run ``passes`` in order; returns the surgery with those that applied, and every outcome."""
    outcomes = []
    for rewrite in passes:
        trial = surgery.copy(prefix_too=rewrite.changes_prefix)
        try:
            rewrite.run(trial)
        except NothingToDo:
            continue
        except NotApplicable as exc:
            if rewrite.required:
                raise GraphStructureError(exc.reason) from None
            log.info("rewrite %s: not applied (%s)", rewrite.name, exc.reason)
            outcomes.append(Rewrite(rewrite.name, False, exc.reason))
            continue
        if not rewrite.keeps_shapes:
            trial._shapes = None  # the graph changed: probe again when a later pass asks
        surgery = trial
        log.info("rewrite %s: applied", rewrite.name)
        outcomes.append(Rewrite(rewrite.name, True))
    return surgery, tuple(outcomes)
