"""`reciprocam serve` under load, on SIGTERM, before it is ready, and its batcher: a small random ViT
(tests/zoo.py's sensitised blocks, 64x64 input, 4x4 grid) so that hundreds of requests take seconds."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from export.export_vit import export_onnx
from reciprocam_onnx import Explainer, OptionError
from reciprocam_onnx.errors import RequestError
from reciprocam_onnx.serve.batcher import Batcher, Work
from reciprocam_onnx.serve.limits import Limits
from tests.servers import Server
from tests.zoo import Family, _timm, _timm_blocks, _timm_heads, make_model

LABELS = [f"class-{k}" for k in range(10)]
CLIENTS, REQUESTS = 8, 25
MEMORY_GROWTH_MB = 150  # what the load may add to the server's resident memory


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    family = Family("tiny-64", _timm("vit_tiny_patch16_224", depth=3, img_size=64), _timm_blocks, _timm_heads, (64, 64))
    path = tmp_path_factory.mktemp("tiny") / "tiny.onnx"
    return export_onnx(make_model(family), path, (64, 64), metadata={"labels": LABELS})


@pytest.fixture(scope="module")
def server(tiny):
    started = Server(str(tiny), "--name", "tiny")
    yield started
    assert started.terminate() == 0


def images(seed: int, count: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((count, 3, 64, 64), dtype=np.float32)


def ask(server, use_grpc: bool, array: np.ndarray, targets: list[int] | None):
    module = grpcclient if use_grpc else httpclient
    client = module.InferenceServerClient(server.grpc if use_grpc else server.http)
    inputs = [module.InferInput("input", list(array.shape), "FP32")]
    inputs[0].set_data_from_numpy(array)
    if targets is not None:
        inputs.append(module.InferInput("target", [len(targets)], "INT64"))
        inputs[1].set_data_from_numpy(np.array(targets, np.int64))
    answer = client.infer("tiny", inputs, outputs=[module.InferRequestedOutput(n) for n in ("target", "saliency")])
    return answer.as_numpy("target"), answer.as_numpy("saliency")


def test_concurrent_clients_get_the_serial_answers_within_bounded_memory(server, tiny):
    """8 clients x 25 requests (REST and gRPC, 1 to 3 images, targets given or not), all at once: every
    answer is the one Explainer.explain gives that request alone."""
    explainer = Explainer(tiny)
    plan = [
        (
            client,
            k,
            images(100 * client + k, 1 + (client + k) % 3),
            [k % 10] * (1 + (client + k) % 3) if k % 4 == 0 else None,
        )
        for client in range(CLIENTS)
        for k in range(REQUESTS)
    ]
    expected = {(c, k): explainer.explain(x, t) for c, k, x, t in plan}
    ask(server, False, images(0, 1), None)  # warmed up: its sessions and arenas exist
    before = server.rss_mb()

    def client(number: int) -> list:
        return [((c, k), ask(server, (c + k) % 2 == 1, x, t)) for c, k, x, t in plan if c == number]

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(CLIENTS) as pool:
        answers = [pair for part in pool.map(client, range(CLIENTS), timeout=600) for pair in part]
    seconds = time.monotonic() - started
    assert len(answers) == CLIENTS * REQUESTS
    for key, (targets, maps) in answers:
        np.testing.assert_array_equal(targets, expected[key].targets)
        np.testing.assert_allclose(maps, expected[key].maps, atol=1e-6, err_msg=str(key))
    peak = server.peak_rss_mb()
    print(f"{len(answers)} requests in {seconds:.1f} s; server RSS {before:.0f} MB before, peak {peak:.0f} MB")
    assert peak - before < MEMORY_GROWTH_MB


def test_sigterm_finishes_the_request_in_flight_and_exits_0(tmp_path):
    """The demo model, whose 8 images take seconds: SIGTERM lands while they are computed."""
    from tests.test_serve import MODEL

    server = Server(str(MODEL))
    try:
        array = np.random.default_rng(7).standard_normal((8, 3, 224, 224), dtype=np.float32)
        done: dict = {}

        def request() -> None:
            client = httpclient.InferenceServerClient(server.http, network_timeout=120)
            tensor = httpclient.InferInput("input", list(array.shape), "FP32")
            tensor.set_data_from_numpy(array)
            done["maps"] = client.infer("shapes_vit", [tensor]).as_numpy("saliency")
            done["at"] = time.monotonic()

        thread = threading.Thread(target=request)
        thread.start()
        time.sleep(0.5)  # the request is being computed
        signalled = time.monotonic()
        code = server.terminate()
        thread.join(60)
        assert code == 0 and done["at"] > signalled
        np.testing.assert_allclose(done["maps"], Explainer(MODEL).explain(array).maps, atol=1e-6)
        assert server.lines[-2:] == ["stopping: finishing the requests in flight", "stopped"]
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{server.url}/v2/health/live")
    finally:
        server.kill()


@pytest.mark.parametrize("form", ["fused graph", "fused preset", "split folder"])
def test_a_fused_graph_or_a_split_folder_is_served_as_it_explains(tiny, tmp_path, form):
    from reciprocam_onnx import fuse, open_explainer, save_split, split_model

    if form.startswith("fused"):
        source = tmp_path / "tiny.fused.onnx"
        changes = {"preset": "reciprocam+"} if form == "fused preset" else {"kernel": "1x1"}
        source.write_bytes(fuse(tiny, **changes).SerializeToString())
    else:
        source = save_split(split_model(tiny, -1), tmp_path / "split")
    server = Server(str(source), "--name", "tiny")
    try:
        array = images(5, 3)
        targets, maps = ask(server, form == "split folder", array, [1, 2, 3])
        expected = open_explainer(source).explain(array, [1, 2, 3])
        np.testing.assert_array_equal(targets, [1, 2, 3])
        np.testing.assert_allclose(maps, expected.maps, atol=1e-6)
        facts = httpclient.InferenceServerClient(server.http).get_model_metadata("tiny")["parameters"]
        assert facts["labels"] == LABELS and facts["grid"] == [4, 4]
        key, value = {"fused graph": ("kernel", "1x1"), "fused preset": ("block", 1)}.get(form, ("block", 2))
        assert facts["options"][key] == value  # a preset's: its first tap's
        assert facts["preset"] == ("reciprocam+" if form == "fused preset" else None)
    finally:
        assert server.terminate() == 0


def test_a_port_in_use_is_one_line_and_exit_1(server, tiny):
    from tests.test_cli import run_cli

    port = server.http.rsplit(":", 1)[1]
    result = run_cli("serve", str(tiny), "--http-port", port, "--no-grpc")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [result.stderr.strip()] and "cannot listen" in result.stderr


def test_not_ready_until_loaded():
    """Before the model is split and verified: live, not ready, and model routes answer 503."""
    from starlette.testclient import TestClient

    from reciprocam_onnx.serve.rest import rest_app
    from reciprocam_onnx.serve.service import ExplainService

    service = ExplainService("unused.onnx", "m")
    with TestClient(rest_app(service)) as client:
        assert client.get("/v2/health/live").status_code == 200
        assert client.get("/v2/health/ready").status_code == 503
        reply = client.post("/v2/models/m/infer", content=b"{}")
        assert reply.status_code == 503 and "loading" in reply.json()["error"]
        assert client.get("/v2/models/m/ready").status_code == 503


class Recording:
    """An explainer stand-in that records the batch of every call and fails on a NaN image."""

    def __init__(self):
        self.calls: list[tuple[str, int]] = []
        self.gate = threading.Event()

    def explain(self, images, targets=None, *, all_classes=False):
        from reciprocam_onnx.engine.base import Explanation

        self.gate.wait(10)
        if np.isnan(images).any():
            raise OptionError("a NaN image")
        self.calls.append(("explain", len(images)))
        scores = np.tile(images[:, :1, 0, 0], (1, 3))
        chosen = scores.argmax(1) if targets is None else np.asarray(targets)
        return Explanation(images[:, 0, :2, :2], chosen, scores)

    def predict(self, images):
        self.calls.append(("predict", len(images)))
        return np.tile(images[:, :1, 0, 0], (1, 3))


def small(seed: int, **kind) -> Work:
    return Work(images(seed, 1)[:, :, :4, :4], None, **kind)


def run_behind_one(works: list[Work], max_queue: int = 6) -> tuple[list, list]:
    """Outcomes (or errors) of ``works``, queued while a first request holds the worker; the explainer's calls."""
    recording = Recording()

    async def scenario():
        batcher = Batcher(recording, max_queue=max_queue, batch_images=4)
        batcher.start()
        first = asyncio.ensure_future(batcher.run(small(0)))
        await asyncio.sleep(0.05)  # the worker holds it, at the gate
        tasks = [asyncio.ensure_future(batcher.run(work)) for work in works]
        await asyncio.sleep(0.05)
        recording.gate.set()
        results = await asyncio.gather(first, *tasks, return_exceptions=True)
        await batcher.close()
        return results[1:]

    return asyncio.run(scenario()), recording.calls


def test_the_batcher_runs_waiting_requests_of_one_kind_together():
    results, calls = run_behind_one([small(1), small(2), small(3, maps=False), small(4)])
    assert calls == [("explain", 1), ("explain", 3), ("predict", 1)]
    for seed, result in zip((1, 2, 3, 4), results):
        np.testing.assert_array_equal(result.scores, Recording().predict(small(seed).images))
    np.testing.assert_array_equal(results[1].maps, small(2).images[:, 0, :2, :2])
    assert results[2].maps is None


def test_a_bad_request_in_a_combined_run_fails_alone():
    bad = Work(np.full((1, 3, 4, 4), np.nan, np.float32), None)
    results, calls = run_behind_one([small(1), bad, small(2)])
    assert isinstance(results[1], OptionError) and not isinstance(results[0], Exception)
    assert calls == [("explain", 1), ("explain", 1), ("explain", 1)]  # the combined run failed: one by one


def test_the_batcher_refuses_what_would_overfill_its_queue():
    results, _ = run_behind_one([small(1), small(2), Work(images(3, 2)[:, :, :4, :4], None)], max_queue=3)
    assert isinstance(results[2], RequestError) and results[2].status == 503 and "busy" in str(results[2])
    assert not isinstance(results[0], Exception) and not isinstance(results[1], Exception)


def test_limits_are_checked():
    with pytest.raises(OptionError, match="max-queue"):
        Limits(max_images=8, max_queue=4)
    with pytest.raises(OptionError, match="max-images"):
        Limits(max_images=0)
