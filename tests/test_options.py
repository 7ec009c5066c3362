"""Options: one definition of every option, its allowed values and default; one split serves the copy options."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from reciprocam_onnx import Explainer, Options
from reciprocam_onnx.commands.common import add_option_flags, given_options
from reciprocam_onnx.errors import OptionError
from reciprocam_onnx.options import FUSED, PRESETS, names, preset_taps
from tests.conftest import random_images


@pytest.mark.parametrize(
    "changes, needle",
    [
        ({"kernel": "5x5"}, "kernel must be one of 3x3, 1x1"),
        ({"score": "probit"}, "score"),
        ({"residual": "half"}, "residual"),
        ({"precision": "int4"}, "precision"),
        ({"max_batch": 0}, "max_batch"),
        ({"chunk": -3}, "chunk"),
        ({"block": 1.5}, "block"),
        ({"cls_token": "yes"}, "cls_token"),
    ],
)
def test_bad_values_are_refused(changes, needle):
    with pytest.raises(OptionError, match=needle):
        Options(**changes)


def test_unknown_option_is_refused():
    with pytest.raises(OptionError, match="unknown option kernal"):
        Options().updated(kernal="1x1")


def test_fused_metadata_round_trip():
    options = Options(block=3, kernel="1x1", cls_token=False, score="logits", residual="masked", chunk=8)
    back = Options.from_fused_json(options.fused_json())
    assert all(getattr(back, name) == getattr(options, name) for name in FUSED)
    assert Options().changed() == {} and options.changed()["kernel"] == "1x1"


def test_cli_flags_are_generated_from_the_options():
    parser = argparse.ArgumentParser()
    add_option_flags(parser, names())
    assert given_options(parser.parse_args([])) == {}
    args = parser.parse_args(
        [
            "--kernel",
            "1x1",
            "--no-cls-token",
            "--block",
            "-1",
            "--max-batch",
            "4",
            "--no-optimize",
            "--precision",
            "float16",
        ]
    )
    assert Options(**given_options(args)) == Options(
        kernel="1x1", cls_token=False, block=-1, max_batch=4, optimize=False, precision="float16"
    )
    with pytest.raises(SystemExit):
        parser.parse_args(["--kernel", "5x5"])


def test_presets_are_taps_over_the_given_options():
    """A preset is one or more taps (option sets); options it does not set apply to every tap, and one it
    sets cannot be given explicitly."""
    assert preset_taps("paper") == (Options(),)
    taps = preset_taps("reciprocam+", Options(max_batch=8, block=5))
    assert list(taps) == [Options(max_batch=8, **tap) for tap in PRESETS["reciprocam+"].taps]
    with pytest.raises(OptionError, match="preset reciprocam\\+ sets block, kernel itself"):
        preset_taps("reciprocam+", Options(block=-2, kernel="1x1"), given=("block", "kernel", "max_batch"))
    with pytest.raises(OptionError, match="unknown preset 'fast'; presets are paper, reciprocam"):
        preset_taps("fast")


def test_one_split_serves_every_copy_option(exported):
    """with_options reuses the split and sessions: same maps as a fresh Explainer with those options."""
    path, _, fam = exported("timm-patch32")
    images = random_images(2, fam.input_size)
    base = Explainer(path)
    for changes in (
        {"kernel": "1x1"},
        {"cls_token": False, "score": "logits"},
        {"residual": "masked", "window": "removed"},
    ):
        np.testing.assert_allclose(
            base.with_options(**changes).explain_all(images), Explainer(path, **changes).explain_all(images), atol=1e-6
        )
    assert base.with_options(block=base.info.block).options.block == base.info.block
    given = base.with_options(Options(kernel="1x1"))  # an Options of its own: input_size None is the split's
    assert given.options.input_size == base.options.input_size and given.options.kernel == "1x1"
    with pytest.raises(OptionError, match="change the cut"):
        base.with_options(input_size=(64, 64))
    with pytest.raises(OptionError, match="change the cut"):
        base.with_options(block=0)
    with pytest.raises(OptionError, match="change the cut"):
        base.with_options(optimize=False)
