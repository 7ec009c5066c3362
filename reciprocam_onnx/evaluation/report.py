"""Reports of an evaluation result: report.json, report.md and examples.png."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import cv2
import numpy as np

from ..io.files import bytes_writer, write_all_atomic
from ..io.overlay import overlay, png_bytes

COLUMNS = (
    ("pointing_game", "PG ↑"),
    ("energy_pointing_game", "EPG ↑"),
    ("average_drop", "AD ↓"),
    ("increase", "Inc ↑"),
    ("coherency", "Coh ↑"),
    ("complexity", "Com ↓"),
    ("adcc", "ADCC ↑"),
    ("deletion_auc", "Del ↓"),
    ("insertion_auc", "Ins ↑"),
    ("discriminative_pointing_game", "DPG ↑"),
    ("discriminative_pointing_game_first", "DPG 1st ↑"),
    ("discriminative_pointing_game_second", "DPG 2nd ↑"),
)


def write_report(result: dict, folder: str | os.PathLike) -> list[Path]:
    """Write report.json, report.md and examples.png into ``folder``, all or none; returns their paths."""
    folder = Path(folder)
    summary = {key: value for key, value in result.items() if key != "examples"}
    report = json.dumps(json_safe(summary), indent=2, allow_nan=False) + "\n"
    files = {
        folder / "report.json": bytes_writer(report.encode("utf-8")),
        folder / "report.md": bytes_writer(report_markdown(result).encode("utf-8")),
    }
    if result.get("examples"):
        files[folder / "examples.png"] = bytes_writer(png_bytes(examples_grid(result["examples"])))
    return write_all_atomic(files)


def json_safe(value):
    """``value`` with numpy scalars as Python numbers and NaN/inf as None."""
    if isinstance(value, dict):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def report_markdown(result: dict) -> str:
    """The report as Markdown: a header, the metrics table (percentages) and a line per method."""
    accuracy = "unknown" if result.get("accuracy") is None else f"{_percent(result['accuracy'])}%"
    lines = [
        "# ViT-ReciproCAM evaluation",
        "",
        f"Model `{result['model']}` on {result['dataset']}: {result['n']} images "
        f"({result['skipped']} skipped), accuracy {accuracy}.",
        "",
        "| Method | " + " | ".join(title for _, title in COLUMNS) + " | s/image |",
        "|---" * (len(COLUMNS) + 2) + "|",
    ]
    for name, metrics in result["methods"].items():
        cells = [_percent(metrics.get(key)) for key, _ in COLUMNS] + [_seconds(metrics.get("seconds_per_image"))]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Metrics in %; ↑ higher is better, ↓ lower is better. Targets: ground-truth labels "
        "where known, else the predicted class.",
        "",
    ]
    lines += [_method_line(name, metrics) for name, metrics in result["methods"].items()]
    lines += _rise_line(result)
    lines += _class_table(result.get("pointing_game_by_class") or {})
    return "\n".join(lines) + "\n"


def _class_table(by_class: dict[str, dict[str, dict]]) -> list[str]:
    """Markdown lines of the pointing game per target class (nothing for fewer than two classes)."""
    names = list(by_class)
    classes = next((list(table) for table in by_class.values() if table), [])
    if len(classes) < 2:
        return []
    lines = [
        "",
        "## Pointing game by class",
        "",
        "| Class | n | " + " | ".join(names) + " |",
        "|---" * (len(names) + 2) + "|",
    ]
    for label in classes:
        count = next(table[label]["n"] for table in by_class.values() if label in table)
        cells = [_percent(by_class[name].get(label, {}).get("pointing_game")) for name in names]
        lines.append(f"| {label} | {count} | " + " | ".join(cells) + " |")
    return lines


def _method_line(name: str, metrics: dict) -> str:
    return (
        f"- **{name}**: ADCC {_percent(metrics.get('adcc'))}%, pointing game "
        f"{_percent(metrics.get('pointing_game'))}%, deletion {_percent(metrics.get('deletion_auc'))}%, "
        f"insertion {_percent(metrics.get('insertion_auc'))}%, "
        f"{_seconds(metrics.get('seconds_per_image'))} s per image over {metrics['n']} images"
    )


def _rise_line(result: dict) -> list[str]:
    """The RISE mask counts, when RISE was evaluated (its coherency pass may use fewer masks)."""
    settings = result.get("settings") or {}
    if "rise" not in result["methods"] or "rise_masks" not in settings:
        return []
    masks, coherency = settings["rise_masks"], settings.get("rise_coherency_masks", settings["rise_masks"])
    if coherency == masks:
        return ["", f"RISE: {masks} masks for the maps and for the coherency pass."]
    return ["", f"RISE: {masks} masks for the maps, {coherency} for the coherency pass (Coh, ADCC)."]


def _percent(value: float | None) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{100 * value:.2f}"


def _seconds(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


def examples_grid(examples: list[dict]) -> np.ndarray:
    """RGB picture: a row per example, the image with its boxes then each method's overlay."""
    rows = []
    for example in examples:
        image = example["image"].copy()
        for _, (x0, y0, x1, y1) in example["boxes"]:
            cv2.rectangle(image, (x0, y0), (x1 - 1, y1 - 1), (0, 255, 0), 2)
        tiles = [_caption(image, f"{example['name']}: {example['target']}")]
        tiles += [_caption(overlay(example["image"], map_hw), name) for name, map_hw in example["maps"].items()]
        rows.append(np.concatenate(tiles, axis=1))
    return np.concatenate(rows, axis=0)


def _caption(tile: np.ndarray, text: str) -> np.ndarray:
    """``tile`` with ``text`` in small white letters on a dark strip at the top."""
    out = tile.copy()
    cv2.rectangle(out, (0, 0), (out.shape[1] - 1, 15), (0, 0, 0), -1)
    cv2.putText(out, text, (3, 11), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (255, 255, 255), 1, cv2.LINE_AA)
    return out
