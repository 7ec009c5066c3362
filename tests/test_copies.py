"""The ONNX copy builder (copies/build.py) equals its numpy definition (copies/reference.py)."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs
import onnxruntime as ort
import pytest

from reciprocam_onnx.contract import NORMED, RESIDUAL, SLOT_LOG_COUNT, TOKEN_SLOT, projected_name
from reciprocam_onnx.copies.build import CopyTables, copy_inputs
from reciprocam_onnx.copies.masks import cell_weights
from reciprocam_onnx.copies.reference import copy_feeds
from reciprocam_onnx.copies.slots import Slots, compact_slots, identity_slots
from reciprocam_onnx.graph.builder import OpBuilder
from reciprocam_onnx.options import KERNELS, RESIDUALS

T, D, K, GRID = 10, 8, 3, (3, 3)
PROJECTED = projected_name(0)
WIDTHS = {RESIDUAL: D, NORMED: D, PROJECTED: K}
TABLES = ("table_token", "table_weight", "table_log_count", "table_token_slot")


def modes(with_slots: bool) -> list[tuple[str, str, bool]]:
    """(label, residual, slot_residual): both residuals, and a masked one as slots where the suffix takes slots."""
    found = [(residual, residual, False) for residual in RESIDUALS]
    return found + [("masked-slots", RESIDUALS[1], True)] if with_slots else found


def builder_model(one_image: bool, with_slots: bool, floats: str = "float32"):
    """Inputs: the tapped tensors [N, T, k] (of ``floats``) and the slot tables; outputs: copy_inputs for every
    residual mode."""
    graph = gs.Graph(opset=17)
    b = OpBuilder(graph, "test/", floats)
    tapped = {name: gs.Variable(name, np.dtype(floats), ["images", T, width]) for name, width in WIDTHS.items()}
    tables = [gs.Variable(TABLES[0], np.int64, ["n", "slots"]), gs.Variable(TABLES[1], np.float32, ["n", "slots"])]
    if with_slots:
        tables += [gs.Variable(TABLES[2], np.float32, ["n", "slots"]), gs.Variable(TABLES[3], np.int64, ["n", T])]
    graph.inputs = [*tapped.values(), *tables]
    for label, residual, slot_residual in modes(with_slots):
        built = copy_inputs(b, tapped, WIDTHS, CopyTables(*tables), residual, one_image, slot_residual)
        for name, tensor in built.items():  # name every output, even one that is a graph input
            dtype = tensor.dtype or np.dtype(floats)
            graph.outputs.append(b.op("Identity", [tensor], out=gs.Variable(f"{label}/{name}", dtype)))
    model = gs.export_onnx(graph.cleanup().toposort())
    model.ir_version = 8  # onnx 1.23 writes IR 14, which onnxruntime 1.31 refuses
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def table_feeds(slots: Slots, with_slots: bool) -> dict[str, np.ndarray]:
    values = (slots.token, slots.weight, slots.log_count, slots.token_slot)
    return dict(zip(TABLES[: 4 if with_slots else 2], values))


def tapped_values(images: int, floats: str = "float32") -> dict[str, np.ndarray]:
    rng = np.random.default_rng(images)
    return {name: rng.standard_normal((images, T, width)).astype(floats) for name, width in WIDTHS.items()}


def slot_forms(with_slots: bool):
    """(label, Slots) for every kernel and cls_token; compact ones only for a suffix that takes slots."""
    for kernel in KERNELS:
        for cls_token in (True, False):
            weights = cell_weights(GRID, 1, kernel, cls_token)
            yield f"{kernel}/cls={cls_token}/identity", identity_slots(weights)
            if with_slots:
                yield f"{kernel}/cls={cls_token}/compact", compact_slots(weights, 1)


@pytest.mark.parametrize(
    "images, one_image, floats",
    [(1, True, "float32"), (1, False, "float32"), (2, False, "float32"), (1, True, "float16")],
)
@pytest.mark.parametrize("with_slots", [False, True])
def test_copy_inputs_equal_copy_feeds(images, one_image, floats, with_slots):
    session = builder_model(one_image, with_slots, floats)
    names = [o.name for o in session.get_outputs()]
    tapped = tapped_values(images, floats)
    checked = 0
    tolerance = 1e-6 if floats == "float32" else 2e-3
    for label, slots in slot_forms(with_slots):
        got = dict(zip(names, session.run(None, {**tapped, **table_feeds(slots, with_slots)})))
        for mode, residual, slot_residual in modes(with_slots):
            want = copy_feeds(tapped, slots, residual, with_slots, slot_residual)
            built = {name.split("/", 1)[1]: value for name, value in got.items() if name.startswith(f"{mode}/")}
            assert set(built) == set(want), label
            for name, value in want.items():
                if name == RESIDUAL and residual == "unmasked" and images == 1 and not one_image:
                    value = np.repeat(value, len(slots), axis=0)  # reference: [1, T, D], broadcast by the suffix
                assert built[name].shape == value.shape and built[name].dtype == value.dtype, (label, mode, name)
                np.testing.assert_allclose(built[name], value, rtol=0, atol=tolerance, err_msg=f"{label} {mode} {name}")
                checked += 1
    copies = GRID[0] * GRID[1]
    assert checked == sum(1 for _ in slot_forms(with_slots)) * len(modes(with_slots)) * (3 + 2 * with_slots)
    assert got[f"masked/{NORMED}"].shape[0] == images * copies  # image-major copies of every image


def test_copies_are_image_major_and_masked():
    """Row i*n + c is copy c of image i: its F rows are image i's rows scaled by copy c's weights."""
    session = builder_model(False, True)
    tapped, slots = tapped_values(2), compact_slots(cell_weights(GRID, 1, "3x3", True), 1)
    got = dict(zip([o.name for o in session.get_outputs()], session.run(None, {**tapped, **table_feeds(slots, True)})))
    n = len(slots)
    for image, copy in ((0, 0), (1, 4), (1, n - 1)):
        row = got[f"masked/{NORMED}"][image * n + copy]
        np.testing.assert_allclose(row, tapped[NORMED][image, slots.token[copy]] * slots.weight[copy, :, None])
        residual = got[f"masked/{RESIDUAL}"][image * n + copy]
        np.testing.assert_allclose(residual, tapped[RESIDUAL][image] * slots.token_weight[copy, :, None])
        np.testing.assert_array_equal(got[f"unmasked/{TOKEN_SLOT}"][image * n + copy], slots.token_slot[copy])
        np.testing.assert_array_equal(got[f"unmasked/{SLOT_LOG_COUNT}"][image * n + copy], slots.log_count[copy])
    np.testing.assert_array_equal(got[f"unmasked/{RESIDUAL}"][n + 2], tapped[RESIDUAL][1])
