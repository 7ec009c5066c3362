"""Every ViT-ReciproCAM option in one place: allowed values, defaults, validation.

``Options`` is what ``Explainer``, ``fuse()``, the fused graph's metadata, the
CLI flags and ``reciprocam eval`` all take. docs/algorithm.md defines what each
option means. Options fall in three groups:

* the cut (``block``, ``optimize``): a new split for each value;
* the copies and read-out (``kernel``, ``window``, ``cls_token``, ``score``,
  ``residual``):
  one split serves every value (``Explainer.with_options``);
* how copies run (``precision``, ``unresolved``, ``max_batch`` for the
  Explainer, ``chunk`` for the fused graph);
* ``cache``: whether a verified split is kept for the next opening (split/cache.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from .errors import OptionError

KERNELS = ("3x3", "1x1")
WINDOWS = ("kept", "removed")
SCORES = ("softmax", "logits")
RESIDUALS = ("unmasked", "masked")
PRECISIONS = ("float32", "float16", "bfloat16")
UNRESOLVED = ("recompute", "warn")


@dataclass(frozen=True)
class Preset:
    """A named method: ``taps`` (option sets put over the options given), whose min-max maps are summed
    with ``weights`` (default all 1), min-max normalised again and raised to the power ``gamma``. The
    power changes no map's order of cells (so no peak), only how much of the map is bright."""

    taps: tuple[dict[str, Any], ...]
    weights: tuple[float, ...] | None = None
    gamma: float = 1.0

    def tap_weights(self) -> tuple[float, ...]:
        """One weight per tap."""
        return self.weights if self.weights is not None else (1.0,) * len(self.taps)

    @property
    def combines(self) -> bool:
        """More than one tap, or a power: maps are combined (else the preset is one tap's options)."""
        return len(self.taps) > 1 or self.gamma != 1.0


# "paper" is ViT-ReciproCAM as published (the defaults); "reciprocam+" localises better, chosen by
# measurement on tuning streams of two models and reported on a held-out one (docs/evaluation.md,
# "Beyond the paper"; benchmarks/preset_study.py).
PRESETS: dict[str, Preset] = {
    "paper": Preset(({},)),
    "reciprocam+": Preset(
        (
            {"block": -2, "residual": "masked", "kernel": "1x1", "score": "logits"},
            {"block": -1, "window": "removed", "score": "logits"},
            {"block": -2, "residual": "masked", "window": "removed", "score": "logits"},
            {"block": -3, "residual": "masked", "kernel": "1x1", "score": "logits"},
        ),
        weights=(1.0, 1.0, 1.0, 3.0),
        gamma=0.6,
    ),
}

CUT = ("block", "optimize", "input_size")
FUSED = ("block", "optimize", "kernel", "window", "cls_token", "score", "residual", "chunk")  # baked into a fused graph


def _option(default: Any, help: str, choices: tuple | None = None, metavar: tuple[str, ...] | None = None) -> Any:
    """A field with its help text, allowed values and, for a flag taking several numbers, their names."""
    return field(default=default, metadata={"help": help, "choices": choices, "metavar": metavar})


@dataclass(frozen=True)
class Options:
    """ViT-ReciproCAM options (docs/algorithm.md); invalid values raise OptionError."""

    block: int = _option(-2, "target block, Python-style index")
    kernel: str = _option(KERNELS[0], "mask kernel", KERNELS)
    window: str = _option(
        WINDOWS[0], "each copy keeps only the kernel's window of tokens (the paper), or removes it", WINDOWS
    )
    cls_token: bool = _option(True, "keep the prefix tokens (CLS etc.) in the masked copies")
    score: str = _option(SCORES[0], "score read from each copy", SCORES)
    residual: str = _option(RESIDUALS[0], "mask the residual stream too, or not (the paper)", RESIDUALS)
    optimize: bool = _option(True, "run the exact suffix rewrites that compute less (docs/design.md)")
    precision: str = _option(
        PRECISIONS[0],
        "precision of the masked copies: float16 is meant for CUDA, bfloat16 for CPUs with AVX512-BF16 or AMX "
        "(OpenVINO)",
        PRECISIONS,
    )
    unresolved: str = _option(
        UNRESOLVED[0],
        "bfloat16: a map that rounding erased is recomputed in float32, or only warned about",
        UNRESOLVED,
    )
    max_batch: int | None = _option(None, "masked copies per suffix run (default: from a memory budget)")
    chunk: int | None = _option(None, "fused graph: copies per ONNX Loop step (default: from a memory budget)")
    cache: bool = _option(True, "keep verified splits in the user's cache folder, to open the model faster next time")
    input_size: tuple[int, int] | None = _option(
        None,
        "input height and width, for models whose input leaves them open (default: from the model's metadata)",
        metavar=("H", "W"),
    )

    def __post_init__(self) -> None:
        for item in fields(self):
            value, choices = getattr(self, item.name), item.metadata["choices"]
            if choices is not None and value not in choices:
                raise OptionError(f"{item.name} must be one of {', '.join(choices)}, not {value!r}")
        for name in ("cls_token", "optimize", "cache"):
            if not isinstance(getattr(self, name), bool):
                raise OptionError(f"{name} must be True or False, not {getattr(self, name)!r}")
        if isinstance(self.block, bool) or not isinstance(self.block, int):
            raise OptionError(f"block must be an integer, not {self.block!r}")
        size = self.input_size
        if size is not None:
            if not (len(size) == 2 and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)):
                raise OptionError(f"input_size must be two positive whole numbers (height, width), not {size!r}")
            object.__setattr__(self, "input_size", tuple(size))
        for name in ("max_batch", "chunk"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 1 <= value < 2**31):
                raise OptionError(f"{name} must be a whole number from 1 to {2**31 - 1}, not {value!r}")

    def updated(self, **changes: Any) -> Options:
        """A copy with ``changes`` (option names checked)."""
        unknown = sorted(set(changes) - {f.name for f in fields(self)})
        if unknown:
            raise OptionError(f"unknown option {', '.join(unknown)}; options are {', '.join(names())}")
        return replace(self, **changes)

    def changed(self) -> dict[str, Any]:
        """The options that differ from their defaults."""
        default = Options()
        return {k: v for k, v in asdict(self).items() if v != getattr(default, k)}

    def fused_json(self) -> str:
        """The options a fused graph bakes in, as JSON for its metadata."""
        return json.dumps({name: getattr(self, name) for name in FUSED})

    @classmethod
    def from_fused_json(cls, text: str) -> Options:
        """Options read back from a fused graph's metadata (defaults where missing)."""
        data = json.loads(text)
        return cls(**{name: data[name] for name in FUSED if name in data})


def names() -> tuple[str, ...]:
    """Every option's name, in declaration order."""
    return tuple(f.name for f in fields(Options))


def resolve(options: Options | None = None, **changes: Any) -> Options:
    """``options`` (default Options()) with keyword ``changes`` applied; None values are ignored."""
    base = options if options is not None else Options()
    if not isinstance(base, Options):
        raise OptionError(f"options must be an Options object, not {type(base).__name__}")
    return base.updated(**{k: v for k, v in changes.items() if v is not None})


def preset_taps(name: str, base: Options | None = None, given: Iterable[str] = ()) -> tuple[Options, ...]:
    """The taps of preset ``name`` (PRESETS), each ``base`` with the tap's options on top. ``given``: the
    options the user set explicitly; one the preset sets itself is refused."""
    if name not in PRESETS:
        raise OptionError(f"unknown preset {name!r}; presets are {', '.join(PRESETS)}")
    taps = PRESETS[name].taps
    clash = sorted({key for tap in taps for key in tap} & set(given))
    if clash:
        raise OptionError(f"preset {name} sets {', '.join(clash)} itself: leave the option out, or drop the preset")
    base = base if base is not None else Options()
    return tuple(base.updated(**tap) for tap in taps)
