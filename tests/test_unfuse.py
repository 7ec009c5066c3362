"""ONNX Runtime's fused skip-normalisations, written as standard ops, compute what the fused ops compute."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from reciprocam_onnx.graph.unfuse import unfuse_normalisations

T, D = 5, 8


def fused_model(op: str, with_bias: bool) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    weights = {"gamma": rng.standard_normal(D), "beta": rng.standard_normal(D), "bias": rng.standard_normal(D)}
    inputs = ["x", "skip", "gamma"] + (["beta"] if op == "SkipLayerNormalization" else [])
    inputs += ["bias"] if with_bias else ([""] if op == "SkipLayerNormalization" else [])
    node = helper.make_node(op, inputs, ["y", "", "", "sum"], domain="com.microsoft", epsilon=1e-5)
    graph = helper.make_graph(
        [node],
        "fused",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, T, D]) for n in ("x", "skip")],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, T, D]) for n in ("y", "sum")],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items() if k in inputs],
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    return helper.make_model(graph, opset_imports=opsets, ir_version=8)


def run(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)


@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("op", ["SkipLayerNormalization", "SkipSimplifiedLayerNormalization"])
def test_unfused_ops_compute_the_fused_ops_outputs(op, with_bias):
    model = fused_model(op, with_bias)
    rng = np.random.default_rng(1)
    feeds = {name: rng.standard_normal((1, T, D)).astype(np.float32) for name in ("x", "skip")}
    graph = gs.import_onnx(model)
    assert unfuse_normalisations(graph) == 1
    assert {node.op for node in graph.nodes} <= {"Add", "LayerNormalization", "SimplifiedLayerNormalization"}
    unfused = gs.export_onnx(graph)
    unfused.ir_version = 8
    for got, want in zip(run(unfused, feeds), run(model, feeds)):
        np.testing.assert_allclose(got, want, atol=1e-5)
