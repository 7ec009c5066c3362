"""The reciprocam CLI: happy paths, and one clear line plus exit 1 on bad input."""

from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from export.export_vit import export_onnx
from reciprocam_onnx.cli import main


@pytest.fixture(scope="module")
def vit(exported):
    return exported("timm-patch32")[0]


@pytest.fixture(scope="module")
def cnn(tmp_path_factory):
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, stride=2),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(8, 10),
    )
    return export_onnx(model, tmp_path_factory.mktemp("cnn") / "cnn.onnx")


@pytest.fixture()
def images(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, size in (("a", (224, 224)), ("b", (300, 260))):
        cv2.imwrite(str(folder / f"{name}.png"), rng.integers(0, 255, (*size, 3), dtype=np.uint8))
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    return folder


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """The installed console script's code path, in a subprocess (stderr as a user sees it)."""
    return subprocess.run([sys.executable, "-m", "reciprocam_onnx.cli", *args], capture_output=True, text=True)


def test_explain_writes_overlays_maps_and_top5(vit, images, tmp_path, capsys):
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(f"class-{k}" for k in range(10)))
    code = main(
        [
            "explain",
            str(vit),
            str(images / "a.png"),
            str(images / "b.png"),
            "-o",
            str(tmp_path / "out"),
            "--labels",
            str(labels),
            "--cpu",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert out.count("top-5: class-") == 2
    for name in ("a", "b"):
        grid = np.load(tmp_path / "out" / f"{name}.map.npy")
        assert grid.shape == (7, 7) and grid.min() == 0 and grid.max() == 1
        picture = cv2.imread(str(tmp_path / "out" / f"{name}.overlay.png"))
        assert picture.shape == (224, 224, 3)


def test_folder_skips_bad_image_and_fails_at_the_end(vit, images, tmp_path):
    result = run_cli("explain", str(vit), str(images), "-o", str(tmp_path / "out"), "--cpu")
    assert result.returncode == 1
    assert "skipped" in result.stderr and "broken.png" in result.stderr
    assert "1 inputs failed, 2 explained" in result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "a.map.npy",
        "a.overlay.png",
        "b.map.npy",
        "b.overlay.png",
    ]


def test_npy_input_and_target(vit, tmp_path, capsys):
    tensor = np.random.default_rng(1).standard_normal((1, 3, 224, 224)).astype(np.float32)
    np.save(tmp_path / "x.npy", tensor)
    assert main(["explain", str(vit), str(tmp_path / "x.npy"), "-o", str(tmp_path / "out"), "--target", "4"]) == 0
    assert "target: 4" in capsys.readouterr().out


def one_line_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.stderr
    assert any(all(n in line for n in needles) for line in lines), result.stderr


def test_cnn_is_refused(cnn, images, tmp_path):
    result = run_cli("explain", str(cnn), str(images / "a.png"), "-o", str(tmp_path))
    one_line_error(result, "no transformer blocks found")
    assert len(result.stderr.strip().splitlines()) == 1


def test_block_out_of_range(vit, images, tmp_path):
    one_line_error(
        run_cli("explain", str(vit), str(images / "a.png"), "-o", str(tmp_path), "--block", "7"),
        "block 7 is out of range",
    )


def test_wrong_image_size(vit, images, tmp_path):
    one_line_error(
        run_cli("explain", str(vit), str(images / "b.png"), "-o", str(tmp_path), "--resize", "none"),
        "b.png",
        "model takes 224x224",
    )


def test_unreadable_image(vit, images, tmp_path):
    one_line_error(
        run_cli("explain", str(vit), str(images / "broken.png"), "-o", str(tmp_path)), "broken.png", "cannot read image"
    )


def test_corrupt_model(tmp_path, images):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not protobuf at all")
    one_line_error(run_cli("explain", str(bad), str(images / "a.png"), "-o", str(tmp_path)), "not a valid ONNX model")


def test_split_command(vit, tmp_path):
    result = run_cli("split", str(vit), "--block", "-1", "-o", str(tmp_path / "split"))
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "split").iterdir()) == ["prefix.onnx", "split.json", "suffix.onnx"]
    assert "7x7 grid" in result.stdout


def test_fused_graph_with_an_option_it_cannot_honour(vit, images, tmp_path):
    fused = tmp_path / "fused.onnx"
    assert run_cli("fuse", str(vit), "-o", str(fused)).returncode == 0
    one_line_error(
        run_cli("explain", str(fused), str(images / "a.png"), "-o", str(tmp_path / "out"), "--max-batch", "4"),
        "cannot honour max_batch",
    )
    one_line_error(
        run_cli("explain", str(fused), str(images / "a.png"), "-o", str(tmp_path / "out"), "--kernel", "1x1"),
        "kernel='1x1' (graph: '3x3')",
    )


def test_unreadable_labels_file(vit, images, tmp_path):
    one_line_error(
        run_cli(
            "explain",
            str(vit),
            str(images / "a.png"),
            "-o",
            str(tmp_path / "out"),
            "--labels",
            str(tmp_path / "missing.txt"),
        ),
        "cannot read the labels file",
    )


def test_a_bug_is_one_line_that_says_so(vit, tmp_path, monkeypatch, capsys):
    """Anything but a user error is reported as a bug, in one line, with exit code 70."""
    from reciprocam_onnx.commands.split import Split

    def broken(args):
        raise ValueError("an invariant broke")

    monkeypatch.setattr(Split, "run", staticmethod(broken))
    assert main(["split", str(vit), "-o", str(tmp_path / "s")]) == 70
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "internal error" in err[0] and "an invariant broke" in err[0] and "--debug" in err[0]


def test_split_says_which_rewrites_applied_and_why_not(tmp_path):
    """BEiT (relative position bias, mean pooling): the rewrites that do not apply say why."""
    import timm

    torch.manual_seed(0)
    model = timm.create_model(
        "beit_base_patch16_224", pretrained=False, num_classes=10, depth=3, embed_dim=64, num_heads=2
    ).eval()
    with torch.no_grad():  # a trained BEiT's relative position bias is not zero, as timm initialises it
        for block in model.blocks:
            block.attn.relative_position_bias_table.normal_()
    path = export_onnx(model, tmp_path / "beit.onnx")
    result = run_cli("split", str(path), "-o", str(tmp_path / "split"))
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith("rewrites: "))
    assert "batch-dynamic yes" in line and "hoist yes" in line
    assert "head-rows no (the head reads every token row" in line
    assert "slots no (the query axis cannot be followed through Add node" in line


def test_preprocess_writes_the_input_explain_would_build(tmp_path, capsys):
    from pathlib import Path

    from reciprocam_onnx import Explainer

    root = Path(__file__).resolve().parents[1]
    demo, star = root / "models" / "shapes_vit.onnx", root / "examples" / "images" / "star.png"
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    assert main(["preprocess", str(demo), str(star), str(tmp_path / "broken.png"), "-o", str(tmp_path / "out")]) == 1
    assert "skipped" in capsys.readouterr().err
    written = np.load(tmp_path / "out" / "star.input.npy")
    np.testing.assert_array_equal(written, Explainer(demo).info.preprocess(star)[0][None])
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["star.input.npy"]
