"""What a model file says about itself: class names, input normalisation and size.

Looked up in order: the model's ``metadata_props`` (``labels``, ``mean``,
``std``, ``input_size`` as JSON), then a ``manifest.json`` beside the model
file whose entry names that file, then the Hugging Face ``config.json`` and
``preprocessor_config.json`` that ``optimum-cli export onnx`` writes beside
it. Missing facts stay None (callers fall back to ImageNet mean/std,
io/images.py, and class indices; a model with an open input size then needs
one given).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, fields, replace
from pathlib import Path

import onnx

from ..graph.model import metadata

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelInfo:
    """Class names and normalisation of a model, each None when unknown."""

    labels: tuple[str, ...] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    input_size: tuple[int, ...] | None = None  # (H, W)

    def label(self, index: int) -> str:
        """The class name of ``index``, or the index itself as text."""
        if self.labels is not None and 0 <= index < len(self.labels):
            return self.labels[index]
        return str(index)

    def to_dict(self) -> dict:
        return {f.name: None if getattr(self, f.name) is None else list(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict) -> ModelInfo:
        """From :meth:`to_dict`'s form; ValueError naming the first field that is not what it says."""
        if not isinstance(data, dict):
            raise ValueError(f"model facts must be a mapping, not {type(data).__name__}")
        return cls(**{f.name: checked(f.name, data.get(f.name)) for f in fields(cls)})


def checked(name: str, value: object) -> tuple | None:
    """``value`` as the tuple ModelInfo keeps in field ``name`` (None stays None); ValueError if it is not
    a list of class names, 3 (or 1) finite numbers (std above 0), or an input size of two whole numbers above 0."""
    if value is None:
        return None
    items = tuple(value) if isinstance(value, (list, tuple)) else ()
    if name == "labels":
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in items):
            raise ValueError(f"labels must be a list of class names, not {value!r:.80}")
        return items
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in items)
    if name == "input_size":
        if not numbers or len(items) != 2 or not all(isinstance(v, int) and v > 0 for v in items):
            raise ValueError(f"input_size must be two whole numbers above 0 (height, width), not {value!r:.80}")
        return items
    if not numbers or len(items) not in (1, 3) or not all(math.isfinite(v) and (name != "std" or v > 0) for v in items):
        above = " above 0" if name == "std" else ""
        raise ValueError(f"{name} must be 3 finite numbers{above} (one per RGB channel), or 1, not {value!r:.80}")
    return tuple(float(v) for v in items)


FIELDS = tuple(f.name for f in fields(ModelInfo))


def read_model_info(model: onnx.ModelProto, path: Path | None = None) -> ModelInfo:
    """Collect labels/mean/std from the model's metadata, then its folder's manifest."""
    props = metadata(model)
    info = ModelInfo(**{key: _usable(key, props.get(key), "metadata", parse=True) for key in FIELDS})
    if path is not None:
        manifest = _manifest_entry(Path(path))
        names = {"labels": "classes", "mean": "mean", "std": "std"}
        from_manifest = {k: _usable(k, manifest.get(v), "manifest.json") for k, v in names.items()}
        info = replace(info, **{k: v for k, v in from_manifest.items() if getattr(info, k) is None})
        hugging_face = _hugging_face_configs(Path(path).parent)
        from_hf = {k: _usable(k, v, "Hugging Face config") for k, v in hugging_face.items()}
        info = replace(info, **{k: v for k, v in from_hf.items() if getattr(info, k) is None})
    return info


def _usable(key: str, value: object, source: str, parse: bool = False) -> tuple | None:
    """``value`` checked for field ``key``; None, with a warning, when it is not usable."""
    if value is None:
        return None
    try:
        return checked(key, json.loads(str(value)) if parse else value)
    except ValueError as exc:
        log.warning("ignoring %s %r: %s", source, key, exc)
        return None


def _hugging_face_configs(folder: Path) -> dict:
    """labels, mean, std and input_size from a Hugging Face export's config files, where given."""
    config, processor = (_read_json(folder / name) for name in ("config.json", "preprocessor_config.json"))
    found: dict = {}
    names = config.get("id2label") or {}
    if names and not all(str(v).startswith("LABEL_") for v in names.values()):
        found["labels"] = tuple(str(names.get(str(k), k)) for k in range(len(names)))
    if processor.get("do_normalize", True):
        for key, name in (("mean", "image_mean"), ("std", "image_std")):
            if isinstance(processor.get(name), list):
                found[key] = tuple(processor[name])
    size = processor.get("crop_size") if processor.get("do_center_crop") else processor.get("size")
    if isinstance(size, dict) and {"height", "width"} <= set(size):
        found["input_size"] = (size["height"], size["width"])
    elif isinstance(config.get("image_size"), int):
        found["input_size"] = (config["image_size"],) * 2
    return found


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        log.warning("ignoring unreadable %s", path)
        return {}
    return data if isinstance(data, dict) else {}


def _manifest_entry(model_path: Path) -> dict:
    models = _read_json(model_path.parent / "manifest.json").get("models", {})
    return next((m for m in models.values() if m.get("file") == model_path.name), {})
