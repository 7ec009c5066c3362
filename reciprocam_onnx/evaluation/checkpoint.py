"""An evaluation's progress, saved after every batch so that an interrupted run resumes where it stopped.

One ``.npz`` file holds the run's key (model, dataset, methods, settings), how
far the dataset was read, the metric tallies and the example pictures. It is
written atomically: a run killed while saving leaves the previous batch's file.
A checkpoint of another run is refused, never mixed in.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import OptionError
from ..io.files import bytes_writer, write_all_atomic

CHECKPOINT = "checkpoint.npz"  # its name in a report folder
READ_ERRORS = (OSError, ValueError, KeyError, zipfile.BadZipFile)  # what reading a bad checkpoint raises


def save_checkpoint(path: str | os.PathLike, key: dict, state: dict, examples: list[dict]) -> None:
    """Write ``key``, ``state`` (JSON-able) and ``examples`` (the result's example dicts) to ``path`` atomically."""
    arrays: dict[str, Any] = {}  # Any: numpy's stubs read ** as its allow_pickle flag
    shown = []
    for k, example in enumerate(examples):
        arrays[f"image_{k}"] = example["image"]
        methods = list(example["maps"])
        for j, name in enumerate(methods):
            arrays[f"map_{k}_{j}"] = example["maps"][name]
        shown.append({**{f: example[f] for f in ("name", "boxes", "target")}, "methods": methods})
    text = json.dumps({"key": key, "state": state, "examples": shown})
    buffer = io.BytesIO()
    np.savez(buffer, meta=np.array(text), **arrays)
    write_all_atomic({Path(path): bytes_writer(buffer.getvalue())})


def read_checkpoint(path: str | os.PathLike) -> tuple[dict, dict, list[dict]]:
    """(run key, state, examples) saved at ``path``; raises what reading it raised (READ_ERRORS)."""
    with np.load(path, allow_pickle=False) as data:
        saved = json.loads(str(data["meta"]))
        examples = [
            {
                **{f: shown[f] for f in ("name", "target")},
                "boxes": [(cls, tuple(box)) for cls, box in shown["boxes"]],
                "image": data[f"image_{k}"],
                "maps": {name: data[f"map_{k}_{j}"] for j, name in enumerate(shown["methods"])},
            }
            for k, shown in enumerate(saved["examples"])
        ]
    return saved["key"], saved["state"], examples


def load_checkpoint(path: str | os.PathLike, key: dict) -> tuple[dict, list[dict]] | None:
    """(state, examples) saved at ``path`` by the run ``key``; None if there is no file. OptionError if it
    holds another run's progress or cannot be read."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        saved_key, state, examples = read_checkpoint(path)
    except READ_ERRORS as exc:
        raise OptionError(f"cannot resume from {path}: {exc}; delete it to start over") from None
    differ = sorted(name for name in {*key, *saved_key} if key.get(name) != saved_key.get(name))
    if differ:
        raise OptionError(
            f"{path} holds the progress of another run ({', '.join(differ)} differ); delete it to start over, "
            "or write the report to another folder"
        )
    return state, examples
