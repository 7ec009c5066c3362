"""Every graph rewrite (reciprocam_onnx/rewrites/) on a tiny hand-built one-block suffix, and the runner."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from reciprocam_onnx.analysis.blocks import Block
from reciprocam_onnx.analysis.facts import ModelFacts
from reciprocam_onnx.contract import NORMED, RESIDUAL, Rewrite, projected_name
from reciprocam_onnx.copies.masks import cell_weights
from reciprocam_onnx.copies.reference import copy_feeds
from reciprocam_onnx.copies.slots import compact_slots, identity_slots
from reciprocam_onnx.errors import GraphStructureError
from reciprocam_onnx.graph.model import ImageInput
from reciprocam_onnx.rewrites import (
    PRECISION_PASSES,
    NotApplicable,
    Pass,
    Surgery,
    residual_passes,
    run_passes,
    split_passes,
)
from reciprocam_onnx.rewrites.batch import batch_dynamic
from reciprocam_onnx.rewrites.dynamic_quantization import one_copy_per_run
from reciprocam_onnx.rewrites.head_rows import head_rows
from reciprocam_onnx.rewrites.hoist import hoist
from reciprocam_onnx.rewrites.slots import slots
from reciprocam_onnx.split.cut import free_shapes, set_shapes

T, D, H, C, GRID = 10, 8, 2, 5, (3, 3)
FACTS = ModelFacts(
    ImageInput("image", 3, 6, 6, None),
    "logits",
    (Block(0, RESIDUAL, NORMED, "attn_out", "block_out"),),
    T,
    1,
    GRID,
    D,
    C,
)


def _model(nodes, inits, inputs, outputs, name) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, name, inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # onnx 1.23 writes IR 14, which onnxruntime 1.31 refuses
    return model


def suffix_model(
    pool="cls", scores="Softmax", scaled_f=False, batch_mean=False, head="gemm", later=0, probabilities=False
) -> onnx.ModelProto:
    """residual, normed [1, T, D] -> one pre-norm block (``later`` more after it) -> final LN -> pooling ->
    head -> logits [1, C] (softmax scores with ``probabilities``)."""
    rng = np.random.default_rng(0)
    nodes, inits = [], []

    def const(name, value):
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(op, inputs, out, **attrs):
        nodes.append(helper.make_node(op, inputs, [out], name=f"n_{out}", **attrs))
        return out

    def w(rows, cols):
        return (rng.standard_normal((rows, cols)) / np.sqrt(rows)).astype(np.float32)

    def norm(x, out):
        g, b = (rng.standard_normal(D).astype(np.float32) * 0.1 + k for k in (1, 0))
        return node("LayerNormalization", [x, const(f"{out}_g", g), const(f"{out}_b", b)], out, axis=-1)

    def block(residual, f, tag=""):
        heads = {}
        for key, perm in (("q", [0, 2, 1, 3]), ("k", [0, 2, 3, 1]), ("v", [0, 2, 1, 3])):
            x = node("MatMul", [f, const(f"{tag}W{key}", w(D, D))], f"{tag}{key}_proj")
            x = node("Reshape", [x, const(f"{tag}{key}_shape", np.array([1, T, H, D // H]))], f"{tag}{key}_heads")
            heads[key] = node("Transpose", [x], f"{tag}{key}_t", perm=perm)
        s = node("MatMul", [heads["q"], heads["k"]], f"{tag}scores")
        s = node("Mul", [s, const(f"{tag}scale", np.array((D // H) ** -0.5, np.float32))], f"{tag}scaled")
        p = node(scores, [s], f"{tag}probs", **({"axis": -1} if scores == "Softmax" else {}))
        a = node("Transpose", [node("MatMul", [p, heads["v"]], f"{tag}context")], f"{tag}context_t", perm=[0, 2, 1, 3])
        a = node("Reshape", [a, const(f"{tag}merge_shape", np.array([1, T, D]))], f"{tag}context_merged")
        x = node(
            "Add", [node("MatMul", [a, const(f"{tag}Wo", w(D, D))], f"{tag}attn_branch"), residual], f"{tag}attn_out"
        )
        h = node(
            "Relu", [node("MatMul", [norm(x, f"{tag}ln2"), const(f"{tag}W1", w(D, 2 * D))], f"{tag}fc1")], f"{tag}act"
        )
        return node("Add", [x, node("MatMul", [h, const(f"{tag}W2", w(2 * D, D))], f"{tag}fc2")], f"{tag}block_out")

    f = node("Mul", [NORMED, const("gamma", np.full(D, 1.5, np.float32))], "f_scaled") if scaled_f else NORMED
    y = block(RESIDUAL, f)
    for k in range(later):
        y = block(y, norm(y, f"later{k}_ln1"), f"later{k}_")
    if batch_mean:  # contracts the batch axis
        y = node("ReduceMean", [y], "batch_mean", axes=[0], keepdims=1)
    y = norm(y, "final_norm")
    y = (
        node("Gather", [y, const("cls_index", np.array(0, np.int64))], "pooled", axis=1)
        if pool == "cls"
        else node("ReduceMean", [y], "pooled", axes=[1], keepdims=0)
    )  # CLS or mean pooling
    bias = const("head_b", rng.standard_normal(C).astype(np.float32))
    out = "head" if probabilities else "logits"
    (
        node("Gemm", [y, const("head_w", w(D, C)), bias], out)
        if head == "gemm"
        else node("Add", [node("MatMul", [y, const("head_w", w(D, C))], "head_mm"), bias], out)
    )
    if probabilities:
        node("Softmax", [out], "logits", axis=-1)
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, T, D]) for n in (RESIDUAL, NORMED)]
    return _model(nodes, inits, inputs, [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, C])], "suffix")


def prefix_model() -> onnx.ModelProto:
    """tokens [batch, T, D] -> Identity -> residual, LayerNormalization -> normed."""
    nodes = [
        helper.make_node("Identity", ["tokens"], [RESIDUAL], name="n_residual"),
        helper.make_node("LayerNormalization", ["tokens", "ln1_g", "ln1_b"], [NORMED], name="n_ln1", axis=-1),
    ]
    inits = [
        numpy_helper.from_array(np.linspace(0.5, 1.5, D, dtype=np.float32), "ln1_g"),
        numpy_helper.from_array(np.linspace(-0.2, 0.2, D, dtype=np.float32), "ln1_b"),
    ]
    info = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", T, D]) for n in ("tokens", RESIDUAL, NORMED)]
    return _model(nodes, inits, info[:1], info[1:], "prefix")


def surgery(model: onnx.ModelProto, with_prefix: bool = False) -> Surgery:
    """A Surgery prepared as split/pipeline.py prepares one."""
    suffix = gs.import_onnx(model)
    result = Surgery(suffix, model, gs.import_onnx(prefix_model()) if with_prefix else None, FACTS, 0)
    set_shapes(suffix, result.shapes(), FACTS)
    free_shapes(suffix, (C,))
    return result


def run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.log_severity_level = 1, 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    quiet = ort.RunOptions()
    quiet.log_severity_level = 4  # a refused batch is expected in one test
    return session.run(None, {k: v for k, v in feeds.items() if k in names}, quiet)


def stream(batch: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {name: rng.standard_normal((batch, T, D), dtype=np.float32) for name in (RESIDUAL, NORMED)}


def ops(s: Surgery) -> list[str]:
    return [n.op for n in s.suffix.nodes]


def apply(s: Surgery, *passes: Pass) -> Surgery:
    out, outcomes = run_passes(s, passes)
    assert [r.applied for r in outcomes] == [True] * len(passes), outcomes
    return out


def decline(s: Surgery, rewrite: Pass, *words: str) -> None:
    before = ops(s)
    out, (outcome,) = run_passes(s, [rewrite])
    assert outcome.name == rewrite.name and not outcome.applied
    assert all(word in outcome.reason for word in words), outcome.reason
    assert out is s and ops(out) == before


ONE_COPY, BATCH, HEAD_ROWS, HOIST, SLOTS = split_passes(True)


def test_batch_dynamic_runs_any_batch():
    s = surgery(suffix_model())
    batched = stream(3)
    with pytest.raises(Exception, match="cannot be reshaped"):  # the baked batch of 1 refuses 3 copies
        run(s.export_suffix(), batched)
    model = apply(s, BATCH).export_suffix()
    singles = [run(model, {k: v[i : i + 1] for k, v in batched.items()})[0] for i in range(3)]
    np.testing.assert_allclose(run(model, batched)[0], np.concatenate(singles), atol=1e-5)
    np.testing.assert_allclose(singles[0], run(s.export_suffix(), {k: v[:1] for k, v in batched.items()})[0], atol=1e-5)


def test_batch_dynamic_declines_a_contracted_batch():
    s = surgery(suffix_model(batch_mean=True))
    decline(s, Pass("batch-dynamic", batch_dynamic), "ReduceMean", "n_batch_mean")
    with pytest.raises(GraphStructureError, match="batch axis cannot be followed through ReduceMean"):
        run_passes(s, [BATCH])


@pytest.mark.parametrize("head", ["gemm", "matmul"])
def test_head_rows_keeps_the_logits(head):
    s = surgery(suffix_model(head=head))
    out = apply(s, BATCH, HEAD_ROWS)
    assert len(out.head_rows) == 2 and {n.name for n in out.suffix.nodes} >= set(out.head_rows)
    feeds, plain = stream(3), apply(s, BATCH).export_suffix()
    np.testing.assert_allclose(run(out.export_suffix(), feeds)[0], run(plain, feeds)[0], atol=1e-5)
    shapes = out.copy().shapes()  # the last block computes one row
    assert shapes["context_merged"] == (1, 1, D) and shapes["attn_out"] == (1, 1, D)


def test_head_rows_declines_mean_pooling():
    decline(surgery(suffix_model(pool="mean")), HEAD_ROWS, "mean pooling")


def test_hoist_moves_the_projections_into_the_prefix():
    s = surgery(suffix_model(), with_prefix=True)
    before = [s.export_prefix(), s.export_suffix()]
    out = apply(s, HOIST)
    assert out.masked == [projected_name(k) for k in range(3)]
    assert NORMED not in {t.name for t in out.suffix.inputs} | {t.name for t in out.prefix.outputs}
    matmuls = [[n.op_type for n in m.graph.node].count("MatMul") for m in (before[1], out.export_suffix())]
    assert matmuls[1] == matmuls[0] - 3
    tokens = {"tokens": np.random.default_rng(2).standard_normal((2, T, D), dtype=np.float32)}

    def composed(prefix, suffix):
        tapped = dict(zip([o.name for o in prefix.graph.output], run(prefix, tokens)))
        return np.concatenate([run(suffix, {k: v[i : i + 1] for k, v in tapped.items()})[0] for i in range(2)])

    np.testing.assert_allclose(composed(out.export_prefix(), out.export_suffix()), composed(*before), atol=1e-5)


def test_hoist_declines_when_no_constant_matmul_reads_f():
    decline(surgery(suffix_model(scaled_f=True), with_prefix=True), HOIST, "no MatMul", "read by Mul")


@pytest.mark.parametrize("kernel", ["3x3", "1x1"])
def test_slots_equal_the_plain_copies(kernel):
    s = surgery(suffix_model())
    plain = apply(s, BATCH).export_suffix()
    out = apply(s, BATCH, SLOTS)
    assert out.slots and {"slot_log_count", "token_slot"} <= {t.name for t in out.suffix.inputs}
    tapped, weights = stream(1), cell_weights(GRID, 1, kernel, True)
    expected = run(plain, copy_feeds(tapped, identity_slots(weights)))[0]
    compact = compact_slots(weights, 1)
    assert compact.token.shape[1] == {"3x3": 11, "1x1": 3}[kernel]  # U != T
    for tables in (compact, identity_slots(weights)):  # one graph runs either form
        got = run(out.export_suffix(), copy_feeds(tapped, tables, with_slots=True))[0]
        np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("kernel, later, probabilities", [("3x3", 0, True), ("1x1", 2, False), ("3x3", 1, True)])
def test_slots_through_run_the_masked_residual_and_later_rows_as_slots(kernel, later, probabilities):
    s = apply(surgery(suffix_model(later=later, probabilities=probabilities)), BATCH, SLOTS)
    (through,) = residual_passes("masked", 1)
    out = apply(s, through)
    (residual,) = [i for i in out.export_suffix().graph.input if i.name == RESIDUAL]
    assert [d.dim_param for d in residual.type.tensor_type.shape.dim[:2]] == ["batch", "slots"]
    tapped, weights = stream(1), cell_weights(GRID, 1, kernel, True)
    expected = run(s.export_suffix(), copy_feeds(tapped, identity_slots(weights), "masked", with_slots=True))[0]
    compact = compact_slots(weights, 1)
    got = run(out.export_suffix(), copy_feeds(tapped, compact, "masked", with_slots=True, slot_residual=True))[0]
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert residual_passes("unmasked", 1) == ()


def test_slots_through_declines_mean_pooling_and_leaves_a_suffix_without_slots_alone():
    (through,) = residual_passes("masked", 1)
    decline(apply(surgery(suffix_model(pool="mean")), BATCH, SLOTS), through, "mean pooling")
    decline(apply(surgery(suffix_model()), BATCH), through, "does not take slots")


def test_slots_declines_attention_without_softmax():
    decline(surgery(suffix_model(scores="Sigmoid")), SLOTS, "0 Softmax")


def test_float16_keeps_the_logits_within_1e_2():
    s = surgery(suffix_model())
    out = apply(s, *PRECISION_PASSES["float16"])
    model, feeds = out.export_suffix(), stream(1)
    assert any(i.data_type == TensorProto.FLOAT16 for i in model.graph.initializer)
    assert [i.type.tensor_type.elem_type for i in model.graph.output] == [TensorProto.FLOAT]
    expected = run(s.export_suffix(), feeds)[0]
    np.testing.assert_allclose(run(model, feeds)[0], expected, atol=1e-2 * np.abs(expected).max())
    assert PRECISION_PASSES["float32"] == ()


def test_all_split_passes_compose():
    """batch-dynamic, head-rows, hoist and slots together: compact copies give the plain model's logits."""
    s = surgery(suffix_model(), with_prefix=True)
    out, outcomes = run_passes(s, split_passes(True))
    assert [str(r) for r in outcomes] == ["batch-dynamic yes", "head-rows yes", "hoist yes", "slots yes"]
    x = {"tokens": np.random.default_rng(3).standard_normal((1, T, D), dtype=np.float32)}
    weights = cell_weights(GRID, 1, "3x3", False)
    prefix = out.export_prefix()
    tapped = dict(zip([o.name for o in prefix.graph.output], run(prefix, x)))
    got = run(out.export_suffix(), copy_feeds(tapped, compact_slots(weights, 1), with_slots=True))[0]
    plain = apply(surgery(suffix_model(), with_prefix=True), BATCH)
    base = dict(zip([RESIDUAL, NORMED], run(plain.export_prefix(), x)))
    np.testing.assert_allclose(got, run(plain.export_suffix(), copy_feeds(base, identity_slots(weights)))[0], atol=1e-5)


# the runner, with fake passes


def _plain() -> Surgery:
    return Surgery(gs.import_onnx(suffix_model()), suffix_model())


def _applies(s: Surgery) -> None:
    s.suffix.nodes.append(gs.Node("Identity", "extra", inputs=[s.suffix.outputs[0]], outputs=[gs.Variable("e")]))


def _mutates_then_declines(s: Surgery) -> None:
    s.suffix.nodes.clear()
    s.masked.append("other")
    s.head_rows.append("gather")
    raise NotApplicable("changed my mind")


def test_a_declining_pass_leaves_the_surgery_unchanged_and_a_required_one_stops():
    s = _plain()
    before = ops(s)
    out, outcomes = run_passes(s, [Pass("fickle", _mutates_then_declines)])
    assert outcomes == (Rewrite("fickle", False, "changed my mind"),)
    assert out is s and ops(out) == before and out.masked == [NORMED] and out.head_rows == []
    with pytest.raises(GraphStructureError, match="changed my mind"):
        run_passes(_plain(), [Pass("a", _applies), Pass("fickle", _mutates_then_declines, required=True)])


def test_outcomes_come_in_the_declared_order():
    s = _plain()
    s._shapes = {"x": (1,)}
    passes = [Pass("one", _applies, keeps_shapes=True), Pass("two", _mutates_then_declines), Pass("three", _applies)]
    out, outcomes = run_passes(s, passes)
    assert [(r.name, r.applied) for r in outcomes] == [("one", True), ("two", False), ("three", True)]
    assert ops(out) == ops(s) + ["Identity", "Identity"] and out._shapes is None  # "three" changed shapes
    kept, _ = run_passes(s, passes[:1])
    assert kept._shapes == {"x": (1,)}


def test_rewrite_str_and_declared_lists():
    assert str(Rewrite("hoist", True)) == "hoist yes"
    assert str(Rewrite("slots", False, "no Softmax")) == "slots no (no Softmax)"
    assert [p.name for p in split_passes(False)] == ["one-copy-per-run", "batch-dynamic"]
    assert [p.name for p in split_passes(True)][1:] == ["batch-dynamic", "head-rows", "hoist", "slots"]
    assert [p.run for p in split_passes(True)] == [one_copy_per_run, batch_dynamic, head_rows, hoist, slots]
    assert [p.required for p in split_passes(True)] == [False, True, False, False, False]
    assert [p.name for p in PRECISION_PASSES["float16"]] == ["float16"]
