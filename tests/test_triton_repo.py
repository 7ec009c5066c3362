"""`reciprocam fuse --triton-repo`: a Triton model repository whose config parses as Triton's own
ModelConfig protobuf (tritonclient's model_config_pb2) and agrees with its graph; the wire tensors'
codecs; and the serve command's one-line refusals."""

from __future__ import annotations

import builtins
import struct
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from reciprocam_onnx import Explainer, fuse, open_explainer
from reciprocam_onnx.cli import main
from reciprocam_onnx.errors import RequestError
from reciprocam_onnx.serve.tensors import Tensor, from_list, from_raw, split_bytes, to_raw
from reciprocam_onnx.serve.triton import TYPES, config_pbtxt

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "shapes_vit.onnx"
ELEMENT_TYPES = {  # ONNX element types as Triton's configuration names them
    onnx.TensorProto.FLOAT: "TYPE_FP32",
    onnx.TensorProto.INT64: "TYPE_INT64",
    onnx.TensorProto.UINT8: "TYPE_UINT8",
}


def read_config(folder: Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse((folder / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())


@pytest.fixture(scope="module")
def repository(tmp_path_factory):
    folder = tmp_path_factory.mktemp("triton")
    assert main(["fuse", str(MODEL), "--triton-repo", str(folder), "--kernel", "1x1", "--max-batch-size", "4"]) == 0
    return folder / "shapes_vit"


def test_the_config_parses_and_agrees_with_the_graph(repository):
    config = read_config(repository)
    graph = onnx.load(str(repository / "1" / "model.onnx")).graph
    assert config.backend == "onnxruntime" and config.max_batch_size == 4 and config.HasField("dynamic_batching")
    assert [(g.kind, g.count) for g in config.instance_group] == [(model_config_pb2.ModelInstanceGroup.KIND_CPU, 1)]
    for declared, values in ((config.input, graph.input), (config.output, graph.output)):
        assert [d.name for d in declared] == [v.name for v in values]
        for entry, value in zip(declared, values):
            tensor = value.type.tensor_type
            assert model_config_pb2.DataType.Name(entry.data_type) == ELEMENT_TYPES[tensor.elem_type]
            dims = [d.dim_value for d in tensor.shape.dim]
            assert not tensor.shape.dim[0].HasField("dim_value")  # the batch axis is open
            assert list(entry.reshape.shape if entry.HasField("reshape") else entry.dims) == dims[1:]
    assert {o.name: o.label_filename for o in config.output}["scores"] == "labels.txt"
    labels = (repository / "labels.txt").read_text().splitlines()
    assert labels == list(Explainer(MODEL).info.model.labels)
    assert config.parameters["reciprocam.grid"].string_value == "[14, 14]"
    assert '"kernel": "1x1"' in config.parameters["reciprocam.options"].string_value


def test_the_model_gives_the_fused_graphs_outputs_and_scores(repository):
    images = np.random.default_rng(0).standard_normal((3, 3, 224, 224), dtype=np.float32)
    names = ["logits", "saliency", "saliency_u8", "scores", "target"]
    triton = dict(zip(names, _run(repository / "1" / "model.onnx", names, images)))
    fused = dict(zip(names[:3], _run(fuse(MODEL, kernel="1x1").SerializeToString(), names[:3], images)))
    for name in names[:3]:
        np.testing.assert_array_equal(triton[name], fused[name])
    explainer = Explainer(MODEL, kernel="1x1")
    np.testing.assert_allclose(triton["scores"], explainer.predict(images), atol=1e-6)
    np.testing.assert_array_equal(triton["target"], fused["logits"].argmax(1))


def test_a_preset_repository_runs_its_taps_and_says_so(tmp_path):
    """--preset reciprocam+: the four taps' combined map in the repository's graph, its scores softmax, and
    the preset among the config's facts."""
    assert main(["fuse", str(MODEL), "--triton-repo", str(tmp_path), "--name", "plus", "--preset", "reciprocam+"]) == 0
    config = read_config(tmp_path / "plus")
    assert config.parameters["reciprocam.preset"].string_value == '"reciprocam+"'
    images = np.random.default_rng(1).standard_normal((2, 3, 224, 224), dtype=np.float32)
    saliency, scores = _run(tmp_path / "plus" / "1" / "model.onnx", ["saliency", "scores"], images)
    expected = open_explainer(MODEL, preset="reciprocam+").explain(images, all_classes=True)
    np.testing.assert_allclose(saliency, expected.every, atol=1e-4)
    np.testing.assert_allclose(scores, expected.scores, atol=1e-6)


def _run(model, names: list[str], images: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(str(model) if isinstance(model, Path) else model, providers=["CPUExecutionProvider"])
    return session.run(names, {"input": images})


def test_gpu_instances_and_names(tmp_path, capsys):
    assert (
        main(["fuse", str(MODEL), "--triton-repo", str(tmp_path), "--name", "demo", "--gpu", "--instances", "2"]) == 0
    )
    config = read_config(tmp_path / "demo")
    assert config.name == "demo"
    assert [(g.kind, g.count) for g in config.instance_group] == [(model_config_pb2.ModelInstanceGroup.KIND_GPU, 2)]
    capsys.readouterr()
    assert main(["fuse", str(MODEL), "--triton-repo", str(tmp_path), "--name", "a/b"]) == 1
    assert main(["fuse", str(MODEL)]) == 1
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 2 and "letters, digits" in errors[0] and "--triton-repo" in errors[1]
    assert not (tmp_path / "a").exists()


def test_the_pbtxt_writer_quotes_what_protobuf_reads_back():
    config = {
        "name": "m",
        "max_batch_size": 0,
        "input": [{"name": 'in "x"', "data_type": TYPES["BYTES"], "dims": [-1]}],
        "parameters": {"k": {"string_value": 'a "quoted" \\ back\nslash, étoile'}},
    }
    parsed = text_format.Parse(config_pbtxt(config), model_config_pb2.ModelConfig())
    assert parsed.input[0].name == 'in "x"' and parsed.input[0].data_type == model_config_pb2.TYPE_STRING
    assert parsed.parameters["k"].string_value == config["parameters"]["k"]["string_value"]


def test_wire_tensors_round_trip_and_refuse_what_does_not_fit():
    scores = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert np.array_equal(from_raw("x", "FP32", [2, 3], to_raw(Tensor("x", "FP32", scores))), scores)
    files = np.array([b"\x89PNG", b"", "text"], dtype=object)
    assert split_bytes("x", to_raw(Tensor("x", "BYTES", files))) == [b"\x89PNG", b"", b"text"]
    assert np.array_equal(from_list("t", "INT64", [2], [[3], [4]]), [3, 4])
    for call, words in (
        (lambda: from_raw("x", "FP32", [2, 3], b"\0" * 20), "24"),
        (lambda: from_raw("x", "FP99", [1], b""), "unknown datatype"),
        (lambda: from_raw("x", "FP32", [-1, 3], b""), "whole numbers"),
        (lambda: from_raw("x", "FP32", [2**20, 2**20, 2**20], b""), "more elements"),
        (lambda: from_raw("x", "BYTES", [1], struct.pack("<I", 9) + b"abc"), "runs past"),
        (lambda: from_raw("x", "BYTES", [2], struct.pack("<I", 1) + b"a"), "1 BYTES elements"),
        (lambda: from_list("x", "FP32", [2], [1.0, "a"]), "not a list"),
        (lambda: from_list("x", "FP32", [3], [1.0, 2.0]), "2 values"),
        (lambda: from_list("x", "FP16", [1], [1.0]), "binary"),
    ):
        with pytest.raises(RequestError, match=words):
            call()


def test_serve_without_its_extra_says_how_to_install_it(monkeypatch, capsys):
    real = builtins.__import__

    def without_uvicorn(name, *args, **kwargs):
        if name.split(".")[0] == "uvicorn":
            raise ImportError(f"No module named {name!r}", name=name)
        return real(name, *args, **kwargs)

    monkeypatch.delitem(__import__("sys").modules, "reciprocam_onnx.serve.server", raising=False)
    monkeypatch.setattr(builtins, "__import__", without_uvicorn)
    assert main(["serve", str(MODEL)]) == 1
    assert capsys.readouterr().err.strip() == 'error: serving needs uvicorn: pip install "reciprocam-onnx[serve]"'
