"""Class names from a text file, one per line."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import OptionError


def read_labels(path: str | os.PathLike) -> tuple[str, ...]:
    """The non-empty lines of ``path``, stripped; OptionError if it cannot be read or names a class twice."""
    try:
        lines = Path(path).read_text(encoding="utf-8-sig").splitlines()  # -sig: a byte-order mark is no name
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else exc
        raise OptionError(f"cannot read the labels file {path}: {reason}") from exc
    labels = tuple(line.strip() for line in lines if line.strip())
    if not labels:
        raise OptionError(f"the labels file {path} holds no class names")
    twice = sorted({name for name in labels if labels.count(name) > 1})
    if twice:
        raise OptionError(f"the labels file {path} names {', '.join(map(repr, twice[:3]))} more than once")
    return labels
