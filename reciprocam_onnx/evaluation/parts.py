"""One long evaluation in parts: checkpoints that cover adjacent entry ranges of the same run, merged into one.

A part is a checkpoint (checkpoint.py) whose counts cover entries [start, stop)
of the run. :func:`start_part` writes an empty part that begins at an entry;
``evaluate`` with that checkpoint then continues from there, as it resumes any
run. :func:`merge_parts` adds two adjacent parts into the checkpoint of entries
[first's start, second's stop); resuming from it finishes the run. Metrics are
sums over images, so the merged run's report is the uninterrupted run's (up to
the rounding of those sums), but for the time per image (the parts' compute
times added up) and the examples (the first part's).
"""

from __future__ import annotations

import os

from ..errors import OptionError
from .checkpoint import READ_ERRORS, read_checkpoint, save_checkpoint
from .run import empty_state, merge_states


def _saved(path: str | os.PathLike) -> tuple[dict, dict, list[dict]]:
    """(run key, state, examples) of a part; OptionError if it cannot be read."""
    try:
        return read_checkpoint(path)
    except READ_ERRORS as exc:
        raise OptionError(f"cannot read the part {os.fspath(path)}: {exc}") from None


def start_part(like: str | os.PathLike, at: int, path: str | os.PathLike) -> None:
    """Write at ``path`` a part of ``like``'s run that begins at entry ``at``, nothing counted yet."""
    key, _, _ = _saved(like)
    if not 0 <= at <= key["entries"]:
        raise OptionError(f"a part of a run over {key['entries']} entries cannot begin at entry {at}")
    save_checkpoint(path, key, empty_state(key["methods"], at), [])


def merge_parts(first: str | os.PathLike, second: str | os.PathLike, out: str | os.PathLike) -> dict:
    """Write at ``out`` the progress of two adjacent parts of one run (``first`` ends where ``second`` starts;
    the examples are ``first``'s); returns the merged state."""
    key, a, examples = _saved(first)
    key_b, b, _ = _saved(second)
    if key_b != key:
        raise OptionError(f"{os.fspath(first)} and {os.fspath(second)} are parts of different runs")
    merged = merge_states(a, b)
    save_checkpoint(out, key, merged, examples)
    return merged
