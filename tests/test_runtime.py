"""Provider choice: CUDA only when a session really starts on it, else a quiet CPU fallback."""

from __future__ import annotations

import numpy as np

from reciprocam_onnx import Explainer
from reciprocam_onnx.graph.runtime import CPU, CUDA, cuda_usable, resolve_providers
from tests.conftest import random_images


def test_default_providers_follow_what_really_works():
    assert resolve_providers(None) == ([CUDA, CPU] if cuda_usable() else [CPU])
    assert resolve_providers([CPU]) == [CPU]


def test_asking_for_cuda_falls_back_quietly(exported, capfd):
    path, _, fam = exported("timm-patch32")
    images = random_images(1, fam.input_size)
    ex = Explainer(path, providers=[CUDA, CPU])
    assert ex.device == ("cuda" if cuda_usable() else "cpu")
    np.testing.assert_allclose(ex.explain_all(images), Explainer(path, providers=[CPU]).explain_all(images), atol=1e-4)
    if not cuda_usable():
        assert "CUDAExecutionProvider" not in capfd.readouterr().err
