"""The split contract: what a prefix and a suffix take and promise, and the split folder format.

    image ──prefix──► residual R [B, T, D], and the masked inputs: normed F = LN1(R) [B, T, D]
                      and/or its projections normed_projected_k = F W_k [B, T, k]
    (R, masked inputs[, slot tables]) ──suffix──► logits [B', C]

The suffix promises, for any batch B' of masked inputs:

* R of batch 1 is broadcast over the copies, or has batch B' itself;
* it returns what the model returns for the image whose prefix outputs these
  are, with every masked input row scaled as the copy's weights say;
* a suffix with ``SplitInfo.slots`` takes its masked inputs as slots
  (copies/slots.py) plus ``slot_log_count`` [B', U] and ``token_slot`` [B', T];
  one slot per token (``U = T``) is the plain form.

A split folder holds prefix.onnx, suffix.onnx and split.json (``SplitInfo``),
each written atomically. The engine's suffix (engine/suffix.py) takes
``image_index`` and the slot tables ``slot_token`` and ``slot_weight`` and
builds the copies itself; a fused graph returns ``FUSED_OUTPUTS``.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import onnx

from .analysis.model_info import ModelInfo
from .errors import ModelLoadError
from .graph.model import LAYOUTS, ImageInput, load_model
from .io.files import bytes_writer, output_folder, write_all_atomic
from .io.images import RESIZE_MODES, preprocess

# prefix outputs = suffix inputs
RESIDUAL = "residual"
NORMED = "normed"
SLOT_LOG_COUNT = "slot_log_count"  # float32 [B', U]: log of how many tokens each slot stands for
TOKEN_SLOT = "token_slot"  # int64 [B', T]: the slot of every token
# the engine's suffix: copies built inside it from one image's prefix outputs
IMAGE_INDEX = "image_index"  # int64 [1]
SLOT_TOKEN = "slot_token"  # int64 [n, U]
SLOT_WEIGHT = "slot_weight"  # float32 [n, U]
# a fused graph
FUSED_OUTPUTS = ("logits", "saliency", "saliency_u8")
FUSED_OPTIONS_KEY = "reciprocam.fused"
FUSED_SPLIT_KEY = "reciprocam.split"
FUSED_PRESET_KEY = "reciprocam.preset"  # a preset's fused graph: its name, taps' options, weights and gamma

PREFIX_FILE, SUFFIX_FILE, INFO_FILE = "prefix.onnx", "suffix.onnx", "split.json"
SPLIT_FORMAT = "reciprocam-split/3"
# in split.json: SHA-256 of prefix.onnx, of suffix.onnx, and (under "split.json") of every entry but
# "model", which may be edited (class names, mean, std); the rest describes the graphs and may not
CHECKSUMS_KEY = "sha256"
SHARED_FILE, SHARED_FORMAT = "shared.json", "reciprocam-shared/1"
EDITABLE_KEY = "model"


def tap_input(block: int, name: str) -> str:
    """The output of a shared prefix (``SharedSplit``) that is suffix input ``name`` of the cut at ``block``."""
    return f"block_{block}/{name}"


def projected_name(k: int) -> str:
    """The suffix input holding F's k-th hoisted projection (rewrites/hoist.py)."""
    return f"{NORMED}_projected_{k}"


@dataclass(frozen=True)
class Rewrite:
    """What one graph rewrite did to a split: applied, or why not."""

    name: str
    applied: bool
    reason: str = ""

    def __str__(self) -> str:
        return f"{self.name} yes" if self.applied else f"{self.name} no ({self.reason})"


@dataclass(frozen=True)
class SplitInfo:
    """Everything the engine needs besides the two graphs; saved as split.json."""

    block: int
    blocks: int
    input_name: str
    input_shape: tuple[int, int, int]
    static_batch: int | None
    output_name: str
    tokens: int
    prefix_tokens: int
    grid: tuple[int, int]
    width: int
    classes: int  # 0 when the output is not class scores [B, C]
    residual_tensor: str
    normed_tensor: str
    masked_inputs: tuple[str, ...] = (NORMED,)
    optimized: bool = False
    slots: bool = False  # masked inputs are a copy's distinct rows (rewrites/slots.py)
    model: ModelInfo = ModelInfo()
    rewrites: tuple[Rewrite, ...] = ()
    input_dtype: str = "float32"
    input_layout: str = LAYOUTS[0]
    dtype: str = "float32"  # of the residual stream: what the cut tensors and the suffix compute in
    copies_per_run: int | None = None  # the suffix takes at most this many copies per run (None: any)
    output_shape: tuple[int, ...] | None = None  # per image (None in older split folders: [classes])
    all_blocks: int | None = None  # blocks in every stage; ``blocks`` counts the tapped (last) stage's

    @property
    def cells(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def image(self) -> ImageInput:
        """The model's image input (name, size, dtype, layout)."""
        channels, height, width = self.input_shape
        return ImageInput(
            self.input_name, channels, height, width, self.static_batch, self.input_dtype, self.input_layout
        )

    def preprocess(self, source: str | os.PathLike | np.ndarray, resize: str = RESIZE_MODES[0]):
        """(one input for this model, the fitted RGB uint8 picture) from an image file or RGB array:
        fitted to the model's size, in its layout and dtype, normalised with its mean/std unless it takes
        raw pixels (io/images.py)."""
        return preprocess(
            source, self.input_shape[1:], self.model.mean, self.model.std, resize, self.input_layout, self.input_dtype
        )

    def rewrites_line(self) -> str:
        """e.g. 'batch-dynamic yes, head-rows yes, hoist no (...), slots yes'."""
        return ", ".join(map(str, self.rewrites)) or "none"

    def to_dict(self) -> dict:
        """The JSON-ready form, with its format."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["model"] = self.model.to_dict()
        data["rewrites"] = [[r.name, r.applied, r.reason] for r in self.rewrites]
        return {"format": SPLIT_FORMAT, **data}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> SplitInfo:
        return cls.from_dict(json.loads(text))

    @classmethod
    def from_dict(cls, given: object) -> SplitInfo:
        """From :meth:`to_dict`'s form (also with split.json's checksums); ``given`` is not changed."""
        written = given.get("format") if isinstance(given, dict) else None
        if not isinstance(given, dict) or written != SPLIT_FORMAT:
            older = isinstance(written, str) and written.startswith("reciprocam-split/")
            why = f"written by another version of reciprocam-onnx ({written})" if older else "not a split description"
            raise ModelLoadError(f"{why}; split (or fuse) the model again with this version")
        data = {key: value for key, value in given.items() if key not in ("format", CHECKSUMS_KEY)}
        data["model"] = ModelInfo.from_dict(data.get("model") or {})
        data["rewrites"] = tuple(Rewrite(*item) for item in data.get("rewrites", ()))
        for key in ("input_shape", "grid", "masked_inputs", "output_shape"):
            if data.get(key) is not None:
                data[key] = tuple(data[key])
        return cls(**data)


@dataclass(frozen=True)
class SplitModel:
    """The two halves of a model cut at a block, and the facts about it."""

    prefix: onnx.ModelProto
    suffix: onnx.ModelProto
    info: SplitInfo
    prefix_file: Path | None = None  # the prefix as a file, where it was read from one (a session opens that)


@dataclass(frozen=True)
class SharedSplit:
    """A model cut at several blocks behind one prefix, which returns every cut's suffix inputs
    (``tap_input``) from one run: a method that taps several blocks runs the model's first part once.
    Each cut's ``prefix`` is the shared one. Saved by :func:`save_shared` (a user's split cache)."""

    prefix: onnx.ModelProto
    cuts: tuple[SplitModel, ...]  # one per block, earliest first

    def at(self, block: int) -> SplitModel:
        """The cut at block ``block`` (0..blocks-1)."""
        return next(cut for cut in self.cuts if cut.info.block == block)


def prefix_outputs(info: SplitInfo, shared: bool) -> dict[str, str]:
    """{suffix input: the prefix output that feeds it} for a cut: the same names in a split's own
    prefix, ``tap_input`` names in a shared one."""
    names = (RESIDUAL, *info.masked_inputs)
    return {name: tap_input(info.block, name) if shared else name for name in names}


def save_split(split: SplitModel, folder: str | os.PathLike) -> Path:
    """Write prefix.onnx, suffix.onnx and split.json into ``folder``: all three, or none of them.

    split.json is renamed into place last and holds the SHA-256 of both graphs, so a
    folder torn by a run killed between the renames is refused when read.
    """
    folder = output_folder(folder)
    blobs = {PREFIX_FILE: split.prefix.SerializeToString(), SUFFIX_FILE: split.suffix.SerializeToString()}
    data = split.info.to_dict()
    data[CHECKSUMS_KEY] = {name: _sha256(blob) for name, blob in blobs.items()} | {INFO_FILE: _fixed_part(data)}
    blobs[INFO_FILE] = (json.dumps(data, indent=2) + "\n").encode("utf-8")
    write_all_atomic({folder / name: bytes_writer(blob) for name, blob in blobs.items()})
    return folder


def is_split_folder(path: str | os.PathLike) -> bool:
    """True if ``path`` is a folder written by :func:`save_split`."""
    return isinstance(path, (str, os.PathLike)) and (Path(path) / INFO_FILE).is_file()


def load_split(folder: str | os.PathLike) -> SplitModel:
    """Read a folder written by :func:`save_split`; refuse one whose graphs or graph facts are not those
    it was written with (a torn write, files swapped, split.json edited outside its "model" entry)."""
    folder = Path(folder)
    try:
        data = json.loads((folder / INFO_FILE).read_text(encoding="utf-8"))
        info = SplitInfo.from_dict(data)
        checksums = data[CHECKSUMS_KEY]
        expected = {name: str(checksums[name]) for name in (PREFIX_FILE, SUFFIX_FILE, INFO_FILE)}
    except ModelLoadError as exc:
        raise ModelLoadError(f"{folder / INFO_FILE}: {exc}") from None
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise ModelLoadError(f"{folder / INFO_FILE} is not a readable split description ({exc})") from None
    if _fixed_part(data) != expected[INFO_FILE]:
        raise ModelLoadError(
            f"{folder / INFO_FILE} was edited outside its {EDITABLE_KEY!r} entry (class names, mean, std), "
            "which alone may change; split the model again"
        )
    graphs = []
    for name in (PREFIX_FILE, SUFFIX_FILE):
        path = folder / name
        try:
            blob = path.read_bytes()
        except OSError as exc:
            raise ModelLoadError(f"split folder {folder} lacks a readable {name} ({exc.strerror or exc})") from None
        if _sha256(blob) != expected[name]:
            raise ModelLoadError(
                f"split folder {folder} is torn or edited: {name} is not the graph split.json describes "
                "(an interrupted write?); split the model again"
            )
        graphs.append(load_model(path))
    return SplitModel(graphs[0], graphs[1], info, folder / PREFIX_FILE)


def save_shared(shared: SharedSplit, folder: str | os.PathLike) -> Path:
    """Write the shared prefix, every cut's suffix and shared.json (their facts and checksums) into ``folder``,
    all or none (shared.json last)."""
    folder = output_folder(folder)
    blobs = {PREFIX_FILE: shared.prefix.SerializeToString()}
    blobs |= {_shared_suffix(cut.info): cut.suffix.SerializeToString() for cut in shared.cuts}
    checksums = {name: _sha256(blob) for name, blob in blobs.items()}
    data = {"format": SHARED_FORMAT, "cuts": [cut.info.to_dict() for cut in shared.cuts], CHECKSUMS_KEY: checksums}
    blobs[SHARED_FILE] = json.dumps(data).encode("utf-8")
    write_all_atomic({folder / name: bytes_writer(blob) for name, blob in blobs.items()})
    return folder


def load_shared(folder: str | os.PathLike) -> SharedSplit:
    """Read a folder written by :func:`save_shared`; ModelLoadError for one torn, edited or of another version."""
    folder = Path(folder)
    try:
        data = json.loads((folder / SHARED_FILE).read_text(encoding="utf-8"))
        if data.get("format") != SHARED_FORMAT:
            raise ModelLoadError(f"not a shared split of this version ({data.get('format')})")
        infos = [SplitInfo.from_dict(entry) for entry in data["cuts"]]
        checksums = data[CHECKSUMS_KEY]
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ModelLoadError(f"{folder / SHARED_FILE} is not a readable shared split ({exc})") from None
    graphs = {}
    for name in (PREFIX_FILE, *map(_shared_suffix, infos)):
        try:
            blob = (folder / name).read_bytes()
        except OSError as exc:
            raise ModelLoadError(f"shared split {folder} lacks a readable {name} ({exc.strerror or exc})") from None
        if _sha256(blob) != checksums.get(name):
            raise ModelLoadError(f"shared split {folder} is torn or edited: {name} is not the graph it describes")
        graphs[name] = onnx.load_from_string(blob)
    prefix, file = graphs[PREFIX_FILE], folder / PREFIX_FILE
    return SharedSplit(prefix, tuple(SplitModel(prefix, graphs[_shared_suffix(info)], info, file) for info in infos))


def _shared_suffix(info: SplitInfo) -> str:
    return f"suffix_{info.block}.onnx"


def _sha256(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


def _fixed_part(data: dict) -> str:
    """The checksum of split.json's entries that describe the graphs (all but "model" and the checksums)."""
    fixed = {key: value for key, value in data.items() if key not in (EDITABLE_KEY, CHECKSUMS_KEY)}
    return _sha256(json.dumps(fixed, sort_keys=True).encode("utf-8"))
