"""When no transformer block is found, the error says which step failed and what the graph has."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from onnx import TensorProto, helper

from reciprocam_onnx.analysis.blocks import find_blocks
from reciprocam_onnx.errors import NotAViTError

D = 4


def graph(nodes: list, weights: dict[str, np.ndarray]) -> gs.Graph:
    """x [1, 3, D] -> nodes -> y, with ``weights`` as initializers."""
    inits = [onnx.numpy_helper.from_array(value, name) for name, value in weights.items()]
    model = helper.make_model(
        helper.make_graph(
            nodes,
            "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, D])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
            inits,
        ),
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)],
    )
    return gs.import_onnx(model)


NORM = {"g": np.ones(D, np.float32), "b": np.zeros(D, np.float32), "w": np.eye(D, dtype=np.float32)}


def layernorm(x: str, out: str) -> onnx.NodeProto:
    return helper.make_node("LayerNormalization", [x, "g", "b"], [out], axis=-1)


def branch(f: str, out: str, attention: bool) -> list[onnx.NodeProto]:
    """f -> MatMul(w) -> [Softmax] -> out: a sublayer's branch."""
    last = helper.make_node("Softmax", [f + "_p"], [out]) if attention else helper.make_node("Relu", [f + "_p"], [out])
    return [helper.make_node("MatMul", [f, "w"], [f + "_p"]), last]


CASES = {
    "cnn": (
        [
            helper.make_node("Unsqueeze", ["x", "axes"], ["x4"]),
            helper.make_node("Conv", ["x4", "k"], ["c"]),
            helper.make_node("Relu", ["c"], ["y"]),
        ],
        {"axes": np.zeros(1, np.int64), "k": np.ones((1, 1, 1, 1), np.float32)},
        "it looks like a CNN rather than a Vision Transformer",
    ),
    "original post-norm": (  # LN(x + branch(x)): the LayerNorm follows the Add
        [*branch("x", "a", True), helper.make_node("Add", ["x", "a"], ["r"]), layernorm("r", "y")],
        NORM,
        "no LayerNorm's input also feeds a residual Add",
    ),
    "residual post-norm": (  # x + LN(branch(x)), as in Swin V2
        [*branch("x", "a", True), layernorm("a", "n"), helper.make_node("Add", ["x", "n"], ["y"])],
        NORM,
        "1 of its LayerNorms close a branch before the residual Add (post-norm",
    ),
    "mixer": (
        [layernorm("x", "f"), *branch("f", "a", False), helper.make_node("Add", ["x", "a"], ["y"])],
        NORM,
        "no pre-norm branch holds a Softmax",
    ),
    "attention only": (
        [layernorm("x", "f"), *branch("f", "a", True), helper.make_node("Add", ["x", "a"], ["y"])],
        NORM,
        "none of the 1 attention sublayers is followed by a pre-norm MLP sublayer",
    ),
    "fused": (
        [helper.make_node("Attention", ["x", "g", "b"], ["y"], domain="com.microsoft", num_heads=1)],
        NORM,
        "its attention is a fused ONNX Runtime op",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_error_names_the_failed_step(case):
    nodes, weights, needle = CASES[case]
    with pytest.raises(NotAViTError, match="no transformer blocks found") as error:
        find_blocks(graph(nodes, weights))
    assert needle in str(error.value)
    assert ("CNN" in str(error.value)) == (case == "cnn")


def test_a_pre_norm_block_is_found():
    nodes = [
        layernorm("x", "f1"),
        *branch("f1", "a", True),
        helper.make_node("Add", ["x", "a"], ["r"]),
        layernorm("r", "f2"),
        *branch("f2", "m", False),
        helper.make_node("Add", ["r", "m"], ["y"]),
    ]
    blocks = find_blocks(graph(nodes, NORM))
    assert [(b.residual, b.normed, b.attention_output, b.output) for b in blocks] == [("x", "f1", "r", "y")]
