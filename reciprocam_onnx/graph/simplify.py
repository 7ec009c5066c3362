"""Remove operations that do nothing: ``x + 0``, ``x - 0``, ``x * 1``, ``x / 1``.

Dynamo exports add an all-zero attention mask to every attention's scores
(``scores + where(mask, 0, -inf)`` with a mask that is all True); left in, it
hides the token axes from graph/axes.py. A node is removed only where its
constant operand is all zeros (or ones) and the result has the other
operand's shape, so removing it changes no value and no shape.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from .gsutil import constant_value

_NEUTRAL = {"Add": (0.0, False), "Sub": (0.0, True), "Mul": (1.0, False), "Div": (1.0, True)}  # (value, right only)


def drop_neutral_ops(graph: gs.Graph, shapes: dict[str, tuple[int, ...]], keep: frozenset[str] = frozenset()) -> int:
    """Bypass every neutral Add/Sub/Mul/Div of ``graph`` (in place), except those writing a tensor
    named in ``keep``; returns how many."""
    dropped = 0
    for node in graph.nodes:
        if node.op not in _NEUTRAL or len(node.inputs) != 2:
            continue
        value, right_only = _NEUTRAL[node.op]
        for k in (1,) if right_only else (1, 0):
            kept, neutral = node.inputs[1 - k], constant_value(node.inputs[k])
            out = node.outputs[0]
            if neutral is None or not np.all(neutral == value) or out in graph.outputs or out.name in keep:
                continue
            if shapes.get(kept.name, _shape(kept)) != shapes.get(out.name):
                continue
            for reader in list(out.outputs):
                reader.inputs = [kept if t is out else t for t in reader.inputs]
            dropped += 1
            break
    graph.cleanup()
    return dropped


def _shape(tensor: gs.Tensor) -> tuple[int, ...] | None:
    value = constant_value(tensor)
    return None if value is None else tuple(value.shape)
