"""Small helpers over onnx-graphsurgeon graphs: producers, consumers, constants."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import onnx_graphsurgeon as gs


def constant_value(tensor: gs.Tensor) -> np.ndarray | None:
    """The value of a constant tensor (initializer, Constant node, or an Identity of one)."""
    if isinstance(tensor, gs.Constant):
        return np.asarray(tensor.values)
    node = producer(tensor)
    if node is not None and node.op == "Identity":
        return constant_value(node.inputs[0])
    if node is not None and node.op == "Constant" and "value" in node.attrs:
        value = node.attrs["value"]
        return np.asarray(value.values if isinstance(value, gs.Constant) else value)
    return None


def producer(tensor: gs.Tensor) -> gs.Node | None:
    """The node that writes ``tensor``, or None for inputs and initializers."""
    return tensor.inputs[0] if tensor.inputs else None


def consumers(tensor: gs.Tensor, op: str | None = None) -> list[gs.Node]:
    """Nodes reading ``tensor``, optionally only those of type ``op``."""
    return [n for n in tensor.outputs if op is None or n.op == op]


def other_input(node: gs.Node, tensor: gs.Tensor) -> gs.Tensor | None:
    """For a binary node reading ``tensor``, its other input (either order)."""
    if len(node.inputs) != 2:
        return None
    first, second = node.inputs
    if first is tensor:
        return second
    if second is tensor:
        return first
    return None


def descendants(start: gs.Tensor) -> set[int]:
    """ids of every node reachable downstream from ``start``."""
    seen: set[int] = set()
    stack = list(start.outputs)
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        for out in node.outputs:
            stack.extend(out.outputs)
    return seen


def ancestors(end: gs.Tensor, within: set[int] | None = None) -> list[gs.Node]:
    """Nodes upstream of ``end`` (restricted to node ids in ``within`` if given)."""
    seen: dict[int, gs.Node] = {}
    stack = list(end.inputs)
    while stack:
        node = stack.pop()
        if id(node) in seen or (within is not None and id(node) not in within):
            continue
        seen[id(node)] = node
        for tensor in node.inputs:
            stack.extend(tensor.inputs)
    return list(seen.values())


def ops_of(nodes: Iterable[gs.Node]) -> set[str]:
    """The set of op types among ``nodes``."""
    return {n.op for n in nodes}


def dequantized(tensor: gs.Tensor) -> gs.Tensor:
    """The float tensor that ``tensor`` is a QuantizeLinear -> DequantizeLinear copy of (QDQ
    graphs put such a pair on most tensors), or ``tensor`` itself."""
    node = producer(tensor)
    while node is not None and node.op == "DequantizeLinear":
        quantize = producer(node.inputs[0])
        if quantize is None or quantize.op != "QuantizeLinear":
            break
        tensor = quantize.inputs[0]
        node = producer(tensor)
    return tensor


def float_readers(tensor: gs.Tensor, op: str | None = None) -> list[gs.Node]:
    """Nodes reading ``tensor`` directly or through QuantizeLinear -> DequantizeLinear copies of it,
    optionally only those of type ``op``."""
    found = []
    for node in tensor.outputs:
        if node.op == "QuantizeLinear" and node.inputs[0] is tensor:
            for dequantize in consumers(node.outputs[0], "DequantizeLinear"):
                found += float_readers(dequantize.outputs[0], op)
        elif op is None or node.op == op:
            found.append(node)
    return found
