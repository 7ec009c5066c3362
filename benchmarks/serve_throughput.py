"""Throughput and latency of `reciprocam serve` against `Explainer.explain` in the same run.

    python benchmarks/serve_throughput.py [--models demo,deit_small_patch16_224] [--requests 8]

For each model: the in-process Explainer on one image is the baseline, measured again (median of 4)
just before every server run, whose throughput is quoted as a ratio to it (the machine's speed drifts
by 10% over minutes); then a `reciprocam serve` subprocess (loopback, default limits) is driven by tritonclient
over REST with binary tensors, one image per request, at concurrency 1, 4 and 16 (``--requests`` x
concurrency requests each, after a warm-up; ``--repeats`` runs, the ratios' median quoted, latency
percentiles over all their requests), and at 16 once more with ``--batch-images 1`` (requests never
combined). gRPC at concurrency 1 for comparison. Prints images/s, p50/p95 latency, the server's
peak RSS and the bytes of one answer as binary and as JSON. DeiT-S/16 is exported with random
weights (timing does not depend on them). Client and server share the machine's cores.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from benchmarks.common import median_seconds  # noqa: E402
from tests.servers import Server  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def model_path(name: str, folder: Path) -> Path:
    if name == "demo":
        return ROOT / "models" / "shapes_vit.onnx"
    import timm

    from export.export_vit import export_onnx

    return export_onnx(timm.create_model(name, pretrained=False), folder / f"{name}.onnx")


def request(client, module, image: np.ndarray, outputs=("scores", "target", "saliency", "saliency_u8"), **kw):
    tensor = module.InferInput("input", list(image.shape), "FP32")
    tensor.set_data_from_numpy(image)
    return client.infer("model", [tensor], outputs=[module.InferRequestedOutput(o) for o in outputs], **kw)


def drive(server: Server, images: np.ndarray, concurrency: int, count: int, use_grpc: bool = False):
    """``count`` one-image requests from ``concurrency`` clients: (images/s, each request's seconds)."""
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    module = grpcclient if use_grpc else httpclient
    latencies: list[float] = []

    def client_loop(k: int) -> None:
        # a client per thread and run: tritonclient's HTTP client belongs to the thread that made it (gevent)
        options = {} if use_grpc else {"network_timeout": 600}
        client = module.InferenceServerClient(server.grpc if use_grpc else server.http, **options)
        for n in range(k, count, concurrency):
            start = time.perf_counter()
            request(client, module, images[n % len(images)][None])
            latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(client_loop, range(concurrency), timeout=3600))
    return count / (time.perf_counter() - start), latencies


def measured(server: Server, explainer, images: np.ndarray, concurrency: int, count: int, repeats: int, **kw) -> dict:
    """Server runs each after an in-process baseline (the median of 4 one-image explains, just before it):
    the median ratio of the two throughputs, the median images/s, latency percentiles over every request
    and as ratios to the baselines' median."""
    ratios, rates, bases, latencies = [], [], [], []
    for _ in range(repeats):
        base = median_seconds(partial(explainer.explain, images[:1]), repeats=4, warmup=0)
        rate, seconds = drive(server, images, concurrency, count, **kw)
        ratios.append(rate * base)
        rates.append(rate)
        bases.append(base)
        latencies += seconds
    ordered, base = sorted(latencies), statistics.median(bases)
    p50, p95 = statistics.median(ordered), ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    return {
        "images_per_s": statistics.median(rates),
        "ratio": statistics.median(ratios),
        "base": base,
        "p50": p50,
        "p95": p95,
    }


def answer_bytes(server: Server, image: np.ndarray) -> dict:
    """Bytes of one answer's body: binary and JSON, the target's map and every class's."""
    import httpx
    import orjson

    from reciprocam_onnx.serve.rest import HEADER_LENGTH

    head = {
        "inputs": [
            {
                "name": "input",
                "datatype": "FP32",
                "shape": list(image.shape),
                "parameters": {"binary_data_size": image.nbytes},
            }
        ]
    }
    sizes = {}
    for every in (False, True):
        for binary in (True, False):
            document = {**head, "parameters": {"binary_data_output": binary, "all_classes": every}}
            body = orjson.dumps(document)
            reply = httpx.post(
                f"{server.url}/v2/models/model/infer",
                content=body + image.tobytes(),
                headers={HEADER_LENGTH: str(len(body))},
                timeout=600,
            )
            reply.raise_for_status()
            sizes[("all classes" if every else "target", "binary" if binary else "JSON")] = len(reply.content)
    return sizes


def main() -> None:
    from reciprocam_onnx import Explainer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="demo,deit_small_patch16_224")
    parser.add_argument("--requests", type=int, default=8, help="requests per client at each concurrency")
    parser.add_argument("--repeats", type=int, default=3, help="runs at each concurrency (median images/s)")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="serve-throughput-"))
    rows = []
    for name in args.models.split(","):
        path = model_path(name, folder)
        explainer = Explainer(path)  # the baseline, measured again before every server run
        size = explainer.info.input_shape[1:]
        images = np.random.default_rng(0).standard_normal((8, 3, *size), dtype=np.float32)
        explainer.explain(images[:1])
        results = {}
        for batch_images in ("8", "1"):
            server = Server(str(path), "--name", "model", "--batch-images", batch_images)
            try:
                drive(server, images, 2, 4)  # warm-up: sessions, arenas, connections
                runs = [(f"REST, concurrency {c}", c, False) for c in (1, 4, 16)] + [("gRPC, concurrency 1", 1, True)]
                if batch_images == "1":
                    runs = [("REST, concurrency 16, never combined", 16, False)]
                for key, concurrency, use_grpc in runs:
                    count = args.requests * concurrency
                    results[key] = measured(
                        server, explainer, images, concurrency, count, args.repeats, use_grpc=use_grpc
                    )
                    print(f"  {name} {key}: {results[key]}", flush=True)
                if batch_images == "8":
                    sizes = answer_bytes(server, images[:1])
                peak = server.peak_rss_mb()
            finally:
                assert server.terminate() == 0
        rows.append((name, results, sizes, peak))
    print("\n| model | run | images/s | x in-process | p50 latency (x in-process) | p95 latency |")
    print("|---|---|---|---|---|---|")
    for name, results, _, _ in rows:
        base = statistics.median(r["base"] for r in results.values())
        print(f"| {name} | in-process `explain`, one image | {1 / base:.2f} | 1.00 | {base:.3f} s | |")
        for key, r in results.items():
            print(
                f"| {name} | {key} | {r['images_per_s']:.2f} | {r['ratio']:.2f} | "
                f"{r['p50']:.3f} s ({r['p50'] / r['base']:.2f}x) | {r['p95']:.3f} s |"
            )
    print("\n| model | answer | binary | JSON | server peak RSS |\n|---|---|---|---|---|")
    for name, _, sizes, peak in rows:
        for what in ("target", "all classes"):
            print(f"| {name} | {what} | {sizes[(what, 'binary')]:,} B | {sizes[(what, 'JSON')]:,} B | {peak:.0f} MB |")


if __name__ == "__main__":
    main()
