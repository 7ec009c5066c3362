"""`reciprocam serve` on the demo model, queried with clients this project did not write: NVIDIA's
tritonclient over REST (binary tensors) and gRPC, and httpx for KServe's v1 verbs. Answers equal the
Explainer's (and `reciprocam explain`'s for image files); bad requests get their status and one line,
and the server keeps serving."""

from __future__ import annotations

import base64
import concurrent.futures
import json
import struct
from pathlib import Path

import cv2
import httpx
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from reciprocam_onnx import Explainer
from reciprocam_onnx.cli import main
from reciprocam_onnx.engine.scores import maps_u8
from tests.servers import Server

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "shapes_vit.onnx"
NAME = "shapes_vit"
FILES = [ROOT / "examples" / "images" / f"{name}.png" for name in ("star", "ring", "crescent")]
MAX_PIXELS = 1_000_000  # the server's RECIPROCAM_MAX_IMAGE_PIXELS, for the over-the-limit case
MAX_BODY = 4_000_000
MAX_QUEUE = 4


@pytest.fixture(scope="module")
def server():
    started = Server(
        str(MODEL),
        "--max-queue",
        str(MAX_QUEUE),
        "--max-images",
        "4",
        "--max-body-bytes",
        str(MAX_BODY),
        env={"RECIPROCAM_MAX_IMAGE_PIXELS": str(MAX_PIXELS)},
    )
    yield started
    assert started.terminate() == 0
    assert not [line for line in started.errors if "Traceback" in line], started.errors


@pytest.fixture(scope="module")
def explainer():
    return Explainer(MODEL)


@pytest.fixture(scope="module")
def images(explainer):
    return np.stack([explainer.info.preprocess(path)[0] for path in FILES])


def http_client(server) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(server.http, network_timeout=120)


def grpc_client(server) -> grpcclient.InferenceServerClient:
    return grpcclient.InferenceServerClient(server.grpc)


def infer(client, module, array: np.ndarray, name: str = "input", outputs=(), targets=None, **kwargs):
    """One inference through a tritonclient module (http or grpc), binary tensors both ways."""
    datatype = "BYTES" if array.dtype == object else "FP32"
    tensor = module.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array, **({"binary_data": True} if module is httpclient else {}))
    inputs = [tensor]
    if targets is not None:
        target = module.InferInput("target", [len(targets)], "INT64")
        target.set_data_from_numpy(np.asarray(targets, np.int64))
        inputs.append(target)
    requested = [module.InferRequestedOutput(output) for output in outputs] or None
    return client.infer(NAME, inputs, outputs=requested, **kwargs)


def good_request(server, images, explainer) -> None:
    """A correct request right after a bad one still gets the right answer."""
    answer = infer(http_client(server), httpclient, images[:1], outputs=("saliency",))
    np.testing.assert_allclose(answer.as_numpy("saliency"), explainer.explain(images[:1]).maps, atol=1e-6)


@pytest.mark.parametrize("module", [httpclient, grpcclient], ids=["rest", "grpc"])
def test_answers_equal_the_explainers(server, explainer, images, module):
    client = http_client(server) if module is httpclient else grpc_client(server)
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(NAME)
    expected = explainer.explain(images)
    answer = infer(client, module, images)
    np.testing.assert_allclose(answer.as_numpy("scores"), expected.scores, atol=1e-6)
    np.testing.assert_array_equal(answer.as_numpy("target"), expected.targets)
    np.testing.assert_allclose(answer.as_numpy("saliency"), expected.maps, atol=1e-6)
    np.testing.assert_array_equal(answer.as_numpy("saliency_u8"), maps_u8(answer.as_numpy("saliency")))
    chosen = [5, 0, 9]
    given = infer(client, module, images, targets=chosen, outputs=("target", "saliency"))
    np.testing.assert_array_equal(given.as_numpy("target"), chosen)
    np.testing.assert_allclose(given.as_numpy("saliency"), explainer.explain(images, chosen).maps, atol=1e-6)
    every = infer(client, module, images, outputs=("saliency",), parameters={"all_classes": True})
    np.testing.assert_allclose(every.as_numpy("saliency"), explainer.explain_all(images), atol=1e-6)
    scores_only = infer(client, module, images, outputs=("scores",))
    np.testing.assert_allclose(scores_only.as_numpy("scores"), expected.scores, atol=1e-6)


def test_request_ids_are_echoed_or_made(server, images):
    client = http_client(server)
    assert (
        infer(client, httpclient, images[:1], outputs=("target",), request_id="abc-1").get_response()["id"] == "abc-1"
    )
    made = infer(client, httpclient, images[:1], outputs=("target",)).get_response()["id"]  # tritonclient sends none
    assert made and made != "abc-1"
    assert (
        infer(grpc_client(server), grpcclient, images[:1], outputs=("target",), request_id="g-7").get_response().id
        == "g-7"
    )
    reply = httpx.get(f"{server.url}/v2/health/ready", headers={"x-request-id": "probe-3"})
    assert reply.headers["x-request-id"] == "probe-3"


def test_image_files_equal_reciprocam_explain(server, tmp_path, capsys):
    assert main(["explain", str(MODEL), *map(str, FILES), "-o", str(tmp_path)]) == 0
    capsys.readouterr()
    files = np.array([path.read_bytes() for path in FILES], dtype=object)
    for client, module in ((http_client(server), httpclient), (grpc_client(server), grpcclient)):
        answer = infer(client, module, files, name="image_bytes", parameters={"overlay": True})
        for k, path in enumerate(FILES):
            np.testing.assert_allclose(
                answer.as_numpy("saliency")[k], np.load(tmp_path / f"{path.stem}.map.npy"), atol=1e-6
            )
            served = cv2.imdecode(np.frombuffer(answer.as_numpy("overlay")[k], np.uint8), cv2.IMREAD_COLOR)
            written = cv2.imread(str(tmp_path / f"{path.stem}.overlay.png"))
            assert np.abs(served.astype(int) - written).max() <= 1


def test_metadata_and_config_describe_what_infer_returns(server, images):
    client = http_client(server)
    metadata = client.get_model_metadata(NAME)
    answer = infer(client, httpclient, images[:2], parameters={"overlay": True}).get_response()
    listed = {o["name"]: o for o in metadata["outputs"]}
    for output in answer["outputs"]:
        spec = listed[output["name"]]
        assert output["datatype"] == spec["datatype"]
        assert output["shape"] == [2, *spec["shape"][1:]]
    assert [i["name"] for i in metadata["inputs"]] == ["input", "image_bytes", "target"]
    assert metadata["inputs"][0]["shape"] == [-1, 3, 224, 224]
    facts = metadata["parameters"]
    assert facts["grid"] == [14, 14] and facts["classes"] == 10 and facts["labels"][3] == "star"
    grpc_metadata = grpc_client(server).get_model_metadata(NAME)
    assert [(o.name, o.datatype, list(o.shape)) for o in grpc_metadata.outputs] == [
        (o["name"], o["datatype"], o["shape"]) for o in metadata["outputs"]
    ]
    for config in (client.get_model_config(NAME), grpc_client(server).get_model_config(NAME, as_json=True)["config"]):
        labels = json.loads(config["parameters"]["reciprocam.labels"]["string_value"])
        assert labels == facts["labels"]
        assert [o["name"] for o in config["output"]] == [o["name"] for o in metadata["outputs"]]
    assert client.get_server_metadata()["name"] == "reciprocam-onnx"


def test_classification_extension_lists_the_top_classes(server, explainer, images):
    expected = explainer.predict(images)
    for client, module in ((http_client(server), httpclient), (grpc_client(server), grpcclient)):
        output = module.InferRequestedOutput("scores", class_count=3)
        tensor = module.InferInput("input", list(images.shape), "FP32")
        tensor.set_data_from_numpy(images)
        rows = client.infer(NAME, [tensor], outputs=[output]).as_numpy("scores")
        assert rows.shape == (3, 3)
        for row, scores in zip(rows, expected):
            entries = [entry.decode().split(":") for entry in row]
            assert [int(index) for _, index, _ in entries] == list(np.argsort(-scores)[:3])
            assert all(abs(float(value) - scores[int(index)]) < 1e-6 for value, index, _ in entries)
            assert entries[0][2] == explainer.info.model.labels[int(entries[0][1])]


def test_v1_predict_and_explain(server, explainer, images):
    body = {"instances": [{"image_bytes": {"b64": base64.b64encode(path.read_bytes()).decode()}} for path in FILES]}
    explained = httpx.post(f"{server.url}/v1/models/{NAME}:explain", json=body, timeout=120)
    assert explained.status_code == 200, explained.text
    expected = explainer.explain(images)
    for entry, target, map_ in zip(explained.json()["explanations"], expected.targets, expected.maps):
        assert entry["target"] == target and entry["label"] == explainer.info.model.labels[target]
        assert entry["grid"] == [14, 14]
        np.testing.assert_allclose(np.array(entry["saliency"]), map_, atol=1e-6)
    tensors = {"instances": [{"tensor": images[0].tolist(), "target": 1}], "parameters": {"top_k": 2}}
    predicted = httpx.post(f"{server.url}/v1/models/{NAME}:predict", content=json.dumps(tensors), timeout=120)
    entry = predicted.json()["predictions"][0]  # no content type: still JSON
    assert entry["target"] == 1 and len(entry["top_k"]) == 2
    assert entry["top_k"][0]["class"] == int(expected.targets[0])
    assert abs(entry["top_k"][0]["score"] - expected.scores[0, expected.targets[0]]) < 1e-6
    assert httpx.get(f"{server.url}/v1/models/{NAME}").json() == {"name": NAME, "ready": True}


def test_the_triton_repository_answers_as_the_server_does_with_all_classes(server, images, tmp_path, capsys):
    """The same outputs, by name and value, from Triton's model.onnx (run in ONNX Runtime here: no Triton
    runs on this machine) and from `reciprocam serve` asked for all classes."""
    assert main(["fuse", str(MODEL), "--triton-repo", str(tmp_path)]) == 0
    capsys.readouterr()
    session = ort.InferenceSession(str(tmp_path / NAME / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    names = ["scores", "target", "saliency", "saliency_u8"]
    triton = dict(zip(names, session.run(names, {"input": images})))
    served = infer(http_client(server), httpclient, images, outputs=names, parameters={"all_classes": True})
    np.testing.assert_allclose(served.as_numpy("scores"), triton["scores"], atol=1e-6)
    np.testing.assert_array_equal(served.as_numpy("target"), triton["target"])
    picked = np.arange(len(images)), triton["target"]
    # the fused graph computes the maps in float32 (engine/fused_graph.py), the Explainer its softmax in float64:
    # on this confident model 1.1e-4 apart for each image's class, more for the unlikely classes' maps
    np.testing.assert_allclose(served.as_numpy("saliency")[picked], triton["saliency"][picked], atol=2e-4)
    np.testing.assert_allclose(served.as_numpy("saliency"), triton["saliency"], atol=1e-3)
    assert np.abs(served.as_numpy("saliency_u8").astype(int) - triton["saliency_u8"]).max() <= 1


def _binary(name: str, datatype: str, shape: list[int], raw: bytes, **extra) -> tuple[bytes, dict]:
    head = json.dumps(
        {
            "inputs": [
                {"name": name, "datatype": datatype, "shape": shape, "parameters": {"binary_data_size": len(raw)}}
            ],
            **extra,
        }
    ).encode()
    return head + raw, {"Inference-Header-Content-Length": str(len(head))}


def _files(*blobs: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(b)) + b for b in blobs)


def _png(height: int, width: int) -> bytes:
    return cv2.imencode(".png", np.zeros((height, width, 3), np.uint8))[1].tobytes()


IMAGE = np.zeros((1, 3, 224, 224), np.float32)
NAN = IMAGE.copy()
NAN[0, 1, 2, 3] = np.nan
BAD_REST = {  # case: (route, body, headers, status, words of the one-line answer)
    "wrong datatype": (
        "infer",
        *_binary("input", "INT32", [1, 3, 224, 224], IMAGE.astype(np.int32).tobytes()),
        400,
        "FP32",
    ),
    "wrong shape": (
        "infer",
        *_binary("input", "FP32", [1, 3, 112, 112], IMAGE[..., :112, :112].tobytes()),
        400,
        "shape",
    ),
    "data short of the shape": ("infer", *_binary("input", "FP32", [2, 3, 224, 224], IMAGE.tobytes()), 400, "bytes"),
    "NaN": ("infer", *_binary("input", "FP32", [1, 3, 224, 224], NAN.tobytes()), 400, "NaN"),
    "undecodable bytes": ("infer", *_binary("image_bytes", "BYTES", [1], _files(b"not an image")), 400, "cannot read"),
    "over the pixel limit": ("infer", *_binary("image_bytes", "BYTES", [1], _files(_png(1100, 1000))), 400, "pixels"),
    "target out of range": (
        "infer",
        json.dumps(
            {
                "inputs": [
                    {
                        "name": "image_bytes",
                        "datatype": "BYTES",
                        "shape": [1],
                        "data": [base64.b64encode(_png(64, 64)).decode()],
                    },
                    {"name": "target", "datatype": "INT64", "shape": [1], "data": [10]},
                ]
            }
        ).encode(),
        {},
        400,
        "0..9",
    ),
    "unknown output": (
        "infer",
        *_binary("input", "FP32", [1, 3, 224, 224], IMAGE.tobytes(), outputs=[{"name": "logits"}]),
        400,
        "unknown output",
    ),
    "unknown input": ("infer", *_binary("pixels", "FP32", [1, 3, 224, 224], IMAGE.tobytes()), 400, "unknown input"),
    "too many images": (
        "infer",
        *_binary("input", "FP32", [5, 3, 224, 224], np.zeros((5, 3, 224, 224), np.float32).tobytes()),
        400,
        "per request",
    ),
    "malformed JSON": ("infer", b'{"inputs": [', {"content-type": "application/json"}, 400, "not JSON"),
    "a parameter of the wrong type": (
        "infer",
        *_binary("input", "FP32", [1, 3, 224, 224], IMAGE.tobytes(), parameters={"all_classes": "yes"}),
        400,
        "all_classes",
    ),
    "oversized body": ("infer", *_binary("input", "FP32", [2, 3, 224, 224], b"\0" * (MAX_BODY + 1)), 413, "limit"),
    "v1 malformed JSON": ("v1", b"{", {}, 400, "not JSON"),
    "v1 bad base64": ("v1", json.dumps({"instances": [{"image_bytes": {"b64": "***"}}]}).encode(), {}, 400, "base64"),
    "unknown model": ("other", b"{}", {}, 404, "unknown model"),
}


@pytest.mark.parametrize("case", sorted(BAD_REST))
def test_a_bad_rest_request_gets_its_status_and_one_line(server, explainer, images, case):
    route, body, headers, status, words = BAD_REST[case]
    path = {"infer": f"/v2/models/{NAME}/infer", "v1": f"/v1/models/{NAME}:explain", "other": "/v2/models/other/infer"}
    reply = httpx.post(server.url + path[route], content=body, headers=headers, timeout=60)
    assert reply.status_code == status, reply.text
    message = reply.json()["error"]
    assert words in message and "\n" not in message and "Traceback" not in message
    good_request(server, images, explainer)


def test_a_bad_grpc_request_gets_its_status_and_one_line(server, explainer, images):
    client = grpcclient.InferenceServerClient(server.grpc)
    for array, datatype, status, words in (
        (IMAGE.astype(np.int32), "INT32", "INVALID_ARGUMENT", "FP32"),
        (NAN, "FP32", "INVALID_ARGUMENT", "NaN"),
        (np.zeros((4, 3, 224, 448), np.float32), "FP32", "RESOURCE_EXHAUSTED", ""),  # above the message limit
    ):
        tensor = grpcclient.InferInput("input", list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        with pytest.raises(InferenceServerException) as raised:
            client.infer(NAME, [tensor])
        assert raised.value.status() == f"StatusCode.{status}" and words in raised.value.message()
        assert "\n" not in raised.value.message()
        good_request(server, images, explainer)
    with pytest.raises(InferenceServerException) as raised:
        client.get_inference_statistics(NAME)
    assert raised.value.status() == "StatusCode.UNIMPLEMENTED"


def test_past_the_queue_limit_requests_get_503_and_the_server_recovers(server, explainer, images):
    """16 requests of 4 images at once: one runs (seconds), one fits the queue of 4 images, the rest are
    answered 503 at once."""
    batch = np.concatenate([images, images[:1]])

    def one(_):
        body, headers = _binary("input", "FP32", list(batch.shape), batch.tobytes(), outputs=[{"name": "saliency"}])
        return httpx.post(f"{server.url}/v2/models/{NAME}/infer", content=body, headers=headers, timeout=300)

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        replies = list(pool.map(one, range(16), timeout=600))
    statuses = sorted(reply.status_code for reply in replies)
    assert set(statuses) == {200, 503} and statuses.count(200) >= 2, statuses
    busy = next(reply for reply in replies if reply.status_code == 503).json()["error"]
    assert "busy" in busy and "--max-queue" in busy
    expected = explainer.explain(batch).maps
    for reply in (reply for reply in replies if reply.status_code == 200):
        np.testing.assert_allclose(np.reshape(reply.json()["outputs"][0]["data"], expected.shape), expected, atol=1e-6)
    good_request(server, images, explainer)
