"""A dependency-free progress bar on stderr (drawn only when stderr is a terminal)."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def progress(items: Iterable[T], total: int, label: str = "", first: int = 0, width: int = 30) -> Iterator[T]:
    """Yield ``items`` while drawing ``label [#####     ] 3/10 1.2 s/it`` on a terminal; ``first``: items done
    before these (a resumed run)."""
    stream = sys.stderr
    draw = stream.isatty() and total > 1
    start = time.perf_counter()
    for done, item in enumerate(items, first):
        if draw:
            _draw(stream, label, done, total, width, start, first)
        yield item
    if draw:
        _draw(stream, label, total, total, width, start, first)
        stream.write("\n")


def _draw(stream, label: str, done: int, total: int, width: int, start: float, first: int) -> None:
    filled = width * done // max(total, 1)
    rate = (time.perf_counter() - start) / (done - first) if done > first else 0.0
    stream.write(f"\r{label} [{'#' * filled}{' ' * (width - filled)}] {done}/{total} {rate:.2f} s/it")
    stream.flush()
