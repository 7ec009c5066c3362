"""Tests of reciprocam_onnx.graph.axes on small hand-built ONNX graphs (opset 17)."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from reciprocam_onnx.errors import GraphStructureError
from reciprocam_onnx.graph.axes import follow_axis, make_batch_dynamic

T, D, H = 4, 6, 2  # tokens, width, heads
d = D // H
I64 = np.int64
BATCH, TOKENS = {"x": (0, 1)}, {"x": (1, 1)}


def node(op, inputs, output, name, **attrs):
    return helper.make_node(op, inputs, [output], name=name, **attrs)


def build(nodes, inits=None, out="y"):
    """A model reading x [1, T, D] and writing ``out``, with numpy initializers."""
    inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in (inits or {}).items()]
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, T, D])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)],
        inits,
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def shapes_of(model):
    """Every tensor's shape at batch 1, by ONNX shape inference."""
    g = onnx.shape_inference.infer_shapes(model, strict_mode=True).graph
    return {
        v.name: tuple(dim.dim_value for dim in v.type.tensor_type.shape.dim)
        for v in [*g.input, *g.value_info, *g.output]
    }


def follow(model, start, **kw):
    return follow_axis(gs.import_onnx(model), shapes_of(model), start, **kw)


def run(model, x):
    model.ir_version = 8  # opset 17's IR; newer onnx writes one older onnxruntime refuses
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def check_batch_dynamic(model, expected_count):
    """make_batch_dynamic, then batch 3 must equal three batch-1 runs of the original."""
    graph = gs.import_onnx(model)
    assert make_batch_dynamic(graph, shapes_of(model)) == expected_count
    graph.inputs[0].shape = ["N", T, D]
    x = np.random.default_rng(0).standard_normal((3, T, D), dtype=np.float32)
    got = run(gs.export_onnx(graph), x)
    want = np.concatenate([run(model, x[i : i + 1]) for i in range(3)])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def attention():
    """[1,T,D] -> [1,T,H,d] -> q k^T -> scale -> Softmax -> @ v -> [1,T,D] + bias."""
    return build(
        [
            node("Reshape", ["x", "shape_in"], "r1o", "r1"),
            node("Transpose", ["r1o"], "q", "tq", perm=[0, 2, 1, 3]),
            node("Transpose", ["r1o"], "kt", "tk", perm=[0, 2, 3, 1]),
            node("MatMul", ["q", "kt"], "s", "qk"),
            node("Mul", ["scale", "s"], "ss", "mul"),
            node("Softmax", ["ss"], "p", "softmax", axis=-1),
            node("MatMul", ["p", "q"], "o", "pv"),
            node("Transpose", ["o"], "ot", "to", perm=[0, 2, 1, 3]),
            node("Reshape", ["ot", "shape_out"], "r2o", "r2"),
            node("Add", ["r2o", "bias"], "y", "add"),
        ],
        {
            "shape_in": np.array([1, T, H, d], I64),
            "shape_out": np.array([1, T, D], I64),
            "scale": np.float32(0.5),
            "bias": np.arange(D, dtype=np.float32),
        },
    )


def merged_attention():
    """torchvision-style: [T,1,D] -> [T, 1*H, d] (batch merged with heads) -> ... -> [1,T,D]."""
    w = np.random.default_rng(1).standard_normal((D, D), dtype=np.float32)
    return build(
        [
            node("Transpose", ["x"], "xt", "t_in", perm=[1, 0, 2]),
            node("Reshape", ["xt", "s1"], "r1o", "r1"),
            node("Transpose", ["r1o"], "q", "tq", perm=[1, 0, 2]),
            node("Transpose", ["r1o"], "kt", "tk", perm=[1, 2, 0]),
            node("MatMul", ["q", "kt"], "s", "qk"),
            node("Softmax", ["s"], "p", "softmax", axis=-1),
            node("MatMul", ["p", "q"], "o", "pv"),
            node("Transpose", ["o"], "ot", "to", perm=[1, 0, 2]),
            node("Reshape", ["ot", "s2"], "r2o", "r2"),
            node("MatMul", ["r2o", "w"], "proj", "proj"),
            node("Reshape", ["proj", "s3"], "r3o", "r3"),
            node("Transpose", ["r3o"], "y", "t_out", perm=[1, 0, 2]),
        ],
        {"s1": np.array([T, H, d], I64), "s2": np.array([T, D], I64), "s3": np.array([T, 1, D], I64), "w": w},
    )


def test_make_batch_dynamic_attention():
    """Both Reshapes get -1 on axis 0 and batch 3 matches per-item runs."""
    assert follow(attention(), BATCH) == ({"r1": 0, "r2": 0}, None)
    check_batch_dynamic(attention(), 2)


def test_make_batch_dynamic_merged_batch_and_heads():
    """The batch is found outside the heads in [T, 1*H, d]; the choice that fails at q k^T is abandoned."""
    assert follow(merged_attention(), BATCH) == ({"r1": 1, "r2": 0, "r3": 1}, None)
    check_batch_dynamic(merged_attention(), 3)


CONTRADICTIONS = {
    "ReduceMean": ([node("ReduceMean", ["x"], "b", "bad", axes=[0])], {}),
    "Softmax": ([node("Softmax", ["x"], "b", "bad", axis=0)], {}),
    "Gather": ([node("Gather", ["x", "idx"], "b", "bad", axis=0)], {"idx": np.array([0], I64)}),
    "MatMul": (
        [
            node("Transpose", ["x"], "xt", "t", perm=[2, 1, 0]),  # [D, T, 1] @ [1, 5]
            node("MatMul", ["xt", "c"], "b", "bad"),
        ],
        {"c": np.ones((1, 5), np.float32)},
    ),
}


@pytest.mark.parametrize("op", sorted(CONTRADICTIONS))
def test_contradiction_fails_at_node(op):
    """follow_axis names the contradicting node; make_batch_dynamic raises naming op and node."""
    nodes, inits = CONTRADICTIONS[op]
    model = build([*nodes, node("Identity", ["b"], "y", "after")], inits)
    choices, failed = follow(model, BATCH)
    assert choices is None and (failed.op, failed.name) == (op, "bad")
    with pytest.raises(GraphStructureError, match=f"through {op} node 'bad'"):
        make_batch_dynamic(gs.import_onnx(model), shapes_of(model))


def test_sink_stops_the_axis():
    """A sink consumes the axis: the reduction over it and a Softmax after it no longer fail."""
    model = build(
        [
            node("Reshape", ["x", "flat"], "r", "r"),
            node("ReduceSum", ["r", "axes"], "sum", "sink"),
            node("Softmax", ["sum"], "y", "after", axis=0),
        ],
        {"flat": np.array([1, T * D], I64), "axes": np.array([0, 1], I64)},
    )
    choices, failed = follow(model, BATCH)
    assert choices is None and failed.name == "sink"
    assert follow(model, BATCH, sinks=frozenset({"sink"})) == ({"r": 0}, None)


@pytest.mark.parametrize("size, axis", [(1, 1), (T, 0)])
def test_size_picks_an_axis_that_holds_it(size, axis):
    """Tokens of [1,T,D] -> [T,1,D]: a 1-element axis may take axis 1; T elements only fit axis 0."""
    model = build([node("Reshape", ["x", "s"], "y", "r")], {"s": np.array([T, 1, D], I64)})
    assert follow(model, TOKENS, size=size) == ({"r": axis}, None)


def test_size_with_no_axis_that_holds_it():
    """[1,T,D] -> [1,2,2,D]: no output axis holds the T tokens whole."""
    model = build([node("Reshape", ["x", "s"], "y", "r")], {"s": np.array([1, 2, 2, D], I64)})
    assert follow(model, TOKENS)[0] is not None
    choices, failed = follow(model, TOKENS, size=T)
    assert choices is None and failed.name == "r"


@pytest.mark.parametrize("op", ["Add", "Mul"])
@pytest.mark.parametrize(
    "cshape, ok", [((1, 1, D), True), ((D,), True), ((), True), ((1, T, D), False), ((T, 1), False)]
)
def test_broadcast_constant_on_followed_axis(op, cshape, ok):
    """Following the tokens: a constant of size 1 (or absent) there passes, size T fails; order is irrelevant."""
    results = []
    for inputs in (["x", "c"], ["c", "x"]):
        model = build([node(op, inputs, "y", "op")], {"c": np.ones(cshape, np.float32)})
        choices, failed = follow(model, TOKENS, size=T)
        assert (choices == {}) if ok else (choices is None and failed.name == "op")
        results.append((choices, failed and failed.name))
    assert results[0] == results[1]


@pytest.mark.parametrize("op", ["Add", "Mul"])
@pytest.mark.parametrize("perm, ok", [([0, 1, 2], True), ([1, 0, 2], False)])
def test_two_carried_inputs_commute(op, perm, ok):
    """x op Transpose(x): the axis must land on the same output axis from both inputs, in either order."""
    for inputs in (["x", "xt"], ["xt", "x"]):
        model = build([node("Transpose", ["x"], "xt", "t", perm=perm), node(op, inputs, "y", "op")])
        choices, failed = follow(model, BATCH)
        assert (choices == {} and failed is None) if ok else (choices is None and failed.name == "op")


@pytest.mark.xfail(strict=True, reason="opset>=13 Softmax normalises one axis only, yet axes after it are rejected")
def test_softmax_over_an_earlier_axis_keeps_the_batch():
    """[T,1,D] Softmax over tokens (axis 0) is independent per batch item."""
    model = build([node("Transpose", ["x"], "xt", "t", perm=[1, 0, 2]), node("Softmax", ["xt"], "y", "sm", axis=0)])
    assert follow(model, BATCH) == ({}, None)


def test_slice_of_the_batch_axis_is_a_contradiction():
    """x[0:1] on the batch axis would silently drop batch items 1.. after make_batch_dynamic."""
    model = build(
        [node("Slice", ["x", "st", "en", "ax"], "y", "sl")],
        {"st": np.array([0], I64), "en": np.array([1], I64), "ax": np.array([0], I64)},
    )
    choices, failed = follow(model, BATCH)
    assert choices is None and failed.name == "sl"
