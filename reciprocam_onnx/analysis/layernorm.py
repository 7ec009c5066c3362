"""Find LayerNorms: the ``LayerNormalization`` op (and ONNX Runtime's RMSNorm,
``SimplifiedLayerNormalization``) and the decomposed form.

Older opsets (< 17) export ``F.layer_norm`` as::

    X ──ReduceMean──► mean
    X, mean ──Sub──► d ──Pow(2)──► ReduceMean ──Add(eps)──► Sqrt ──► s
    d, s ──Div──► n ──Mul(gamma)──► ──Add(beta)──► Y

The matcher anchors on the ``Sub`` (X - mean), walks forward along that
pattern and accepts ``Mul``/``Add`` operands in either order and optional
``Cast`` nodes before ``Pow``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from ..graph.gsutil import constant_value, consumers, other_input, producer

NORM_OPS = ("LayerNormalization", "SimplifiedLayerNormalization")  # the latter: ONNX Runtime's RMSNorm


@dataclass(frozen=True)
class LayerNormMatch:
    """One LayerNorm: its input tensor, output tensor and the nodes it spans."""

    input: gs.Variable
    output: gs.Variable
    nodes: tuple[gs.Node, ...]


def find_layernorms(graph: gs.Graph) -> list[LayerNormMatch]:
    """Every LayerNorm in ``graph``, fused op or decomposed, in node order."""
    matches = []
    for node in graph.nodes:
        if node.op in NORM_OPS:
            matches.append(LayerNormMatch(node.inputs[0], node.outputs[0], (node,)))
        elif node.op == "Sub":
            match = _match_decomposed(node)
            if match is not None:
                matches.append(match)
    return [_with_casts(match) for match in matches]


def _with_casts(norm: LayerNormMatch) -> LayerNormMatch:
    """A LayerNorm computed in another float type than the graph around it (a float16 model keeping its
    LayerNorms in float32: Cast -> LayerNorm -> Cast back) taken with its Casts, so that it reads and
    writes the model's own tensors."""
    before = producer(norm.input)
    after = consumers(norm.output)
    if not (before is not None and before.op == "Cast" and len(after) == 1 and after[0].op == "Cast"):
        return norm
    x, y = before.inputs[0], after[0].outputs[0]
    if x.dtype is None or y.dtype is None or np.dtype(x.dtype) != np.dtype(y.dtype) or np.dtype(x.dtype).kind != "f":
        return norm
    return LayerNormMatch(x, y, (before, *norm.nodes, after[0]))


def _single(tensor: gs.Tensor, op: str) -> gs.Node | None:
    """The one consumer of ``tensor`` of type ``op``, skipping through Casts."""
    found = consumers(tensor, op)
    if not found:
        for cast in consumers(tensor, "Cast"):
            found += consumers(cast.outputs[0], op)
    return found[0] if len(found) == 1 else None


def _match_decomposed(sub: gs.Node) -> LayerNormMatch | None:
    x, mean_t = sub.inputs
    mean = producer(mean_t)
    if mean is None or mean.op != "ReduceMean" or mean.inputs[0] is not x:
        return None
    diff = sub.outputs[0]
    pow_ = _single(diff, "Pow")
    if pow_ is None or _scalar(pow_.inputs[1]) != 2.0:
        return None
    var = _single(pow_.outputs[0], "ReduceMean")
    if var is None:
        return None
    add_eps = _single(var.outputs[0], "Add")
    if add_eps is None or not 0 < (_scalar(other_input(add_eps, var.outputs[0])) or 0) < 1e-2:
        return None
    sqrt = _single(add_eps.outputs[0], "Sqrt")
    div = sqrt and _single(sqrt.outputs[0], "Div")
    if div is None or div.inputs[0] is not diff:
        return None
    nodes = [mean, sub, pow_, var, add_eps, sqrt, div]
    out = div.outputs[0]
    for op in ("Mul", "Add"):
        affine = _single(out, op)
        if affine is None or constant_value(other_input(affine, out)) is None:
            break
        nodes.append(affine)
        out = affine.outputs[0]
    return LayerNormMatch(x, out, tuple(nodes))


def _scalar(tensor: gs.Tensor | None) -> float | None:
    value = None if tensor is None else constant_value(tensor)
    if value is None or value.size != 1:
        return None
    return float(value.reshape(()))
