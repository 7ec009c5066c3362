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
        return cls(**{f.name: None if data.get(f.name) is None else tuple(data[f.name]) for f in fields(cls)})


def read_model_info(model: onnx.ModelProto, path: Path | None = None) -> ModelInfo:
    """Collect labels/mean/std from the model's metadata, then its folder's manifest."""
    props = metadata(model)
    found = {}
    for key in ("labels", "mean", "std", "input_size"):
        try:
            found[key] = tuple(json.loads(props[key])) if key in props else None
        except (ValueError, TypeError):
            log.warning("ignoring unreadable metadata %r", key)
            found[key] = None
    info = ModelInfo(**found)
    if path is not None:
        manifest = _manifest_entry(Path(path))
        info = replace(
            info,
            **{
                k: tuple(manifest[v])
                for k, v in (("labels", "classes"), ("mean", "mean"), ("std", "std"))
                if getattr(info, k) is None and manifest.get(v)
            },
        )
        hugging_face = _hugging_face_configs(Path(path).parent)
        info = replace(info, **{k: v for k, v in hugging_face.items() if getattr(info, k) is None})
    return info


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
        found["input_size"] = (int(size["height"]), int(size["width"]))
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
