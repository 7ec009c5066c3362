"""Triton's model configuration: the JSON form both servers return, and a Triton model repository.

    reciprocam fuse MODEL --triton-repo DIR [--name NAME]  writes
      DIR/NAME/config.pbtxt   backend onnxruntime, inputs and outputs read from the graph, dynamic batching,
                              CPU or GPU instances, class names as the label file of the score outputs
      DIR/NAME/1/model.onnx   the fused graph, with "scores" (softmax or logits, as fused) and "target"
                              (the predicted class) beside logits, saliency [B, C, h, w] and saliency_u8
      DIR/NAME/labels.txt     the class names, one per line (when the model names them)

The same facts as ``reciprocam serve`` gives (signature.model_facts) are the configuration's
``parameters``, as JSON text under "reciprocam.NAME" keys, so a client reads grid and labels alike from
either server. Written without Triton's protobuf definitions (tests check it parses with them).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from ..contract import FUSED_OUTPUTS
from ..engine.fused_graph import fuse, fused_options, fused_preset, fused_score
from ..errors import OptionError
from ..graph.export import export_like
from ..graph.model import ModelSource
from ..io.files import bytes_writer, output_folder, write_all_atomic
from ..options import SCORES, Options
from .signature import SCORES as SCORES_OUTPUT
from .signature import TARGET, model_facts
from .tensors import datatype_of

TYPES = {  # the protocol's datatypes as Triton's configuration names them
    "BOOL": "TYPE_BOOL",
    "UINT8": "TYPE_UINT8",
    "UINT16": "TYPE_UINT16",
    "UINT32": "TYPE_UINT32",
    "UINT64": "TYPE_UINT64",
    "INT8": "TYPE_INT8",
    "INT16": "TYPE_INT16",
    "INT32": "TYPE_INT32",
    "INT64": "TYPE_INT64",
    "FP16": "TYPE_FP16",
    "FP32": "TYPE_FP32",
    "FP64": "TYPE_FP64",
    "BYTES": "TYPE_STRING",
}
ENUMS = ("data_type", "kind")  # fields whose values are enum names, written unquoted
NAME_PATTERN = re.compile(r"[A-Za-z0-9_.-]+")
LABELS_FILE = "labels.txt"
PARAMETER_PREFIX = "reciprocam."


def model_config(
    name: str,
    platform: str,
    inputs: Sequence[dict],
    outputs: Sequence[dict],
    facts: dict[str, Any],
    *,
    max_batch_size: int = 0,
    **more: Any,
) -> dict[str, Any]:
    """A ModelConfig in protobuf's JSON form. ``inputs``/``outputs``: {"name", "datatype", "shape"} with the
    batch first (-1); with ``max_batch_size`` above 0 Triton leaves it out of ``dims``. ``more``: other
    fields (backend, dynamic_batching, instance_group, ...)."""
    batched = max_batch_size > 0
    config: dict[str, Any] = {"name": name}
    if platform:
        config["platform"] = platform
    if "backend" in more:
        config["backend"] = more.pop("backend")
    config["max_batch_size"] = max_batch_size
    config["input"] = [_tensor(spec, batched) for spec in inputs]
    config["output"] = [_tensor(spec, batched) for spec in outputs]
    config.update(more)
    config["parameters"] = {PARAMETER_PREFIX + key: {"string_value": json.dumps(value)} for key, value in facts.items()}
    return config


def _tensor(spec: dict, batched: bool) -> dict[str, Any]:
    dims = list(spec["shape"][1:] if batched else spec["shape"])
    entry: dict[str, Any] = {"name": spec["name"], "data_type": TYPES[spec["datatype"]]}
    if batched and not dims:  # a tensor [B]: Triton shows it as [B, 1]
        entry.update(dims=[1], reshape={"shape": []})
    else:
        entry["dims"] = dims
    entry.update(spec.get("config", {}))
    return entry


def config_pbtxt(config: dict[str, Any]) -> str:
    """A ModelConfig in protobuf's JSON form as protobuf text (config.pbtxt)."""
    return "".join(_field(key, value, 0) for key, value in config.items())


def _field(key: str, value: Any, depth: int) -> str:
    pad = "  " * depth
    if key == "parameters":  # map<string, ModelParameter>: one entry per key
        return "".join(
            f"{pad}parameters {{\n{pad}  key: {_quote(k)}\n{pad}  value {{\n"
            f"{pad}    string_value: {_quote(v['string_value'])}\n{pad}  }}\n{pad}}}\n"
            for k, v in value.items()
        )
    if isinstance(value, dict):
        inner = "".join(_field(k, v, depth + 1) for k, v in value.items())
        return f"{pad}{key} {{\n{inner}{pad}}}\n"
    if isinstance(value, list) and value and isinstance(value[0], dict):
        blocks = [
            f"{pad}  {{\n" + "".join(_field(k, v, depth + 2) for k, v in item.items()) + f"{pad}  }}" for item in value
        ]
        return f"{pad}{key} [\n" + ",\n".join(blocks) + f"\n{pad}]\n"
    if isinstance(value, list):
        return f"{pad}{key}: [ {', '.join(_scalar(key, v) for v in value)} ]\n"
    return f"{pad}{key}: {_scalar(key, value)}\n"


def _scalar(key: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return str(value) if key in ENUMS else _quote(str(value))


def _quote(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return f'"{escaped}"'


def check_model_name(name: str) -> str:
    """``name`` if it can name a model on both servers (letters, digits, _ . -), else OptionError."""
    if not NAME_PATTERN.fullmatch(name) or name in (".", ".."):
        raise OptionError(f"a model name takes letters, digits, '_', '.' and '-' only, not {name!r}")
    return name


def name_of(model: str | os.PathLike) -> str:
    """A model's default name on a server: its file (or split folder) name without the suffix, tidied."""
    stem = Path(model).stem if Path(model).suffix.lower() == ".onnx" else Path(model).name
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", stem).strip("._") or "model"


def triton_model(fused: onnx.ModelProto) -> onnx.ModelProto:
    """The fused graph with "scores" (as its options score: softmax or logits) and "target" (the predicted
    class, int64 [B]) computed from its logits, so that a Triton client reads what `reciprocam serve`
    returns with all_classes."""
    score = fused_score(fused)  # OptionError for other models
    graph = gs.import_onnx(fused)
    held = graph.tensors()
    for name in (SCORES_OUTPUT, TARGET):  # a tensor of the model's own under one of these names moves aside
        if name in held:
            held[name].name = f"{name}/model"
    logits = graph.outputs[0]
    wide = graph.layer(
        op="Cast", inputs=[logits], outputs=[gs.Variable("reciprocam/triton/logits32", np.float32)], attrs={"to": 1}
    )[0]
    op = "Softmax" if score == SCORES[0] else "Identity"
    attrs = {"axis": 1} if op == "Softmax" else {}
    scores = graph.layer(op=op, inputs=[wide], outputs=[gs.Variable(SCORES_OUTPUT, np.float32)], attrs=attrs)[0]
    target = graph.layer(
        op="ArgMax", inputs=[logits], outputs=[gs.Variable(TARGET, np.int64)], attrs={"axis": 1, "keepdims": 0}
    )[0]
    scores.shape, target.shape = list(logits.shape), [logits.shape[0]]
    graph.outputs = [*graph.outputs, scores, target]
    out = export_like(graph.cleanup().toposort(), fused)
    out.metadata_props.extend(fused.metadata_props)  # still a fused graph to open_explainer
    return out


def graph_tensors(values: Sequence[onnx.ValueInfoProto]) -> list[dict]:
    """The graph's inputs or outputs as {"name", "datatype", "shape"}, the batch (first) axis as -1."""
    specs = []
    for value in values:
        kind = value.type.tensor_type
        dtype = onnx.helper.tensor_dtype_to_np_dtype(kind.elem_type)
        dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1 for d in kind.shape.dim]
        if not dims or dims[0] != -1:
            raise OptionError(f"{value.name!r} has shape {dims}: Triton batches only tensors whose first axis is open")
        specs.append({"name": value.name, "datatype": datatype_of(dtype), "shape": dims})
    return specs


def write_triton_repository(
    source: ModelSource,
    repository: str | os.PathLike,
    name: str,
    options: Options,
    *,
    max_batch_size: int = 8,
    instances: int = 1,
    gpu: bool = False,
    preset: str | None = None,
) -> Path:
    """Fuse ``source`` (with ``preset``'s taps, if given) and write it as model ``name`` of the Triton
    repository ``repository`` (module docstring): all files or none. Returns the model's folder."""
    check_model_name(name)
    for what, value in (("max batch size", max_batch_size), ("instances", instances)):
        if not 1 <= value < 2**31:
            raise OptionError(f"{what} must be a whole number from 1 up, not {value}")
    folder = Path(repository) / name
    output_folder(folder / "1")  # before any work: a place that takes files
    fused = fuse(source, options, preset=preset)
    graph = triton_model(fused)
    found = fused_options(fused)
    assert found is not None
    baked, info = found
    labels = info.model.labels
    outputs = graph_tensors(graph.graph.output)
    if labels is not None:
        for spec in outputs:
            if spec["name"] in (FUSED_OUTPUTS[0], SCORES_OUTPUT):
                spec["config"] = {"label_filename": LABELS_FILE}
    config = model_config(
        name,
        "",
        graph_tensors(graph.graph.input),
        outputs,
        model_facts(info, baked, labels, fused_preset(fused)),
        max_batch_size=max_batch_size,
        backend="onnxruntime",
        dynamic_batching={},
        instance_group=[{"count": instances, "kind": "KIND_GPU" if gpu else "KIND_CPU"}],
    )
    files = {
        folder / "config.pbtxt": bytes_writer(config_pbtxt(config).encode("utf-8")),
        folder / "1" / "model.onnx": bytes_writer(graph.SerializeToString()),
    }
    if labels is not None:
        files[folder / LABELS_FILE] = bytes_writer(("\n".join(labels) + "\n").encode("utf-8"))
    write_all_atomic(files)
    return folder
