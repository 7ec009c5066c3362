"""Hostile input, full disks and wrong paths: one clear line, nothing lost, nothing silently wrong.

Each test reproduces one failure class of issue #13; the list reads as the specification.
"""

from __future__ import annotations

import errno
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnx.numpy_helper
import pytest

from reciprocam_onnx import Explainer, FusedExplainer, fuse, split_model
from reciprocam_onnx.cli import main
from reciprocam_onnx.errors import ImageError, ModelLoadError, OptionError
from reciprocam_onnx.evaluation import EvalModel, evaluate, folder_dataset
from reciprocam_onnx.evaluation.data import read_labels_csv
from reciprocam_onnx.evaluation.methods import MethodSettings, default_methods, make_methods

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "models" / "shapes_vit.onnx"
STAR = ROOT / "examples" / "images" / "star.png"


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "Traceback" not in err[0]
    return err[0]


def png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares width x height (a decompression bomb's first bytes)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


# 1. Output locations: checked before any work, one line each.


@pytest.mark.parametrize("verb", ["explain", "split", "eval", "fuse"])
def test_output_that_is_an_existing_file_or_folder_is_refused_first(verb, tmp_path, capsys):
    taken = tmp_path / "taken"
    if verb == "fuse":
        taken.mkdir()  # fuse writes a file: a folder is in the way
    else:
        taken.write_text("not a folder")
    args = {"explain": [str(DEMO), str(STAR)], "split": [str(DEMO)], "eval": [str(DEMO)], "fuse": [str(DEMO)]}[verb]
    assert main([verb, *args, "-o", str(taken)]) == 1
    line = one_error_line(capsys)
    assert str(taken) in line and ("existing" in line)


def test_output_that_cannot_be_created_is_refused_first(tmp_path, capsys):
    assert main(["explain", str(DEMO), str(STAR), "-o", "/proc/reciprocam-cannot-be-here"]) == 1
    assert "cannot write into /proc/reciprocam-cannot-be-here" in one_error_line(capsys)


def test_a_full_disk_stops_the_batch_keeping_whole_pairs(tmp_path, capsys, monkeypatch):
    """The second image's map cannot be written: its overlay is not written either, no temporary file is
    left, the first image's pair is intact, and the run stops with one line (exit 1)."""
    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("a", "b", "c"):
        (folder / f"{name}.png").write_bytes(STAR.read_bytes())
    saves = []
    real_save = np.save

    def save(path, array, *args, **kwargs):
        saves.append(path)
        if len(saves) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(path, array, *args, **kwargs)

    monkeypatch.setattr(np, "save", save)
    out = tmp_path / "out"
    assert main(["explain", str(DEMO), str(folder), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "stopped: cannot write" in err and "No space left on device" in err and "1 of 3 images explained" in err
    assert sorted(p.name for p in out.iterdir()) == ["a.map.npy", "a.overlay.png"]


# 2. Decompression bombs and huge files: a skipped item, and the batch goes on.


@pytest.mark.parametrize(
    "name, data, needle",
    [
        ("bomb.png", png_header_only(100_000, 100_000), "pixels"),
        ("strip.png", cv2.imencode(".png", np.zeros((1, 30_000, 3), np.uint8))[1].tobytes(), "too elongated"),
    ],
)
def test_image_bombs_are_skipped_and_the_batch_goes_on(name, data, needle, tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / name).write_bytes(data)
    (folder / "z-good.png").write_bytes(STAR.read_bytes())
    assert main(["explain", str(DEMO), str(folder), "-o", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert f"skipped {folder / name}" in err and needle in err and "Traceback" not in err
    assert (tmp_path / "out" / "z-good.overlay.png").is_file()


def test_files_above_the_size_limit_are_refused_before_reading(monkeypatch, tmp_path):
    from reciprocam_onnx.io import images

    monkeypatch.setenv("RECIPROCAM_MAX_IMAGE_BYTES", "100")
    with pytest.raises(ImageError, match="is [0-9]+ bytes, above the 100 bytes limit"):
        images.load_image(STAR)


# 3. Non-finite, complex and raw-pixel input.


def test_non_finite_images_are_refused(capsys, tmp_path):
    ex = Explainer(DEMO)
    x, _ = ex.info.preprocess(STAR)
    bad = np.stack([x, x])
    bad[1, 0, 3, 3] = np.nan
    with pytest.raises(ImageError, match=r"images \[1\] contain NaN"):
        ex.explain(bad)
    np.save(tmp_path / "inf.npy", np.full_like(x, np.inf))
    np.save(tmp_path / "complex.npy", x.astype(np.complex64))
    assert (
        main(
            ["explain", str(DEMO), str(tmp_path / "inf.npy"), str(tmp_path / "complex.npy"), "-o", str(tmp_path / "o")]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert "contain NaN or infinite values" in err and "complex64 values" in err
    assert not list((tmp_path / "o").glob("*.npy"))


def test_scores_that_overflow_are_refused_not_mapped():
    """Finite images the model overflows on (NaN/Inf logits) give no map: argmax of NaN would name class 0."""
    ex = Explainer(DEMO)
    x, _ = ex.info.preprocess(STAR)
    with pytest.raises(ImageError, match=r"NaN or infinite scores for image\(s\) 1 of 2"):
        ex.explain(np.stack([x, x * 1e38]))


def test_a_model_with_corrupt_weights_is_refused(tmp_path, capsys):
    model = onnx.load(DEMO)
    weight = next(i for i in model.graph.initializer if len(i.dims) == 2)
    poisoned = onnx.numpy_helper.to_array(weight).copy()
    poisoned[0, 0] = np.nan
    weight.CopyFrom(onnx.numpy_helper.from_array(poisoned, weight.name))
    onnx.save(model, tmp_path / "nan.onnx")
    assert main(["explain", str(tmp_path / "nan.onnx"), str(STAR), "-o", str(tmp_path / "out")]) == 1
    assert "returns NaN or infinite logits for a test input" in one_error_line(capsys)


def test_raw_pixels_given_to_a_float_model_are_warned_about(caplog):
    ex = Explainer(DEMO)
    pixels = np.random.default_rng(0).integers(0, 256, (1, *ex.info.input_shape)).astype(np.float32)
    with caplog.at_level("WARNING"):
        ex.explain(pixels)
    assert "look like raw pixels" in caplog.text
    with pytest.raises(ImageError, match="got int64"):
        ex.explain(pixels.astype(np.int64))


# 4. A model under another name is a model, and the output says which model ran.


def test_a_model_not_named_onnx_is_taken_as_the_model(tmp_path, capsys):
    model = tmp_path / "vit.pb"
    model.write_bytes(DEMO.read_bytes())
    assert main(["explain", str(model), str(STAR), "-o", str(tmp_path / "out")]) == 0
    assert f"model: {model}" in capsys.readouterr().out
    assert main(["explain", str(STAR), "-o", str(tmp_path / "out2")]) == 0
    assert "the bundled demo model" in capsys.readouterr().out


# 5. Options checked against what the artifact is.


def test_out_of_range_blocks_are_refused_by_split_folders_and_fused_graphs(tmp_path, capsys):
    """A split folder or fused graph of a 4-block model refuses block 6, -98 and 1002 (which modulo the block
    count would name its block) as a plain model does."""
    assert main(["split", str(DEMO), "-o", str(tmp_path / "split")]) == 0
    assert main(["fuse", str(DEMO), "-o", str(tmp_path / "fused.onnx")]) == 0
    capsys.readouterr()
    blocks = Explainer(tmp_path / "split").info.blocks
    for artifact in (tmp_path / "split", tmp_path / "fused.onnx", DEMO):
        for block in (blocks + blocks - 2, -98, 1002):
            code = main(["explain", str(artifact), str(STAR), "--block", str(block), "-o", str(tmp_path / "o")])
            assert code == 1
            assert "out of range" in one_error_line(capsys)


KILL_BEFORE_SPLIT_JSON = """
import os, signal, sys
real_replace = os.replace
def replace(src, dst):
    if str(dst).endswith("split.json"):
        os.kill(os.getpid(), signal.SIGKILL)  # killed after the new graphs are in place, before split.json
    return real_replace(src, dst)
os.replace = replace
from reciprocam_onnx.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_split_folder_torn_by_a_killed_resplit_is_refused(tmp_path, capsys):
    """A re-split SIGKILLed between its renames leaves block 2's graphs beside block 1's split.json: the
    folder is refused in one line, never explained as the wrong block."""
    folder = tmp_path / "split"
    assert main(["split", str(DEMO), "--block", "1", "-o", str(folder)]) == 0
    script = [sys.executable, "-c", KILL_BEFORE_SPLIT_JSON, "split", str(DEMO), "--block", "2", "-o", str(folder)]
    assert subprocess.run(script, cwd=ROOT, capture_output=True).returncode == -signal.SIGKILL
    capsys.readouterr()
    assert main(["explain", str(folder), str(STAR), "-o", str(tmp_path / "out")]) == 1
    assert "is torn or edited: prefix.onnx" in one_error_line(capsys)
    assert main(["split", str(DEMO), "--block", "2", "-o", str(folder)]) == 0  # the next split removes the orphan
    assert sorted(p.name for p in folder.iterdir()) == ["prefix.onnx", "split.json", "suffix.onnx"]
    assert Explainer(folder).info.block == 2


def test_a_split_folder_with_swapped_graphs_is_refused(tmp_path):
    folder = tmp_path / "split"
    assert main(["split", str(DEMO), "-o", str(folder)]) == 0
    prefix, suffix = (folder / "prefix.onnx").read_bytes(), (folder / "suffix.onnx").read_bytes()
    (folder / "prefix.onnx").write_bytes(suffix)
    (folder / "suffix.onnx").write_bytes(prefix)
    with pytest.raises(ModelLoadError, match="torn or edited"):
        Explainer(folder)


# 7. Options and files checked early, one line each.


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--top", "-3"], "--top must be at least 1"),
        (["--target", "999"], "--target must lie in 0.."),
    ],
)
def test_run_options_are_checked_before_any_image(extra, needle, tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    for name in "abc":
        (folder / f"{name}.png").write_bytes(STAR.read_bytes())
    assert main(["explain", str(DEMO), str(folder), *extra, "-o", str(tmp_path / "out")]) == 1
    assert needle in one_error_line(capsys)
    assert not (tmp_path / "out").exists()  # no empty folder left either


def test_a_labels_file_that_does_not_fit_the_model_is_refused(tmp_path, capsys):
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\n")
    assert main(["explain", str(DEMO), str(STAR), "--labels", str(labels), "-o", str(tmp_path / "out")]) == 1
    assert "names 2 classes; the model has" in one_error_line(capsys)


def test_api_targets_and_batches_that_make_no_sense_are_refused():
    ex = Explainer(DEMO)
    x, _ = ex.info.preprocess(STAR)
    with pytest.raises(ValueError, match="whole class indices"):
        ex.explain(x[None], targets=[3.7])
    with pytest.raises(ImageError, match="empty batch"):
        ex.explain(np.zeros((0, *ex.info.input_shape), np.float32))


def test_fusing_a_fused_graph_is_refused(tmp_path, capsys):
    assert main(["fuse", str(DEMO), "-o", str(tmp_path / "fused.onnx")]) == 0
    capsys.readouterr()
    assert main(["fuse", str(tmp_path / "fused.onnx"), "-o", str(tmp_path / "twice.onnx")]) == 1
    assert "already a fused graph" in one_error_line(capsys)


def test_a_second_run_into_its_input_folder_does_not_explain_its_own_overlays(tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "star.png").write_bytes(STAR.read_bytes())
    for _ in range(2):
        assert main(["explain", str(DEMO), str(folder), "-o", str(folder)]) == 0
    assert sorted(p.name for p in folder.iterdir()) == ["star.map.npy", "star.overlay.png", "star.png"]


CTRL_C_DURING_IMPORT = """
import sys
class CtrlC:
    def find_spec(self, name, path=None, target=None):
        if name == sys.argv[1]:
            raise KeyboardInterrupt
sys.meta_path.insert(0, CtrlC())
from reciprocam_onnx.cli import main  # as the console script does
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.parametrize("module", ["numpy", "onnxruntime"])
def test_ctrl_c_while_importing_is_one_line(module, tmp_path):
    run = [sys.executable, "-c", CTRL_C_DURING_IMPORT, module, "explain", str(DEMO), str(STAR), "-o", str(tmp_path)]
    done = subprocess.run(run, cwd=ROOT, capture_output=True, text=True)
    assert (done.returncode, done.stderr) == (130, "interrupted\n")


def ctrl_c_reaches_it() -> None:
    """In the child: SIGINT handled as a terminal's Ctrl-C is, even where this test runs in a background
    job (whose children start with SIGINT ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_batch(tmp_path: Path, images: int = 12) -> tuple[subprocess.Popen, Path]:
    """`reciprocam explain` over a folder of ``images`` images, started as a user would; returns once the
    first pair is written."""
    folder, out = tmp_path / "images", tmp_path / "out"
    folder.mkdir()
    for k in range(images):
        (folder / f"{k:02d}.png").write_bytes(STAR.read_bytes())
    command = [sys.executable, "-m", "reciprocam_onnx.cli", "explain", str(DEMO), str(folder), "-o", str(out)]
    process = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, preexec_fn=ctrl_c_reaches_it
    )
    while not list(out.glob("*.overlay.png")) and process.poll() is None:
        time.sleep(0.01)
    return process, out


def written(out: Path) -> dict[str, set[str]]:
    """stem -> the kinds written for it, each checked readable whole; hidden temporaries under '.'."""
    kinds: dict[str, set[str]] = {}
    for path in out.iterdir():
        if path.name.startswith("."):
            kinds.setdefault(".", set()).add(path.name)
            continue
        stem, kind = path.name.split(".", 1)
        assert (np.load(path).shape == (14, 14)) if kind == "map.npy" else cv2.imread(str(path)) is not None
        kinds.setdefault(stem, set()).add(kind)
    return kinds


@pytest.mark.parametrize(
    "signum, code, line", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")]
)
def test_a_batch_stopped_by_ctrl_c_or_sigterm_says_so_and_keeps_whole_pairs(signum, code, line, tmp_path):
    process, out = start_batch(tmp_path)
    process.send_signal(signum)
    assert process.wait(timeout=60) == code
    assert process.stderr is not None and process.stderr.read().strip().splitlines()[-1] == line
    pairs = written(out)
    assert pairs and all(kinds == {"map.npy", "overlay.png"} for kinds in pairs.values()), pairs  # no temporaries


def test_a_batch_killed_outright_leaves_only_whole_files_and_a_rerun_completes_it(tmp_path):
    process, out = start_batch(tmp_path)
    process.kill()
    process.wait(timeout=60)
    for stem, kinds in written(out).items():  # an overlay is renamed into place after its map
        assert stem == "." or kinds in ({"map.npy"}, {"map.npy", "overlay.png"}), (stem, kinds)
    rerun = subprocess.run(
        [sys.executable, "-m", "reciprocam_onnx.cli", "explain", str(DEMO), str(tmp_path / "images"), "-o", str(out)],
        cwd=ROOT,
        capture_output=True,
    )
    assert rerun.returncode == 0
    assert written(out) == {f"{k:02d}": {"map.npy", "overlay.png"} for k in range(12)}  # orphans removed


# 6. Memory: the budget bounds every run.


def test_an_explicit_max_batch_is_capped_by_the_memory_budget(caplog, monkeypatch):
    from reciprocam_onnx.engine import explainer

    monkeypatch.setitem(explainer.MEMORY_BUDGET_BYTES, "cpu", 64 << 20)
    with caplog.at_level("WARNING"):
        ex = Explainer(DEMO, max_batch=10_000)
    assert ex.max_batch == explainer.budget_max_batch(ex.info, "cpu") < 10_000
    assert "above the 64 MB budget" in caplog.text


def test_an_absurd_declared_input_is_refused_before_anything_runs(tmp_path, capsys):
    """A graph declaring a 100000x100000 input would make the shape probe allocate 112 GiB."""
    model = onnx.load(DEMO)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_value = dims[3].dim_value = 100_000
    del model.metadata_props[:]  # which name the demo model's 224x224
    onnx.save(model, tmp_path / "huge.onnx")
    assert main(["explain", str(tmp_path / "huge.onnx"), str(STAR), "-o", str(tmp_path / "out")]) == 1
    assert "is 100000x100000 (HxW), above the 4,194,304 pixels" in one_error_line(capsys)


def test_many_images_go_through_the_prefix_in_bounded_groups(monkeypatch):
    """Twenty images in one call: the prefix never holds more than IMAGES_PER_PREFIX_RUN, and every
    image gets the map it gets alone."""
    from reciprocam_onnx.engine import explainer

    ex = Explainer(DEMO)
    x, _ = ex.info.preprocess(STAR)
    images = np.stack([x * (1 + 0.01 * k) for k in range(20)])
    seen = []
    run_prefix = explainer.run_prefix

    def counted(session, info, device, group, names):
        seen.append(len(group))
        return run_prefix(session, info, device, group, names)

    monkeypatch.setattr(explainer, "run_prefix", counted)
    maps = ex.explain(images).maps
    assert max(seen) <= explainer.IMAGES_PER_PREFIX_RUN and sum(seen) == 20
    np.testing.assert_allclose(maps[13], ex.explain(images[13:14]).maps[0], atol=1e-6)


# 8. eval: what a labels file says is checked; a fused graph is evaluated as built.


def labelled_folder(tmp_path: Path, rows: str) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    for name in ("a.png", "b.png"):
        (folder / name).write_bytes(STAR.read_bytes())
    (folder / "labels.csv").write_text("file,label,x0,y0,x1,y1\n" + rows)
    return folder


def test_eval_skips_an_image_whose_box_reaches_outside_it(tmp_path, caplog):
    folder = labelled_folder(tmp_path, "a.png,2,10,10,50,50\nb.png,2,10,10,5000,50\n")
    dataset = folder_dataset(folder, None, (224, 224))
    with caplog.at_level("WARNING"):
        assert [item.name for item in dataset] == ["a.png"]
    assert dataset.skipped == 1 and "b.png: box (10, 10, 5000, 50) of labels.csv reaches outside the" in caplog.text


def test_eval_refuses_a_file_labelled_twice_differently_before_any_work(tmp_path, capsys):
    folder = labelled_folder(tmp_path, "a.png,1,,,,\nb.png,2,,,,\na.png,3,,,,\n")
    assert main(["eval", str(DEMO), "--dataset", str(folder), "-o", str(tmp_path / "out")]) == 1
    assert "line 4: a.png is labelled 3 here and 1 on line 2" in one_error_line(capsys)
    assert not (tmp_path / "out").exists()  # no empty folder left either


def test_objects_of_several_classes_leave_an_image_unlabelled_and_say_so(tmp_path, caplog):
    """A row without a box labels its image; boxes alone label it only when they agree."""
    folder = labelled_folder(tmp_path, "a.png,1,0,0,9,9\na.png,3,5,5,20,20\nb.png,2,,,,\nb.png,4,0,0,9,9\n")
    with caplog.at_level("WARNING"):
        files = read_labels_csv(folder / "labels.csv")
    assert files == {"a.png": (None, [(1, (0, 0, 9, 9)), (3, (5, 5, 20, 20))]), "b.png": (2, [(4, (0, 0, 9, 9))])}
    assert "1 images of" in caplog.text and "have boxes of several classes" in caplog.text


def test_eval_of_a_fused_graph_uses_its_maps_its_class_names_and_the_plain_model_for_scores():
    fused = fuse(DEMO)
    model = EvalModel(fused)
    plain = Explainer(DEMO)
    x = plain.info.preprocess(STAR)[0][None]
    assert (
        model.reciprocam_methods == ("reciprocam-3x3",)
        and model.info.model.labels == plain.info.model.labels is not None
    )
    np.testing.assert_array_equal(
        model.explainer("reciprocam-3x3").explain(x, [2]).maps, FusedExplainer(fused).explain(x, [2]).maps
    )
    np.testing.assert_allclose(model.score_fn(x), plain.predict(x), atol=1e-6)
    assert default_methods(model) == ["reciprocam-3x3", "rise", "rollout", "random", "centre"]
    with pytest.raises(OptionError, match="explains as reciprocam-3x3 only"):
        make_methods(model, ["reciprocam-1x1"], MethodSettings())


# A second round of hostile cases (a probe of 159 cases found these 40; each class is covered here).


def test_fuse_refuses_outputs_that_are_not_new_or_regular_files(tmp_path, capsys):
    model = tmp_path / "model.onnx"
    model.write_bytes(DEMO.read_bytes())
    os.mkfifo(tmp_path / "pipe")
    for output, needle in (
        (tmp_path / "pipe", "is not a regular file"),
        (f"{tmp_path}/newdir/", "names a folder"),
        (model, "is the input itself"),
        (tmp_path / ("a" * 300), "File name too long"),
    ):
        assert main(["fuse", str(model), "-o", str(output)]) == 1, output
        assert needle in one_error_line(capsys)
    assert model.read_bytes() == DEMO.read_bytes()


@pytest.mark.parametrize(
    "args, needle",
    [
        (["fuse", str(DEMO), "--chunk", "99999999999999999999"], "chunk must be a whole number from 1 to"),
        (["explain", str(STAR), "--block", "two"], "argument --block: invalid int value: 'two'"),
        (["eval", str(DEMO), "--n", "2", "--seed", "-5", "--methods", "centre"], "seed must be a whole number"),
    ],
)
def test_option_values_out_of_any_range_are_one_line(args, needle, tmp_path, capsys):
    assert main([*args, "-o", str(tmp_path / "out.onnx")]) == 1
    assert needle in one_error_line(capsys)
    assert not (tmp_path / "out.onnx").exists()  # nor an empty folder left by the failed run


def test_a_bad_limit_variable_is_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("RECIPROCAM_MAX_IMAGE_PIXELS", "-1")
    assert main(["explain", str(STAR), "-o", str(tmp_path / "out")]) == 1
    assert "RECIPROCAM_MAX_IMAGE_PIXELS must be a whole number above 0, not '-1'" in one_error_line(capsys)


@pytest.mark.parametrize(
    "row, needle",
    [("a.png,3,0,0,inf,50", "finite numbers"), ("a.png,3,10,10,,", "give all of x0,y0,x1,y1 or none, not 2")],
)
def test_labels_csv_rows_that_are_not_boxes_are_refused(row, needle, tmp_path):
    folder = labelled_folder(tmp_path, row + "\n")
    with pytest.raises(OptionError, match=needle):
        read_labels_csv(folder / "labels.csv")


def test_files_saved_with_a_byte_order_mark_read_as_written(tmp_path, capsys):
    folder = labelled_folder(tmp_path, "")
    (folder / "labels.csv").write_text("\ufefffile,label\na.png,3\n", encoding="utf-8")
    assert read_labels_csv(folder / "labels.csv") == {"a.png": (3, [])}
    names = [f"c{k}" for k in range(10)]
    (tmp_path / "names.txt").write_text("\ufeff" + "\n".join(names) + "\n", encoding="utf-8")
    assert main(["explain", str(DEMO), str(STAR), "--labels", str(tmp_path / "names.txt"), "-o", str(tmp_path)]) == 0
    assert "target: c3\n" in capsys.readouterr().out
    (tmp_path / "names.txt").write_text("\n".join(["c0", *names[:9]]), encoding="utf-8")
    assert main(["explain", str(DEMO), str(STAR), "--labels", str(tmp_path / "names.txt"), "-o", str(tmp_path)]) == 1
    assert "names 'c0' more than once" in one_error_line(capsys)


def test_a_folder_in_the_place_of_one_file_of_a_set_writes_none_of_it(tmp_path, capsys):
    (tmp_path / "out" / "star.overlay.png").mkdir(parents=True)
    assert main(["explain", str(DEMO), str(STAR), "-o", str(tmp_path / "out")]) == 1
    assert "star.overlay.png: a folder or other non-file is in its place" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["star.overlay.png"]
    (tmp_path / "split" / "split.json").mkdir(parents=True)
    assert main(["split", str(DEMO), "-o", str(tmp_path / "split")]) == 1
    assert "split.json: a folder or other non-file is in its place" in one_error_line(capsys)
    assert sorted(p.name for p in (tmp_path / "split").iterdir()) == ["split.json"]


def test_a_failed_run_leaves_no_empty_output_folder(tmp_path, capsys):
    assert main(["explain", str(tmp_path / "missing.onnx"), str(STAR), "-o", str(tmp_path / "a" / "b")]) == 1
    assert "model file not found" in one_error_line(capsys)
    assert not (tmp_path / "a").exists()


def test_a_symbolic_link_loop_in_a_folder_is_reported_and_skipped(tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "star.png").write_bytes(STAR.read_bytes())
    (folder / "loop.png").symlink_to(folder / "loop.png")
    assert main(["explain", str(DEMO), str(folder), "-o", str(tmp_path / "out")]) == 1
    assert "loop.png is a symbolic link that leads nowhere" in capsys.readouterr().err
    assert (tmp_path / "out" / "star.overlay.png").is_file()


def test_a_fused_graph_is_not_split_and_a_model_with_several_outputs_says_which_it_explains(tmp_path, caplog):
    fused = tmp_path / "fused.onnx"
    onnx.save(fuse(DEMO), fused)
    with pytest.raises(OptionError, match="is a fused graph"):
        split_model(fused)
    model = onnx.load(DEMO)
    model.graph.output.append(onnx.helper.make_tensor_value_info("extra", onnx.TensorProto.FLOAT, None))
    model.graph.node.append(onnx.helper.make_node("Neg", [model.graph.output[0].name], ["extra"]))
    with caplog.at_level("WARNING"):
        split_model(model)
    assert "the model has 2 outputs" in caplog.text and "explaining the first" in caplog.text


def test_api_arguments_of_the_wrong_kind_raise_the_package_errors(tmp_path):
    ex = Explainer(DEMO)
    with pytest.raises(ImageError):
        ex.explain(None)
    with pytest.raises(ImageError):
        ex.explain([[1, 2], [3]])
    with pytest.raises(ModelLoadError):
        Explainer(123)
    with pytest.raises(OptionError, match="list of provider names"):
        Explainer(DEMO, providers="CPUExecutionProvider")
    folder = labelled_folder(tmp_path, "a.png,3\n")
    for bad in ({"size": (0, 0)}, {"resize": "bogus"}, {"n": -1}):
        with pytest.raises(OptionError):
            folder_dataset(folder, None, **{"size": (224, 224), **bad})
    dataset = folder_dataset(folder, None, (224, 224))
    for bad in ({"batch_size": 2.5}, {"seed": -1}):
        with pytest.raises(OptionError):
            evaluate(ex_model(), dataset, ["centre"], progress=False, **bad)
    with pytest.raises(OptionError, match="must be a Dataset"):
        evaluate(ex_model(), [1, 2, 3], ["centre"], progress=False)


def ex_model():
    return EvalModel(DEMO)


def test_a_thread_count_above_the_cores_is_capped_in_one_line(tmp_path):
    """RECIPROCAM_THREADS=100000 once held 16 GB and 8,098 threads and stalled a run: it runs the usable cores'
    threads, says so in one line, and the map is the one the default threads give."""
    from reciprocam_onnx.graph.runtime import physical_cores

    image = DEMO.parents[1] / "examples" / "images" / "star.png"
    env = {**os.environ, "RECIPROCAM_THREADS": "100000", "RECIPROCAM_CACHE": "off"}
    command = [sys.executable, "-m", "reciprocam_onnx.cli", "explain", str(image), "-o", str(tmp_path / "capped")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if "RECIPROCAM_THREADS" in line]
    assert lines == [lines[0]] and f"more than the {physical_cores()} usable cores" in lines[0]
    assert main(["explain", str(image), "-o", str(tmp_path / "default")]) == 0
    np.testing.assert_allclose(
        np.load(tmp_path / "capped" / "star.map.npy"), np.load(tmp_path / "default" / "star.map.npy"), atol=1e-5
    )
