"""Append ops to an onnx-graphsurgeon graph with unique names and opset-correct forms."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs


class OpBuilder:
    """Adds nodes to ``graph`` under a name prefix; knows the opset for Reduce* axes."""

    def __init__(self, graph: gs.Graph, prefix: str):
        self.graph, self.prefix = graph, prefix
        self.opset = graph.opset
        self._count = 0

    def name(self, hint: str) -> str:
        self._count += 1
        return f"{self.prefix}{hint}_{self._count}"

    def const(self, hint: str, value: np.ndarray) -> gs.Constant:
        return gs.Constant(self.name(hint), np.asarray(value))

    def op(
        self, op: str, inputs: list, attrs: dict | None = None, out: gs.Variable | None = None, dtype=np.float32
    ) -> gs.Variable:
        """One node; returns its output (a new Variable unless ``out`` is given)."""
        out = out if out is not None else gs.Variable(self.name(op.lower()), dtype=dtype)
        self.graph.nodes.append(gs.Node(op, self.name(op), attrs or {}, list(inputs), [out]))
        return out

    def reshape(self, x: gs.Tensor, shape: list[int]) -> gs.Variable:
        return self.op("Reshape", [x, self.const("shape", np.array(shape, np.int64))], dtype=x.dtype or np.float32)

    def reduce(self, op: str, x: gs.Tensor, axes: list[int]) -> gs.Variable:
        """ReduceMin/ReduceMax keeping dims, with axes as attribute (< 18) or input (>= 18)."""
        dtype = x.dtype or np.float32
        if self.opset >= 18:
            return self.op(op, [x, self.const("axes", np.array(axes, np.int64))], {"keepdims": 1}, dtype=dtype)
        return self.op(op, [x], {"axes": axes, "keepdims": 1}, dtype=dtype)

    def squeeze(self, x: gs.Tensor, axes: list[int], out: gs.Variable | None = None) -> gs.Variable:
        """Squeeze with axes as attribute (< 13) or input (>= 13)."""
        if self.opset >= 13:
            return self.op("Squeeze", [x, self.const("axes", np.array(axes, np.int64))], out=out, dtype=x.dtype)
        return self.op("Squeeze", [x], {"axes": axes}, out=out, dtype=x.dtype)

    def unsqueeze(self, x: gs.Tensor, axes: list[int]) -> gs.Variable:
        """Unsqueeze with axes as attribute (< 13) or input (>= 13)."""
        if self.opset >= 13:
            return self.op("Unsqueeze", [x, self.const("axes", np.array(axes, np.int64))], dtype=x.dtype)
        return self.op("Unsqueeze", [x], {"axes": axes}, dtype=x.dtype)

    def dim(self, x: gs.Tensor, axis: int) -> gs.Variable:
        """The size of ``x`` along ``axis`` as an int64 [1] tensor."""
        shape = self.op("Shape", [x], dtype=np.int64)
        return self.op("Gather", [shape, self.const("axis", np.array([axis], np.int64))], {"axis": 0}, dtype=np.int64)
