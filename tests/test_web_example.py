"""The browser example (examples/web) explains an image in headless Chromium and matches Python."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from reciprocam_onnx import Explainer, open_explainer

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "web"
SCREENSHOT = ROOT / "docs" / "images" / "web-demo.png"
DEMO = ROOT / "models" / "shapes_vit.onnx"
BLOCK_MINUS_1_GRAPH = "shapes_vit.block-1.explain.onnx"
# At block -1 the demo's default scores of star.png vary over its cells by only 6,000 float32 steps (min-max
# magnifies one step to 1.7e-4); its logits with the 1x1 kernel vary by 1.4e6 steps.
BLOCK_MINUS_1 = {"block": -1, "score": "logits", "kernel": "1x1"}


@pytest.fixture(scope="module")
def web_example() -> Path:
    if shutil.which("chromium") is None:
        pytest.fail("the browser example's test needs Debian's chromium: apt-get install -y chromium")
    if shutil.which("node") is None:
        pytest.fail("the browser example's test needs Node.js (20 or newer) and npm")
    modules = EXAMPLE / "node_modules"
    if not ((modules / "onnxruntime-web").is_dir() and (modules / "puppeteer-core").is_dir()):
        subprocess.run(
            ["npm", "install", "--ignore-scripts", "--no-audit", "--no-fund"],
            cwd=EXAMPLE,
            check=True,
            capture_output=True,
        )
    os.environ.setdefault("CHROMIUM", shutil.which("chromium"))  # headless.mjs launches it
    return EXAMPLE / "headless.mjs"


@pytest.fixture
def server():
    """serve.py on a free port, with the demo graph fused afresh; yields the page's URL."""
    (EXAMPLE / "shapes_vit.explain.onnx").unlink(missing_ok=True)
    process = subprocess.Popen(
        [sys.executable, str(EXAMPLE / "serve.py"), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        lines = []
        while not (lines and lines[-1].startswith("http://")):
            line = process.stdout.readline()
            assert line, f"serve.py stopped: {''.join(lines)}"
            lines.append(line)
        yield lines[-1].strip()
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def block_minus_1_graph():
    """The demo fused at block -1 (BLOCK_MINUS_1), beside the page (served with it); removed afterwards."""
    from reciprocam_onnx import fuse

    path = EXAMPLE / BLOCK_MINUS_1_GRAPH
    path.write_bytes(fuse(DEMO, **BLOCK_MINUS_1).SerializeToString())
    yield path
    path.unlink(missing_ok=True)


@pytest.mark.parametrize("backend", ["wasm", "webgpu"])
def test_page_matches_python(backend, web_example, server, request, tmp_path):
    """The page's top class and map for star.png are Python's, on WASM with the demo graph (reciprocam+) and on
    WebGPU (Chromium's software adapter, SwiftShader: the page's WebGPU path without a GPU) with the demo
    fused at block -1 (`?graph=`), which SwiftShader runs in a third of the demo graph's time. The WASM
    screenshot is docs/images/web-demo.png (written there when RECIPROCAM_UPDATE_DOCS=1, so that a test run
    leaves the checkout clean)."""
    update_docs = os.environ.get("RECIPROCAM_UPDATE_DOCS") == "1" and backend == "wasm"
    screenshot = SCREENSHOT if update_docs else tmp_path / "web-demo.png"
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    options = BLOCK_MINUS_1 if backend == "webgpu" else {}
    url = f"{server}?graph={request.getfixturevalue('block_minus_1_graph').name}" if options else server
    result = subprocess.run(
        ["node", str(web_example), url, "star", str(screenshot), backend],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    page = json.loads(result.stdout)
    assert page["state"] == "done", page["status"]
    assert page["backend"] == {"wasm": "WASM", "webgpu": "WebGPU"}[backend]
    assert screenshot.stat().st_size > 10_000
    assert not page["pageErrors"]

    explainer = Explainer(DEMO, **options) if options else open_explainer(DEMO, preset="reciprocam+")
    x, _ = explainer.info.preprocess(ROOT / "examples" / "images" / "star.png")
    python = explainer.explain(x[None])
    top = int(python.targets[0])
    assert page["topClass"] == top
    softmax = explainer.with_options(score="softmax") if options else explainer  # the preset's scores are
    probabilities = softmax.predict(x[None])[0]  # the page's scores
    assert page["scores"][top] == pytest.approx(float(probabilities[top]), abs=1e-5)
    page_map = np.asarray(page["maps"][top], np.float32).reshape(page["grid"])
    difference = float(np.abs(page_map - python.maps[0]).max())
    print(f"max abs map difference: {difference:.2e}")
    assert difference <= 1e-4
