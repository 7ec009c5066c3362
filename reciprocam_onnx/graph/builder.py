"""Append ops to an onnx-graphsurgeon graph with unique names and opset-correct forms."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs


class OpBuilder:
    """Adds nodes to ``graph`` under a name prefix; knows the opset for Reduce* axes and the
    graph's float type (``floats``: float32, or float16 in half-precision graphs)."""

    def __init__(self, graph: gs.Graph, prefix: str, floats: str | np.dtype = "float32"):
        self.graph, self.prefix = graph, prefix
        self.opset = graph.opset
        self.floats = np.dtype(floats)
        self._count = 0

    def name(self, hint: str) -> str:
        self._count += 1
        return f"{self.prefix}{hint}_{self._count}"

    def const(self, hint: str, value: np.ndarray) -> gs.Constant:
        return gs.Constant(self.name(hint), np.asarray(value))

    def op(
        self, op: str, inputs: list, attrs: dict | None = None, out: gs.Variable | None = None, dtype=None
    ) -> gs.Variable:
        """One node; returns its output (a new Variable of ``dtype``, default the graph's floats,
        unless ``out`` is given)."""
        out = out if out is not None else gs.Variable(self.name(op.lower()), dtype=dtype or self.floats)
        self.graph.nodes.append(gs.Node(op, self.name(op), attrs or {}, list(inputs), [out]))
        return out

    def reshape(self, x: gs.Tensor, shape: list[int]) -> gs.Variable:
        return self.op("Reshape", [x, self.const("shape", np.array(shape, np.int64))], dtype=x.dtype)

    def cast(self, x: gs.Tensor, dtype: str | np.dtype | None = None) -> gs.Tensor:
        """``x`` as ``dtype`` (default the graph's floats): x itself when it already is."""
        to = np.dtype(dtype or self.floats)
        if x.dtype is not None and np.dtype(x.dtype) == to:
            return x
        return self.op("Cast", [x], {"to": onnx.helper.np_dtype_to_tensor_dtype(to)}, dtype=to)

    def reduce(self, op: str, x: gs.Tensor, axes: list[int]) -> gs.Variable:
        """A Reduce* op keeping dims, with axes as attribute or input (from opset 13 for ReduceSum, 18 for
        the others)."""
        dtype = x.dtype
        if self.opset >= (13 if op == "ReduceSum" else 18):
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
