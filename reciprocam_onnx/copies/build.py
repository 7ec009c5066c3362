"""Masked copies in ONNX: the suffix's inputs for n copies of each of N images.

Both the engine's suffix (engine/suffix.py) and the fused graph
(engine/fused_graph.py) build their copies here, from the prefix outputs
``X`` [N, T, k] and the copies' slot tables (copies/slots.py)::

    masked input  X[:, token] * weight                      ─► [N*n, U, k]
    residual R    unmasked: R itself ([1, T, D], broadcast) or R per copy ─► [N*n, T, D]
                  masked:   R * the copy's per-token weights ─► [N*n, T, D]
              or, for a suffix that takes R as slots too, like X ─► [N*n, U, D]
    slot tables   slot_log_count, token_slot, per copy      ─► [N*n, U], [N*n, T]

Copies are image-major: row ``i*n + c`` is copy ``c`` of image ``i``.
copies/reference.py is the same construction in numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from ..contract import RESIDUAL, SLOT_LOG_COUNT, TOKEN_SLOT
from ..graph.builder import OpBuilder
from ..options import RESIDUALS


@dataclass(frozen=True)
class CopyTables:
    """The slot tables of n copies as graph tensors (constants or inputs)."""

    token: gs.Tensor  # int64 [n, U]
    weight: gs.Tensor  # float32 [n, U]
    log_count: gs.Tensor | None = None  # float32 [n, U], for a suffix that takes slots
    token_slot: gs.Tensor | None = None  # int64 [n, T], for a suffix that takes slots


def copy_inputs(
    b: OpBuilder,
    tapped: dict[str, gs.Tensor],
    widths: dict[str, int],
    tables: CopyTables,
    residual: str = RESIDUALS[0],
    one_image: bool = False,
    slot_residual: bool = False,
) -> dict[str, gs.Tensor]:
    """The suffix's inputs (by name) for the copies of every image in ``tapped`` ([N, T, k] each).

    ``widths`` gives each tapped tensor's last dimension. ``one_image``: N is 1,
    so an unmasked residual is passed as it is and the suffix broadcasts it.
    ``slot_residual``: the suffix takes a masked residual as slots (rewrites/slots_through.py).
    The slot tables are inputs too when ``tables`` has them.
    """
    inputs: dict[str, gs.Tensor] = {}
    for name, tensor in tapped.items():
        if name != RESIDUAL or slot_residual:  # [N, T, k] ─► [N, n, U, k] ─► [N*n, U, k]
            rows = b.op("Gather", [tensor, tables.token], {"axis": 1})
            copies = b.op("Mul", [rows, b.cast(b.reshape(tables.weight, [0, 0, 1]))])
            inputs[name] = _per_copy(b, copies, widths[name])
        elif residual == RESIDUALS[1]:  # masked
            weight = tables.weight
            if tables.token_slot is not None:  # slot weights ─► per-token weights [n, T]
                weight = b.op("GatherElements", [tables.weight, tables.token_slot], {"axis": 1}, dtype=np.float32)
            copies = b.op("Mul", [b.unsqueeze(tensor, [1]), b.cast(b.reshape(weight, [0, 0, 1]))])
            inputs[name] = _per_copy(b, copies, widths[name])
        elif one_image:
            inputs[name] = tensor
        else:  # [N, 1, T, D] ─► [N, n, T, D] ─► [N*n, T, D]
            ones = b.const("ones", np.array([1, 1], np.int64))
            shape = b.op(
                "Concat",
                [b.const("one", np.array([1], np.int64)), b.dim(tables.token, 0), ones],
                {"axis": 0},
                dtype=np.int64,
            )
            copies = b.op("Expand", [b.unsqueeze(tensor, [1]), shape])
            inputs[name] = _per_copy(b, copies, widths[name])
    if tables.log_count is not None and tables.token_slot is not None:  # the same for every image: [n, S] ─► [N*n, S]
        images = b.dim(tapped[RESIDUAL], 0)
        shape = b.op("Concat", [images, b.const("ones", np.array([1, 1], np.int64))], {"axis": 0}, dtype=np.int64)
        for name, table in ((SLOT_LOG_COUNT, tables.log_count), (TOKEN_SLOT, tables.token_slot)):
            tiled = b.op("Expand", [b.unsqueeze(table, [0]), shape], dtype=table.dtype)
            inputs[name] = b.op("Flatten", [tiled], {"axis": 2}, dtype=table.dtype)
    return inputs


def _per_copy(b: OpBuilder, copies: gs.Tensor, width: int) -> gs.Variable:
    """[N, n, rows, k] -> [N*n, rows, k]: one batch row per copy, image-major."""
    return b.reshape(b.op("Flatten", [copies], {"axis": 2}), [0, -1, width])
