"""Images in: read with OpenCV, fit to the model's input size, normalise to NCHW float32.

OpenCV is imported where it is used: importing the package costs no OpenCV.
Limits (docs/errors.md, io/limits.py): files up to RECIPROCAM_MAX_IMAGE_BYTES,
images up to RECIPROCAM_MAX_IMAGE_PIXELS (checked by OpenCV from the header,
before decoding), and a crop that upsamples at most MAX_FIT_FACTOR times the
model's input area (a 30000x1 strip would need gigabytes).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import ImageError, OptionError
from .limits import limit

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

MAX_FIT_FACTOR = 64

RESIZE_MODES = ("crop", "stretch", "none")  # how an image is fitted to the model's input
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


def load_image(path: str | os.PathLike) -> np.ndarray:
    """An image file as RGB uint8 [H, W, 3]; ImageError if it cannot be read."""
    path = _readable_file(path, "image")
    return decode_image(np.fromfile(str(path), dtype=np.uint8), str(path))


def decode_image(data: bytes | np.ndarray, name: str) -> np.ndarray:
    """An encoded image (PNG, JPEG, ...) as RGB uint8 [H, W, 3]; ImageError naming ``name`` if it cannot
    be decoded or is above the limits."""
    pixels = limit("RECIPROCAM_MAX_IMAGE_PIXELS")
    os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(pixels))  # read by OpenCV's first decode
    import cv2

    if len(data) > limit("RECIPROCAM_MAX_IMAGE_BYTES"):
        raise ImageError(f"{name} is {_size(len(data))}, above the limit (RECIPROCAM_MAX_IMAGE_BYTES)")
    buffer = np.frombuffer(data, np.uint8) if isinstance(data, bytes) else data
    try:
        image = cv2.imdecode(buffer, cv2.IMREAD_COLOR) if buffer.size else None
    except cv2.error as exc:  # e.g. a header declaring more pixels than OPENCV_IO_MAX_IMAGE_PIXELS
        message = str(exc).strip().splitlines()[-1] if str(exc).strip() else "decoder error"
        raise ImageError(
            f"cannot read image {name}: {message} (at most {pixels} pixels: RECIPROCAM_MAX_IMAGE_PIXELS)"
        ) from None
    if image is None:
        raise ImageError(f"cannot read image {name}: not a supported image file, or corrupt")
    if image.shape[0] * image.shape[1] > pixels:
        raise ImageError(f"{name} has {image.shape[1]}x{image.shape[0]} pixels, above the limit {pixels}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def load_npy(path: str | os.PathLike, shape: tuple[int, ...]) -> np.ndarray:
    """A .npy file holding one real-valued tensor of ``shape`` (or [1, *shape]), as float32; ImageError
    if it cannot be read or holds anything else."""
    path = _readable_file(path, ".npy tensor")
    try:
        tensor = np.load(path, allow_pickle=False)
    except Exception as exc:  # numpy's header parser raises ValueError, SyntaxError, MemoryError, ...
        raise ImageError(f"cannot read {path} as a .npy tensor ({type(exc).__name__}: {exc})") from None
    if not isinstance(tensor, np.ndarray) or tensor.dtype.kind not in "fiu":
        kind = tensor.dtype if isinstance(tensor, np.ndarray) else type(tensor).__name__
        raise ImageError(f"{path} holds {kind} values; it must hold real numbers (a normalised image)")
    tensor = tensor[0] if tensor.ndim == len(shape) + 1 and len(tensor) == 1 else tensor
    if tensor.shape != tuple(shape):
        raise ImageError(f"{path} holds a tensor of shape {list(tensor.shape)}; the model takes {list(shape)}")
    return tensor.astype(np.float32)


def _readable_file(path: str | os.PathLike, what: str) -> Path:
    """``path`` if it is a file within RECIPROCAM_MAX_IMAGE_BYTES, else ImageError."""
    path = Path(path)
    if not path.is_file():
        if path.is_symlink():
            raise ImageError(f"{what} {path} is a symbolic link that leads nowhere (or to itself)")
        raise ImageError(f"{what} not found: {path}" if not path.exists() else f"{what} {path} is not a file")
    size = path.stat().st_size
    most = limit("RECIPROCAM_MAX_IMAGE_BYTES")
    if size > most:
        raise ImageError(f"{path} is {_size(size)}, above the {_size(most)} limit (RECIPROCAM_MAX_IMAGE_BYTES)")
    return path


def check_resize(mode: str) -> None:
    """OptionError unless ``mode`` is one of RESIZE_MODES (for callers that check before any image)."""
    if mode not in RESIZE_MODES:
        raise OptionError(f"resize must be one of {', '.join(RESIZE_MODES)}, not {mode!r}")


def _size(count: int) -> str:
    return f"{count / 2**20:.0f} MB" if count >= 2**20 else f"{count} bytes"


def fit_image(image: np.ndarray, size: tuple[int, int], mode: str = RESIZE_MODES[0]) -> np.ndarray:
    """Fit RGB ``image`` to ``size`` (H, W).

    ``crop``: scale the shorter side to fit, then centre-crop; ``stretch``: plain
    resize; ``none``: the image must already have the size.
    """
    import cv2

    if mode not in RESIZE_MODES:
        raise ImageError(f"resize mode must be one of {RESIZE_MODES}, not {mode!r}")
    height, width = size
    h, w = image.shape[:2]
    if (h, w) == (height, width):
        return image
    if mode == "none":
        raise ImageError(
            f"image is {w}x{h} (WxH) but the model takes {width}x{height}; "
            "resize it, or let the tool do it (--resize crop|stretch)"
        )
    if mode == "stretch":
        return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    scale = max(height / h, width / w)
    if h * w * scale * scale > MAX_FIT_FACTOR * height * width:
        raise ImageError(
            f"image is {w}x{h} (WxH): too elongated to crop to {width}x{height} "
            f"(it would be scaled to {round(w * scale)}x{round(h * scale)}); use --resize stretch"
        )
    resized = cv2.resize(
        image,
        (max(width, round(w * scale)), max(height, round(h * scale))),
        interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC,
    )
    top = (resized.shape[0] - height) // 2
    left = (resized.shape[1] - width) // 2
    return resized[top : top + height, left : left + width]


def normalise(image: np.ndarray, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> np.ndarray:
    """RGB uint8 [H, W, 3] -> float32 [3, H, W], (x/255 - mean) / std per channel."""
    scaled = image.astype(np.float32) / 255.0
    out = (scaled - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(out.transpose(2, 0, 1))


def preprocess(
    source: str | os.PathLike | np.ndarray,
    size: tuple[int, int],
    mean=None,
    std=None,
    mode: str = RESIZE_MODES[0],
    layout: str = "NCHW",
    dtype: str = "float32",
) -> tuple[np.ndarray, np.ndarray]:
    """(one model input, the fitted RGB uint8 image) for a file or RGB array.

    The input has the model's ``layout`` (NCHW: [3, H, W], NHWC: [H, W, 3]) and
    ``dtype``: float inputs are normalised with ``mean``/``std`` (default
    ImageNet's), integer (uint8) inputs are the raw pixels (the model normalises).
    """
    image = load_image(source) if not isinstance(source, np.ndarray) else source
    if image.ndim != 3 or image.shape[2] != 3:
        raise ImageError(f"expected an RGB image [H, W, 3]; got shape {list(image.shape)}")
    fitted = fit_image(image, size, mode)
    if np.dtype(dtype).kind in "iu":
        pixels = fitted.astype(dtype)
        return (pixels if layout == "NHWC" else np.ascontiguousarray(pixels.transpose(2, 0, 1))), fitted
    tensor = normalise(fitted, mean or IMAGENET_MEAN, std or IMAGENET_STD).astype(dtype)
    return (np.ascontiguousarray(tensor.transpose(1, 2, 0)) if layout == "NHWC" else tensor), fitted


def picture_of(tensor: np.ndarray, mean=None, std=None, layout: str = "NCHW") -> np.ndarray:
    """The RGB uint8 [H, W, 3] picture of one model input (for an overlay): raw pixels as they are,
    normalised ones scaled back with ``mean``/``std`` (default ImageNet's)."""
    pixels = np.asarray(tensor)
    hwc = pixels if layout == "NHWC" else pixels.transpose(1, 2, 0)
    if pixels.dtype.kind in "iu":
        return np.ascontiguousarray(np.clip(hwc, 0, 255).astype(np.uint8))
    mean_ = np.asarray(mean or IMAGENET_MEAN, np.float32)
    std_ = np.asarray(std or IMAGENET_STD, np.float32)
    rgb = np.clip((hwc.astype(np.float32) * std_ + mean_) * 255, 0, 255).round().astype(np.uint8)
    return np.ascontiguousarray(rgb)


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Entries directly inside ``folder`` named as images, sorted by name: files, and links that lead
    nowhere (reading them reports it) but not folders."""
    return sorted(
        p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and (p.is_file() or p.is_symlink())
    )
