"""`explain-dataset` on a local Ray with 2 workers: the maps and targets of single-process `explain`,
failures recorded as rows, and a rerun (also after an interrupted run) that writes nothing twice."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import ray

from reciprocam_onnx import Explainer
from reciprocam_onnx.cli import main
from reciprocam_onnx.errors import OptionError
from reciprocam_onnx.evaluation.shapes import generate, save_samples
from reciprocam_onnx.ray_dataset import explain_dataset
from tests.test_hostile import ctrl_c_reaches_it

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "models" / "shapes_vit.onnx"
BROKEN = ("nested/broken.png", "nested/empty.jpg")


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """20 shapes images in a folder tree, and 2 files that are no images."""
    folder = tmp_path_factory.mktemp("dataset")
    save_samples(generate(11, seed=7), folder)
    save_samples(generate(9, seed=8), folder / "nested")
    (folder / BROKEN[0]).write_bytes(b"\x89PNG not really")
    (folder / BROKEN[1]).write_bytes(b"")
    return folder


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray of 2 CPUs that declares one GPU (this machine may have none: the GPU worker's ONNX
    Runtime then falls back to its CPU, as it does anywhere CUDA is missing)."""
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


def results(output: Path) -> dict[str, dict]:
    """path -> row over every part; asserts no path was written twice."""
    rows = [
        row for part in sorted((output / "results").glob("part-*.parquet")) for row in pq.read_table(part).to_pylist()
    ]
    by_path = {row["path"]: row for row in rows}
    assert len(by_path) == len(rows), "a path was written twice"
    return by_path


def test_two_workers_give_the_single_process_maps_and_record_failures(images, local_ray, tmp_path):
    counts = explain_dataset(images, tmp_path, DEMO, workers=2, batch_size=8, show_progress=False, overlays=True)
    assert counts == {"images": 22, "skipped": 0, "explained": 20, "failed": 2}
    rows = results(tmp_path)
    failed = {path for path, row in rows.items() if not row["ok"]}
    assert failed == {str(images / name) for name in BROKEN}
    assert all("cannot read image" in rows[path]["error"] for path in failed)
    explainer = Explainer(DEMO)
    for path, row in rows.items():
        if not row["ok"]:
            continue
        x, _ = explainer.info.preprocess(path)
        alone = explainer.explain(x[None])
        assert row["target"] == int(alone.targets[0]) and row["target_name"] == explainer.info.model.label(
            row["target"]
        )
        saliency = np.asarray(row["map"], np.float32).reshape(row["map_height"], row["map_width"])
        np.testing.assert_allclose(saliency, alone.maps[0], atol=1e-6, err_msg=path)
        assert row["top_classes"][0] == row["target"] and len(row["top_scores"]) == 5
        assert (tmp_path / row["overlay"]).is_file()


def test_a_rerun_skips_what_is_done_and_finishes_the_rest(images, local_ray, tmp_path):
    listed = tmp_path / "first.txt"
    listed.write_text("\n".join(sorted(str(p) for p in images.rglob("*.png"))[:8]) + "\n# a comment\n")
    assert explain_dataset(listed, tmp_path / "out", DEMO, batch_size=8, show_progress=False)["explained"] == 8
    counts = explain_dataset(images, tmp_path / "out", DEMO, batch_size=8, show_progress=False)
    assert counts == {"images": 22, "skipped": 8, "explained": 12, "failed": 2}
    assert len(results(tmp_path / "out")) == 22
    assert explain_dataset(images, tmp_path / "out", DEMO, show_progress=False)["skipped"] == 22


def test_an_interrupted_job_resumes_without_writing_anything_twice(images, local_ray, tmp_path):
    """The CLI job, stopped with Ctrl-C after its first part, then run again to the end."""
    out = tmp_path / "out"
    command = [sys.executable, "-m", "reciprocam_onnx.cli", "explain-dataset", str(images), "-o", str(out)]
    process = subprocess.Popen(
        [*command, "--batch-size", "2"], cwd=ROOT, stderr=subprocess.PIPE, text=True, preexec_fn=ctrl_c_reaches_it
    )
    while not list((out / "results").glob("part-*.parquet")) and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=120) == 130
    assert process.stderr is not None and process.stderr.read().strip().splitlines()[-1] == "interrupted"
    first = len(results(out))
    assert 2 <= first < 22
    assert main(["explain-dataset", str(images), "-o", str(out), "--model", str(DEMO)]) == 1  # 2 images fail
    assert len(results(out)) == 22


def test_a_job_writing_into_its_input_tree_does_not_take_its_overlays_for_images(images, tmp_path):
    from reciprocam_onnx.ray_dataset import list_inputs

    (images / "out" / "overlays").mkdir(parents=True, exist_ok=True)
    (images / "out" / "overlays" / "x.overlay.png").write_bytes(b"")
    try:
        assert len(list_inputs(images)) == 23 and len(list_inputs(images, skip=images / "out")) == 22
    finally:
        (images / "out" / "overlays" / "x.overlay.png").unlink()


def test_without_ray_the_job_says_how_to_install_it(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError, as where it is not installed
    assert main(["explain-dataset", str(ROOT / "examples" / "images"), "-o", str(tmp_path / "out")]) == 1
    assert (
        capsys.readouterr().err.strip()
        == 'error: explaining a dataset needs Ray Data: pip install "reciprocam-onnx[ray]"'
    )
    assert not (tmp_path / "out").exists()


def test_gpu_workers_are_scheduled_on_gpus_and_give_the_same_maps(images, local_ray, tmp_path):
    """--gpu: each worker asks Ray for a GPU; on the GPU the local Ray declares, the maps are the CPU's."""
    listed = tmp_path / "some.txt"
    chosen = sorted(str(p) for p in images.rglob("*.png") if "broken" not in p.name)[:6]
    listed.write_text("\n".join(chosen))
    counts = explain_dataset(listed, tmp_path / "gpu", DEMO, workers=1, use_gpu=True, show_progress=False)
    assert counts["explained"] == 6
    cpu = Explainer(DEMO)
    for path, row in results(tmp_path / "gpu").items():
        x, _ = cpu.info.preprocess(path)
        expected = cpu.explain(x[None])
        assert row["target"] == int(expected.targets[0])
        np.testing.assert_allclose(np.reshape(row["map"], expected.maps[0].shape), expected.maps[0], atol=1e-6)


def test_gpu_workers_on_a_cluster_without_gpus_are_refused_in_one_line(images, local_ray, monkeypatch, tmp_path):
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0})
    with pytest.raises(OptionError, match="no GPUs"):
        explain_dataset(images, tmp_path / "out", DEMO, use_gpu=True, show_progress=False)
