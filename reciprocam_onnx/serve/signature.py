"""What the model server takes and returns for one model, and the checks that turn a request into work.

    inputs      the model's own image input, as it takes it (e.g. "input" FP32 [-1, 3, 224, 224],
                UINT8 [-1, H, W, 3] for a raw-pixel NHWC model), or
                "image_bytes" BYTES [-1]: encoded image files, decoded and fitted as `reciprocam explain`
                does (JSON carries each file as base64 text); and optionally
                "target" INT64 [-1]: the class to explain per image (default: the predicted one)
    parameters  all_classes (bool), top_k (int), overlay (bool), resize ("crop", "stretch", "none")
    outputs     "scores" FP32 [-1, C]; "target" INT64 [-1]; "saliency" FP32 [-1, h, w] in [0, 1]
                ([-1, C, h, w] with all_classes); "saliency_u8" UINT8 (the same, x255 rounded);
                "overlay" BYTES [-1] (PNG files, when asked)

A request that asks for no map (only scores or target) runs the model alone, not its masked copies.
``scores`` with the output parameter ``classification: K`` (Triton's classification extension; the request
parameter ``top_k`` sets it for every request) comes back as BYTES [-1, K], "score:index:label" strings.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..contract import SplitInfo
from ..engine.base import check_images, choose_targets
from ..engine.scores import maps_u8
from ..errors import ImageError, OptionError, RequestError
from ..io.images import RESIZE_MODES, decode_image, picture_of
from ..io.overlay import overlay, png_bytes
from ..options import Options
from .batcher import Outcome, Work
from .tensors import BYTES, DATATYPES, Tensor, WireRequest, datatype_of, from_base64

log = logging.getLogger(__name__)

IMAGE_BYTES, TARGET = "image_bytes", "target"
SCORES, SALIENCY, SALIENCY_U8, OVERLAY = "scores", "saliency", "saliency_u8", "overlay"
OUTPUTS = (SCORES, TARGET, SALIENCY, SALIENCY_U8, OVERLAY)
DEFAULT_OUTPUTS = (SCORES, TARGET, SALIENCY, SALIENCY_U8)
MAP_OUTPUTS = (SALIENCY, SALIENCY_U8, OVERLAY)
CLASSIFICATION = "classification"  # an output parameter: Triton's classification extension
PLATFORM = "reciprocam_onnx"
VERSION = "1"


@dataclass(frozen=True)
class Query:
    """A checked request: images as the model takes them, and what to compute and return.
    ``pictures``: the fitted RGB pictures of encoded files (for overlays); None for tensors."""

    id: str | None
    images: np.ndarray
    pictures: tuple[np.ndarray, ...] | None
    targets: np.ndarray | None
    outputs: Mapping[str, Mapping[str, Any]]
    all_classes: bool = False
    top_k: int | None = None

    @property
    def work(self) -> Work:
        maps = any(name in MAP_OUTPUTS for name in self.outputs)
        return Work(self.images, self.targets, maps=maps, all_classes=self.all_classes and maps)


class Signature:
    """The server's view of one explainer: tensors in and out, model parameters, request checks."""

    def __init__(
        self,
        name: str,
        info: SplitInfo,
        options: Options,
        labels: tuple[str, ...] | None,
        preset: str | None,
        max_images: int,
    ):
        if info.input_name in (IMAGE_BYTES, TARGET):
            raise OptionError(f"the model's input is named {info.input_name!r}, a name the server's own inputs take")
        self.name, self.info, self.options, self.labels = name, info, options, labels
        self.preset, self.max_images = preset, max_images
        self.image_datatype = datatype_of(np.dtype(info.input_dtype))

    # what the model server says about the model

    def inputs(self) -> list[dict]:
        image = [-1, *self.info.image.shape(1)[1:]]
        return [
            {"name": self.info.input_name, "datatype": self.image_datatype, "shape": image},
            {"name": IMAGE_BYTES, "datatype": BYTES, "shape": [-1]},
            {"name": TARGET, "datatype": "INT64", "shape": [-1]},
        ]

    def outputs(self) -> list[dict]:
        grid, classes = list(self.info.grid), self.info.classes
        return [
            {"name": SCORES, "datatype": "FP32", "shape": [-1, classes]},
            {"name": TARGET, "datatype": "INT64", "shape": [-1]},
            {"name": SALIENCY, "datatype": "FP32", "shape": [-1, *grid]},
            {"name": SALIENCY_U8, "datatype": "UINT8", "shape": [-1, *grid]},
            {"name": OVERLAY, "datatype": BYTES, "shape": [-1]},
        ]

    def parameters(self) -> dict[str, Any]:
        """The facts a client needs beside the tensors (model_facts), and this server's limits."""
        return {
            **model_facts(self.info, self.options, self.labels, self.preset),
            "all_classes_shape": [-1, self.info.classes, *self.info.grid],
            "resize": RESIZE_MODES[0],
            "max_images": self.max_images,
        }

    def metadata(self) -> dict[str, Any]:
        """The v2 model metadata (REST's form; ``parameters`` is this server's extension)."""
        return {
            "name": self.name,
            "versions": [VERSION],
            "platform": PLATFORM,
            "inputs": self.inputs(),
            "outputs": self.outputs(),
            "parameters": self.parameters(),
        }

    # requests

    def images_in(self, wire: WireRequest) -> int:
        """How many images a request holds (for the queue's quick refusal before any decoding)."""
        for tensor in wire.inputs:
            if tensor.name in (self.info.input_name, IMAGE_BYTES) and tensor.data.ndim:
                return len(tensor.data) if tensor.name == self.info.input_name else tensor.data.size
        return 0

    def query(self, wire: WireRequest) -> Query:
        """The request checked and its images decoded, else RequestError (400) naming what is wrong."""
        given = self._given_inputs(wire)
        all_classes = _flag(wire.parameters, "all_classes")
        resize = wire.parameters.get("resize", RESIZE_MODES[0])
        if resize not in RESIZE_MODES:
            raise RequestError(f"parameter 'resize' must be one of {', '.join(RESIZE_MODES)}, not {resize!r:.40}")
        if self.info.input_name in given:
            images, pictures = self._tensor_images(given[self.info.input_name]), None
        else:
            images, pictures = self._decoded_images(given[IMAGE_BYTES], resize)
        targets = self._targets(given.get(TARGET), len(images))
        top_k = self.check_top_k(wire.parameters.get("top_k"), "parameter 'top_k'")
        outputs = self._outputs(wire.outputs, _flag(wire.parameters, "overlay"), top_k)
        return Query(wire.id, images, pictures, targets, outputs, all_classes, top_k)

    def _given_inputs(self, wire: WireRequest) -> dict[str, Tensor]:
        known = (self.info.input_name, IMAGE_BYTES, TARGET)
        given: dict[str, Tensor] = {}
        for tensor in wire.inputs:
            if tensor.name not in known:
                raise RequestError(f"unknown input {tensor.name!r}: this model takes {self._takes()}")
            if tensor.name in given:
                raise RequestError(f"input {tensor.name!r} is given twice")
            given[tensor.name] = tensor
        if (self.info.input_name in given) == (IMAGE_BYTES in given):
            which = "both" if IMAGE_BYTES in given else "neither"
            raise RequestError(f"give images as {self.info.input_name!r} or as {IMAGE_BYTES!r}, not {which}")
        return given

    def _takes(self) -> str:
        image, files, target = (f"{i['name']!r} ({i['datatype']} {i['shape']})" for i in self.inputs())
        return f"{image} or {files}, and optionally {target}"

    def _count(self, count: int, name: str) -> None:
        if count == 0:
            raise RequestError(f"input {name!r} holds no images")
        if count > self.max_images:
            raise RequestError(f"input {name!r} holds {count} images; this server takes {self.max_images} per request")

    def _tensor_images(self, tensor: Tensor) -> np.ndarray:
        name, expected = tensor.name, self.inputs()[0]
        if tensor.datatype != self.image_datatype:
            raise RequestError(
                f"input {name!r} is {tensor.datatype}; this model takes {expected['datatype']} {expected['shape']}"
            )
        if tensor.data.ndim != len(expected["shape"]) or list(tensor.data.shape[1:]) != expected["shape"][1:]:
            raise RequestError(f"input {name!r} has shape {tensor.shape}; this model takes {expected['shape']}")
        self._count(len(tensor.data), name)
        try:
            return check_images(tensor.data, self.info.image)
        except ImageError as exc:
            raise RequestError(f"input {name!r}: {exc}") from None

    def _decoded_images(self, tensor: Tensor, resize: str) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
        if tensor.datatype != BYTES:
            raise RequestError(f"input {IMAGE_BYTES!r} is {tensor.datatype}; it takes BYTES (encoded image files)")
        files = tensor.data.reshape(-1)
        self._count(len(files), IMAGE_BYTES)
        tensors, pictures = [], []
        for index, item in enumerate(files):
            where = f"{IMAGE_BYTES}[{index}]"
            blob = from_base64(where, item) if isinstance(item, str) else item
            try:
                tensor_, picture = self.info.preprocess(decode_image(blob, where), resize)
            except ImageError as exc:
                message = str(exc) if where in str(exc) else f"{where}: {exc}"
                raise RequestError(message) from None
            tensors.append(tensor_)
            pictures.append(picture)
        return np.stack(tensors), tuple(pictures)

    def _targets(self, tensor: Tensor | None, images: int) -> np.ndarray | None:
        if tensor is None:
            return None
        if tensor.datatype == BYTES or DATATYPES[tensor.datatype].kind not in "iu":
            raise RequestError(f"input {TARGET!r} is {tensor.datatype}; it takes class indices (INT64)")
        if tensor.data.size != images:
            raise RequestError(f"input {TARGET!r} holds {tensor.data.size} classes for {images} images")
        try:
            return choose_targets(tensor.data.reshape(-1), np.zeros((images, 0)), self.info.classes)
        except OptionError as exc:
            raise RequestError(f"input {TARGET!r}: {exc}") from None

    def check_top_k(self, value: object, what: str) -> int | None:
        """``value`` as a count of classes (1 to C; None stays None), else RequestError naming ``what``."""
        if value is None:
            return None
        classes = self.info.classes
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= classes:
            raise RequestError(f"{what} must be a whole number from 1 to {classes} (the classes), not {value!r:.40}")
        return value

    def _outputs(
        self, requested: Mapping[str, Mapping[str, Any]] | None, overlay_: bool, top_k: int | None
    ) -> dict[str, Mapping[str, Any]]:
        chosen: dict[str, Mapping[str, Any]] = (
            dict(requested) if requested is not None else {name: {} for name in DEFAULT_OUTPUTS}
        )
        unknown = sorted(set(chosen) - set(OUTPUTS))
        if unknown:
            raise RequestError(f"unknown output {unknown[0]!r}: this model returns {', '.join(OUTPUTS)}")
        for name, parameters in chosen.items():
            if CLASSIFICATION in parameters:
                if name != SCORES:
                    raise RequestError(f"output {name!r} cannot be a classification; only {SCORES!r} can")
                self.check_top_k(parameters[CLASSIFICATION], f"output {SCORES!r}: {CLASSIFICATION}")
        if overlay_:
            chosen.setdefault(OVERLAY, {})
        if top_k is not None and SCORES in chosen and CLASSIFICATION not in chosen[SCORES]:
            chosen[SCORES] = {**chosen[SCORES], CLASSIFICATION: top_k}
        return chosen

    # answers

    def answer(self, query: Query, outcome: Outcome) -> tuple[Tensor, ...]:
        """The requested outputs, in the order asked."""
        return tuple(self._output(name, parameters, query, outcome) for name, parameters in query.outputs.items())

    def _output(self, name: str, parameters: Mapping[str, Any], query: Query, outcome: Outcome) -> Tensor:
        if name == SCORES:
            if CLASSIFICATION in parameters:
                return Tensor(name, BYTES, self.classification(outcome.scores, parameters[CLASSIFICATION]))
            return Tensor(name, "FP32", outcome.scores.astype(np.float32))
        if name == TARGET:
            return Tensor(name, "INT64", outcome.targets.astype(np.int64))
        maps = outcome.every if query.all_classes else outcome.maps
        assert maps is not None and outcome.maps is not None  # asked for maps: the work made them
        if name == SALIENCY:
            return Tensor(name, "FP32", maps)
        if name == SALIENCY_U8:
            return Tensor(name, "UINT8", maps_u8(maps))
        pictures = query.pictures or tuple(
            picture_of(image, self.info.model.mean, self.info.model.std, self.info.input_layout)
            for image in query.images
        )
        files = np.empty(len(pictures), object)
        files[:] = [png_bytes(overlay(picture, map_)) for picture, map_ in zip(pictures, outcome.maps)]
        return Tensor(name, BYTES, files)

    def classification(self, scores: np.ndarray, count: int) -> np.ndarray:
        """The top ``count`` classes of each image as "score:index[:label]" (Triton's form), best first."""
        order = np.argsort(-scores, axis=1, kind="stable")[:, :count]
        rows = [[self._entry(float(row[k]), int(k)) for k in ranked] for row, ranked in zip(scores, order)]
        out = np.empty((len(rows), count), object)
        out[:] = rows
        return out

    def _entry(self, score: float, index: int) -> str:
        label = f":{self.labels[index]}" if self.labels is not None else ""
        return f"{score:f}:{index}{label}"

    def label(self, index: int) -> str:
        """The name of class ``index`` (its number when the model names none)."""
        return self.labels[index] if self.labels is not None else str(index)


def model_facts(
    info: SplitInfo, options: Options, labels: tuple[str, ...] | None, preset: str | None
) -> dict[str, Any]:
    """What a client of a served or Triton-deployed explainer needs beside its tensors: the grid, the
    classes and their names, the method and the input's normalisation."""
    return {
        "grid": list(info.grid),
        "classes": info.classes,
        "labels": list(labels) if labels is not None else None,
        "block": info.block,
        "preset": preset,
        "options": {key: value for key, value in asdict(options).items() if value is not None},
        "input_layout": info.input_layout,
        "mean": list(info.model.mean) if info.model.mean else None,
        "std": list(info.model.std) if info.model.std else None,
    }


def _flag(parameters: Mapping[str, Any], name: str) -> bool:
    value = parameters.get(name, False)
    if not isinstance(value, bool):
        raise RequestError(f"parameter {name!r} must be true or false, not {value!r:.40}")
    return value
