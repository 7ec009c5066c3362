"""Limits and settings from the environment (docs/errors.md), each read and checked when used, so
that a bad value is one line naming the variable, never a failure at import."""

from __future__ import annotations

import os

from ..errors import OptionError

LIMITS = {  # variable: (default, what it bounds)
    "RECIPROCAM_MAX_IMAGE_BYTES": (512 << 20, "image and .npy file size, in bytes"),
    "RECIPROCAM_MAX_IMAGE_PIXELS": (100_000_000, "pixels of an image, checked from its header"),
    # a ViT's attention grows with the square of its tokens: 2048x2048 at patch 16 is 16384 tokens
    "RECIPROCAM_MAX_INPUT_PIXELS": (2048 * 2048, "pixels of a model's declared input"),
    "RECIPROCAM_THREADS": (0, "ONNX Runtime's (and OpenVINO's) threads (unset: the usable cores)"),
}


def limit(name: str) -> int:
    """The value of environment variable ``name`` (one of LIMITS), or its default; OptionError if it is
    not a whole number above 0."""
    default, _ = LIMITS[name]
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    if not text.isdigit() or int(text) < 1 or int(text) > 2**62:
        raise OptionError(f"{name} must be a whole number above 0, not {text!r}")
    return int(text)


def check_limits() -> None:
    """OptionError for the first variable of LIMITS that is set to something unusable."""
    for name in LIMITS:
        limit(name)
