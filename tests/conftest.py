"""Shared fixtures and helpers: exported models (cached per session), random images, a batch recorder."""

from __future__ import annotations

import gc
import logging
import os
from pathlib import Path


def _share_the_cores() -> None:
    """Under pytest-xdist, each worker gets its share of the usable cores (as graph/runtime.physical_cores
    counts them) for ONNX Runtime, torch and numpy: set before numpy and torch load, so that workers do not
    fight over the cores."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        threads = str(max(1, len(os.sched_getaffinity(0)) // workers))
        for name in ("RECIPROCAM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ.setdefault(name, threads)


_share_the_cores()
# the split cache (split/cache.py) stays out of the tests, and of the programs they start: each test opens
# its models afresh (tests/test_cache.py turns it on, in a folder of its own)
os.environ["RECIPROCAM_CACHE"] = "off"

import numpy as np  # noqa: E402
import pytest  # noqa: E402

logging.getLogger("reciprocam_onnx").setLevel(logging.WARNING)


@pytest.fixture(scope="module", autouse=True)
def frozen_garbage_collector():
    """Before each module, what earlier tests left alive (imported torch, timm and transformers, cached
    models) leaves the garbage collector's sight: the engine's gc.collect (graph/runtime.release_memory)
    then scans only what this module makes."""
    gc.collect()
    gc.freeze()
    yield


@pytest.fixture(scope="session")
def export_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("onnx")


@pytest.fixture(scope="session")
def exported(export_dir):
    """exported(family, opset, dynamic) -> (onnx path, torch model, Family); cached."""
    from export.export_vit import export_onnx
    from tests.zoo import FAMILIES, make_model

    cache: dict = {}

    def get(family: str, opset: int = 17, dynamic: bool = True):
        key = (family, opset, dynamic)
        if key not in cache:
            fam = FAMILIES[family]
            model = make_model(fam)
            path = export_dir / f"{family}-op{opset}-{'dyn' if dynamic else 'static'}.onnx"
            export_onnx(model, path, fam.input_size, opset, dynamic)
            cache[key] = (path, model, fam)
        return cache[key]

    return get


def random_images(batch: int, size: tuple[int, int], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, 3, *size), dtype=np.float32)


class Recorder:
    """Score function wrapper that records the size of every batch."""

    def __init__(self, fn):
        self.fn = fn
        self.sizes: list[int] = []

    def __call__(self, images: np.ndarray) -> np.ndarray:
        self.sizes.append(len(images))
        return self.fn(images)
