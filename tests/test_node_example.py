"""The Node.js example runs the fused graph with onnxruntime-node and matches Python."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from reciprocam_onnx import fuse, open_explainer
from tests.conftest import random_images

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "node"


@pytest.fixture(scope="module")
def node_example() -> Path:
    if shutil.which("node") is None:
        pytest.skip("node is not installed")
    if not (EXAMPLE / "node_modules" / "onnxruntime-node").is_dir():
        subprocess.run(
            ["npm", "install", "--ignore-scripts", "--no-audit", "--no-fund"],
            cwd=EXAMPLE,
            check=True,
            capture_output=True,
        )
    return EXAMPLE / "explain.mjs"


def test_node_matches_python(node_example, exported, tmp_path):
    path, _, fam = exported("timm-patch32")
    fused = tmp_path / "fused.onnx"
    fused.write_bytes(fuse(path, preset="reciprocam+").SerializeToString())
    image = random_images(1, fam.input_size, seed=5)
    np.save(tmp_path / "image.npy", image)
    result = subprocess.run(
        ["node", str(node_example), str(fused), str(tmp_path / "image.npy"), str(tmp_path / "map.npy")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    python = open_explainer(path, preset="reciprocam+").explain(image)  # the four taps, not the fused graph
    assert printed["class"] == int(python.targets[0])
    assert printed["score"] == pytest.approx(float(python.scores[0, python.targets[0]]), abs=1e-5)
    np.testing.assert_allclose(np.load(tmp_path / "map.npy"), python.maps[0], atol=1e-4)
