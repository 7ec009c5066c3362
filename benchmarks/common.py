"""Timing and memory helpers for the benchmarks (not tests: no assertions here)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path


def median_seconds(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def reset_peak_rss() -> None:
    """Reset this process's peak RSS (Linux: write 5 to /proc/self/clear_refs)."""
    Path("/proc/self/clear_refs").write_text("5")


def peak_rss_mb() -> float:
    """Peak resident memory since the last reset, in MB (VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(fn: Callable[[], object], repeats: int = 5) -> tuple[float, float]:
    """(median seconds, peak RSS in MB during the timed runs)."""
    fn()
    reset_peak_rss()
    seconds = median_seconds(fn, repeats, warmup=0)
    return seconds, peak_rss_mb()


def input_size(path) -> tuple[int, int]:
    """An exported model's input height and width."""
    import onnx

    dims = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
    return dims[2].dim_value, dims[3].dim_value
