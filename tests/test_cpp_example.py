"""The fused graph in a second runtime: OpenVINO from Python, and the C++ example (examples/cpp) built
with the system's cmake and g++ against OpenVINO's wheel, each against ONNX Runtime's maps."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from reciprocam_onnx import FusedExplainer, fuse
from reciprocam_onnx.cli import main
from reciprocam_onnx.io.images import load_image

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "models" / "shapes_vit.onnx"
IMAGES = ROOT / "examples" / "images"
MAP_TOLERANCE = 1e-4
PLUS = "reciprocam+"


@pytest.fixture(scope="module")
def fused(tmp_path_factory) -> Path:
    """The demo model with reciprocam+ fused in: four taps, each in ONNX Loop steps."""
    path = tmp_path_factory.mktemp("cpp") / "fused.onnx"
    onnx.save(fuse(DEMO, preset=PLUS), path)
    return path


@pytest.fixture(scope="module")
def build(tmp_path_factory) -> Path:
    """examples/cpp configured and built as its README says, in the test's Python environment: the
    OpenVINO program, and the ONNX Runtime one with headers fetched by onnxruntime_headers.sh."""
    for tool in ("cmake", "g++", "apt-get", "dpkg-deb"):
        assert shutil.which(tool), f"{tool} is needed (apt-get install -y cmake g++)"
    build = tmp_path_factory.mktemp("cpp-build")
    headers = subprocess.run(
        [str(ROOT / "examples" / "cpp" / "onnxruntime_headers.sh"), str(build / "onnxruntime-include")],
        capture_output=True,
        text=True,
    )
    assert headers.returncode == 0, headers.stderr
    env = {**os.environ, "VIRTUAL_ENV": sys.prefix, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    configure = ["cmake", "-S", str(ROOT / "examples" / "cpp"), "-B", str(build)]
    for step in (
        [*configure, f"-DONNXRUNTIME_INCLUDE_DIR={build / 'onnxruntime-include'}"],
        ["cmake", "--build", str(build)],
    ):
        done = subprocess.run(step, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
    return build


@pytest.fixture(params=["reciprocam_explain", "reciprocam_explain_ort"])
def program(request, build) -> Path:
    """The program built against OpenVINO, and the one built against ONNX Runtime's C++ API."""
    return build / request.param


def test_openvino_runs_the_fused_graph_as_onnx_runtime_does(fused):
    """Same logits, and the same map for each image's class. (Maps of a class whose score is saturated
    can differ between any two runtimes: on ring.png, p = 1 - 4e-5, the cells' softmax scores differ
    below float32's resolution of the logits, and OpenVINO's map differs from ONNX Runtime's by 0.15.)"""
    import openvino as ov

    model = onnx.load(fused)
    explainer = FusedExplainer(model)
    images = np.stack([explainer.info.preprocess(IMAGES / name)[0] for name in ("star.png", "two_objects.png")])
    logits, saliency = explainer._session.run(["logits", "saliency"], {"input": images})
    compiled = ov.Core().compile_model(str(fused), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    result = compiled({"input": images})
    np.testing.assert_allclose(result[compiled.output("logits")], logits, atol=1e-4)
    top = logits.argmax(axis=1)
    maps = result[compiled.output("saliency")][np.arange(len(top)), top]
    np.testing.assert_allclose(maps, saliency[np.arange(len(top)), top], atol=MAP_TOLERANCE)


@pytest.mark.parametrize("image", ["star.png", "two_objects.png"])
def test_cpp_program_writes_the_map_python_writes(image, program, fused, tmp_path, capsys):
    """`reciprocam preprocess` writes the input, the C++ program explains it; `reciprocam explain --preset
    reciprocam+` on the plain model gives the same target and map."""
    assert main(["preprocess", str(fused), str(IMAGES / image), "-o", str(tmp_path)]) == 0
    assert main(["explain", str(DEMO), str(IMAGES / image), "-o", str(tmp_path / "python"), "--preset", PLUS]) == 0
    python_target = capsys.readouterr().out.split("target: ")[1].split()[0]
    stem = Path(image).stem
    run = [str(program), str(fused), str(tmp_path / f"{stem}.input.npy"), str(tmp_path / "cpp.map.npy")]
    done = subprocess.run([*run, "--overlay", str(tmp_path / "cpp.png")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert f"target: {python_target}\n" in done.stdout and done.stdout.startswith("top-5: ")
    cpp_map, python_map = np.load(tmp_path / "cpp.map.npy"), np.load(tmp_path / "python" / f"{stem}.map.npy")
    assert cpp_map.shape == python_map.shape == (14, 14)
    np.testing.assert_allclose(cpp_map, python_map, atol=MAP_TOLERANCE)
    # the overlay PNG: OpenCV's bicubic and JET rebuilt in C++, and the picture rebuilt from the input
    cpp_png, python_png = (
        load_image(path) for path in (tmp_path / "cpp.png", tmp_path / "python" / f"{stem}.overlay.png")
    )
    levels = np.abs(cpp_png.astype(int) - python_png.astype(int))
    assert levels.max() <= 4 and (levels > 1).mean() < 0.01, (levels.max(), (levels > 1).mean())


def test_cpp_program_says_what_is_wrong_in_one_line(program, fused, tmp_path):
    assert main(["preprocess", str(fused), str(IMAGES / "star.png"), "-o", str(tmp_path)]) == 0
    star, out = str(tmp_path / "star.input.npy"), str(tmp_path / "m.npy")
    for args, needle in (
        ([str(tmp_path / "missing.npy"), out], "missing.npy: cannot open"),
        ([str(fused), out, "--target", "x"], "--target must be a class index"),
        ([star, out, "--overlay", str(tmp_path / "no" / "such" / "o.png")], "cannot write"),
    ):
        done = subprocess.run([str(program), str(fused), *args], capture_output=True, text=True)
        assert done.returncode != 0 and needle in done.stderr and len(done.stderr.strip().splitlines()) == 1
