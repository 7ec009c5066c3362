"""What a model file says about itself: class names and input normalisation.

Looked up in order: the model's ``metadata_props`` (``labels``, ``mean``,
``std`` as JSON), then a ``manifest.json`` beside the model file whose entry
names that file. Missing facts stay None (callers fall back to ImageNet
mean/std, io/images.py, and class indices).
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
    for key in ("labels", "mean", "std"):
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
    return info


def _manifest_entry(model_path: Path) -> dict:
    manifest = model_path.parent / "manifest.json"
    if not manifest.is_file():
        return {}
    try:
        models = json.loads(manifest.read_text(encoding="utf-8")).get("models", {})
    except ValueError:
        log.warning("ignoring unreadable %s", manifest)
        return {}
    return next((m for m in models.values() if m.get("file") == model_path.name), {})
