"""Project F once per image instead of once per masked copy.

A masked copy scales F's rows: ``(w ⊙ F) W = w ⊙ (F W)``. So every
``MatMul(F, W)`` that reads the target block's F (the Q/K/V projections) moves
into the prefix, and the suffix takes the projections ``F W`` as inputs, which
the engine masks exactly as it would mask F::

    prefix: ... ─► F ─MatMul(W)─► normed_projected_0        (once per image)
    suffix: normed_projected_0 (masked) ─► + bias ─► attention ...

F stays a suffix input only if something else still reads it.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx_graphsurgeon as gs

from ..contract import NORMED, projected_name
from ..errors import InternalError
from ..graph.gsutil import constant_value, consumers
from .base import NotApplicable, Surgery

log = logging.getLogger(__name__)


def hoist(surgery: Surgery) -> None:
    """Move every MatMul(F, W) of the suffix into the prefix; the suffix takes F W as masked inputs."""
    sub, pre = surgery.suffix, surgery.prefix
    if pre is None:
        raise InternalError("hoisting needs the prefix graph")
    f_sub = next(t for t in sub.inputs if t.name == NORMED)
    f_pre = next(t for t in pre.outputs if t.name == NORMED)
    if np.dtype(f_sub.dtype) != np.float32:
        raise NotApplicable(
            f"the model computes in {np.dtype(f_sub.dtype).name}, where projecting F before masking "
            "moves the scores by several rounding steps (docs/design.md)"
        )
    projections = [
        n for n in consumers(f_sub) if n.op == "MatMul" and n.inputs[0] is f_sub and _matrix(n.inputs[1]) is not None
    ]
    if not projections:
        readers = ", ".join(sorted({n.op for n in consumers(f_sub)}))
        raise NotApplicable(f"no MatMul with a constant matrix reads F (F is read by {readers})")
    names = []
    for k, node in enumerate(projections):
        weight = _matrix(node.inputs[1])
        if weight is None:
            raise InternalError(f"MatMul {node.name!r} was picked for its constant matrix, and has none")
        projected = node.outputs[0]
        node.inputs.clear()
        node.outputs.clear()
        projected.name = projected_name(k)
        projected.dtype, projected.shape = f_sub.dtype, [f"{projected.name}_batch", f_sub.shape[1], weight.shape[1]]
        out = gs.Variable(projected.name, f_sub.dtype, ["batch", f_sub.shape[1], weight.shape[1]])
        pre.nodes.append(
            gs.Node(
                "MatMul",
                f"{projected.name}_matmul",
                inputs=[f_pre, gs.Constant(f"{projected.name}_weight", weight)],
                outputs=[out],
            )
        )
        pre.outputs.append(out)
        sub.inputs.append(projected)
        names.append(projected.name)
    if consumers(f_sub):
        names.insert(0, NORMED)
    else:
        sub.inputs.remove(f_sub)
        pre.outputs.remove(f_pre)
    surgery.masked = names
    log.info("projected F once per image for %d MatMul(s) of the target block", len(projections))


def _matrix(tensor: gs.Tensor) -> np.ndarray | None:
    value = constant_value(tensor)
    return value if value is not None and value.ndim == 2 else None
