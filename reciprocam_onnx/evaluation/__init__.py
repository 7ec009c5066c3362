"""Evaluate saliency methods on a labelled dataset with the paper's metrics.

    dataset ──batches──► softmax scores of the unmasked model (ONNX Runtime)
    each method: maps ──► AD, Inc, Coh, Com, ADCC, deletion/insertion AUC,
                          (energy) pointing game, discriminative pointing game
    result dict ──► report.json, report.md, examples.png

Targets are the ground-truth labels where known (as in the paper's table),
else the model's predictions. All metrics are fractions; the Markdown report
shows them as percentages.

Modules: ``data`` (datasets), ``methods`` (the model and the saliency methods),
``run`` (the evaluation loop), ``checkpoint`` (its progress, for resuming),
``parts`` (one long run in parts, merged), ``report`` (report files).
"""

from .checkpoint import CHECKPOINT
from .data import fit_box, folder_dataset, shapes_dataset
from .methods import METHODS, EvalModel
from .report import json_safe, report_markdown, write_report
from .run import METRICS, evaluate

__all__ = [
    "CHECKPOINT",
    "METHODS",
    "METRICS",
    "EvalModel",
    "evaluate",
    "fit_box",
    "folder_dataset",
    "json_safe",
    "report_markdown",
    "shapes_dataset",
    "write_report",
]
