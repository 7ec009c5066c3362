"""Property-based fuzzing of everything that reads a user's files: images, .npy tensors, split folders
and models. The only outcomes allowed are a result of the promised kind or a ReciproCamError.

CI runs a few fixed examples of each (seconds). A longer, random run:

    RECIPROCAM_FUZZ_EXAMPLES=2000 python -m pytest -q tests/test_fuzz.py
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reciprocam_onnx import Explainer
from reciprocam_onnx.errors import ImageError, ReciproCamError
from reciprocam_onnx.io.images import load_npy, preprocess
from tests.test_hostile import DEMO, STAR, png_header_only

LONG_RUN = int(os.environ.get("RECIPROCAM_FUZZ_EXAMPLES", "0"))


def budget(ci_examples: int):
    """``ci_examples`` fixed examples in CI; RECIPROCAM_FUZZ_EXAMPLES random ones when it is set."""
    return settings(
        max_examples=LONG_RUN or ci_examples,
        derandomize=not LONG_RUN,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


@st.composite
def mutated(draw, data: bytes) -> bytes:
    """``data`` truncated, with bytes changed (anywhere, or in its header), or with junk spliced in."""
    kind = draw(st.sampled_from(["truncate", "change", "header", "splice"]))
    if kind == "truncate":
        return data[: draw(st.integers(0, len(data) - 1))]
    if kind == "splice":
        at = draw(st.integers(0, len(data)))
        return data[:at] + draw(st.binary(min_size=1, max_size=64)) + data[at:]
    changed = bytearray(data)
    end = min(len(data), 64) if kind == "header" else len(data)
    for _ in range(draw(st.integers(1, 8))):
        changed[draw(st.integers(0, end - 1))] = draw(st.integers(0, 255))
    return bytes(changed)


def scratch_file(name: str, data: bytes) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="reciprocam-fuzz-"))
    path = folder / name
    path.write_bytes(data)
    return path


PNG = STAR.read_bytes()
JPEG = cv2.imencode(".jpg", cv2.imread(str(STAR)))[1].tobytes()
huge_header = st.builds(png_header_only, st.integers(1, 2**31 - 1), st.integers(1, 2**31 - 1))


@budget(40)
@given(data=st.one_of(st.binary(max_size=256), mutated(PNG), mutated(JPEG), huge_header))
def test_image_loader_returns_a_fitted_image_or_an_image_error(data):
    path = scratch_file("fuzz.png", data)
    try:
        tensor, fitted = preprocess(path, (224, 224))
    except ImageError:
        return
    finally:
        shutil.rmtree(path.parent)
    assert tensor.shape == (3, 224, 224) and tensor.dtype == np.float32 and np.isfinite(tensor).all()
    assert fitted.shape == (224, 224, 3) and fitted.dtype == np.uint8


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


NPY = npy_bytes(np.random.default_rng(0).standard_normal((3, 8, 8)).astype(np.float32))


@budget(40)
@given(data=st.one_of(st.binary(max_size=256), mutated(NPY)))
def test_npy_loader_returns_the_tensor_or_an_image_error(data):
    path = scratch_file("fuzz.npy", data)
    try:
        tensor = load_npy(path, (3, 8, 8))
    except ImageError:
        return
    finally:
        shutil.rmtree(path.parent)
    assert tensor.shape == (3, 8, 8) and tensor.dtype == np.float32


@pytest.fixture(scope="module")
def split_folder(tmp_path_factory) -> Path:
    from reciprocam_onnx.cli import main

    folder = tmp_path_factory.mktemp("fuzz") / "split"
    assert main(["split", str(DEMO), "-o", str(folder)]) == 0
    return folder


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63) | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=8,
)


@st.composite
def edited_split_json(draw, text: str) -> str:
    """split.json with one entry (or one entry of its "model") set to any JSON value, or its text mutated."""
    if draw(st.booleans()):
        return draw(mutated(text.encode("utf-8"))).decode("utf-8", errors="replace")
    data = json.loads(text)
    where = data["model"] if draw(st.booleans()) else data
    where[draw(st.sampled_from(sorted(where)))] = draw(JSON_VALUES)
    return json.dumps(data)


def explain_or_refuse(model) -> None:
    """Explain the star with ``model``: a map of the grid's shape, or a ReciproCamError."""
    try:
        explainer = Explainer(model)
        x, _ = explainer.info.preprocess(STAR)
        maps = explainer.explain(x[None]).maps
    except ReciproCamError:
        return
    assert maps.shape == (1, *explainer.info.grid) and np.isfinite(maps).all()


@budget(12)
@given(data=st.data())
def test_split_folder_reader_explains_or_refuses(data, split_folder):
    text = (split_folder / "split.json").read_text()
    folder = Path(tempfile.mkdtemp(prefix="reciprocam-fuzz-")) / "split"
    try:
        shutil.copytree(split_folder, folder)
        (folder / "split.json").write_text(data.draw(edited_split_json(text)))
        explain_or_refuse(folder)
    finally:
        shutil.rmtree(folder.parent)


@budget(12)
@given(data=mutated(DEMO.read_bytes()))
def test_model_loader_explains_or_refuses(data):
    path = scratch_file("fuzz.onnx", data)
    try:
        explain_or_refuse(path)
    finally:
        shutil.rmtree(path.parent)
