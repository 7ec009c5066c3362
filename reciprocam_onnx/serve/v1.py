"""KServe's v1 protocol: POST /v1/models/NAME:predict and :explain, JSON in and out.

    request   {"instances": [INSTANCE, ...],
               "parameters": {"top_k": 5, "all_classes": false, "overlay": false, "resize": "crop"}}
              INSTANCE: {"image_bytes": {"b64": "<base64 file>"}, "target": 3}: an encoded image file, as
              TensorFlow Serving and KServe's image examples send it ("target" optional); or
              {"tensor": [...], "target": 3}, or a bare nested list: one image as the model takes it
    :predict  {"predictions": [{"target", "label", "score", "top_k": [{"class", "label", "score"}, ...]}]}
    :explain  {"explanations": [{"target", "label", "score", "grid", "saliency": h x w lists (C x h x w with
               all_classes), "overlay": "<base64 PNG>" when asked}]}

A v1 request becomes a v2 one (signature.py checks both alike); its answer is read back from the v2
outputs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import RequestError
from .signature import IMAGE_BYTES, OVERLAY, SALIENCY, SCORES, TARGET, Signature
from .tensors import BYTES, DATATYPES, Tensor, WireRequest, from_base64, parse_json, to_list

TOP_K = 5  # classes listed per image by :predict unless the request says


def v1_request(body: bytes, signature: Signature, explain: bool) -> tuple[WireRequest, int]:
    """The v2 request a v1 body stands for, and how many classes :predict lists; RequestError if malformed."""
    document = parse_json(body)
    if not isinstance(document, dict) or not isinstance(document.get("instances"), list):
        raise RequestError('a v1 request is {"instances": [...]} (and optionally "parameters": {...})')
    parameters = document.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise RequestError('"parameters" must be an object, as {"top_k": 3}')
    instances = document["instances"]
    if not instances:
        raise RequestError('"instances" holds no images')
    if len(instances) > signature.max_images:
        raise RequestError(f"{len(instances)} instances; this server takes {signature.max_images} per request")
    top_k = parameters.get("top_k", min(TOP_K, signature.info.classes))
    images = [_instance(item, index, signature) for index, item in enumerate(instances)]
    kinds = {kind for kind, _, _ in images}
    if len(kinds) > 1:
        raise RequestError("give every instance as an image file (image_bytes) or every one as a tensor, not both")
    inputs = [_images(kinds.pop(), [value for _, value, _ in images], signature)]
    targets = [target for _, _, target in images]
    if any(t is not None for t in targets):
        if any(t is None for t in targets):
            raise RequestError('give a "target" for every instance or for none')
        if not all(isinstance(t, int) and not isinstance(t, bool) for t in targets):
            raise RequestError(
                f'"target" must be a class index, not {next(t for t in targets if not isinstance(t, int))!r:.40}'
            )
        inputs.append(Tensor(TARGET, "INT64", np.array(targets, np.int64)))
    outputs: dict[str, Mapping[str, Any]] = {SCORES: {}, TARGET: {}}
    if explain:
        outputs[SALIENCY] = {}
    wire = WireRequest(None, tuple(inputs), {k: v for k, v in parameters.items() if k != "top_k"}, outputs)
    signature.check_top_k(top_k, "parameter 'top_k'")  # checked like v2's
    return wire, top_k


def _instance(item: object, index: int, signature: Signature) -> tuple[str, Any, object]:
    """(kind, value, target) of one instance: ("file", bytes) or ("tensor", nested list)."""
    where = f"instances[{index}]"
    if isinstance(item, list):
        return "tensor", item, None
    if not isinstance(item, dict) or not ({IMAGE_BYTES, "tensor"} & set(item)):
        raise RequestError(f'{where} must be {{"image_bytes": {{"b64": ...}}}}, {{"tensor": [...]}} or a nested list')
    target = item.get("target")
    if "tensor" in item:
        return "tensor", item["tensor"], target
    file = item[IMAGE_BYTES]
    text = file.get("b64") if isinstance(file, dict) else file
    if not isinstance(text, str):
        raise RequestError(f'{where}.image_bytes must be {{"b64": "<base64 text of the file>"}}')
    return "file", from_base64(f"{where}.image_bytes", text), target


def _images(kind: str, values: list, signature: Signature) -> Tensor:
    if kind == "file":
        files = np.empty(len(values), object)
        files[:] = values
        return Tensor(IMAGE_BYTES, BYTES, files)
    datatype = signature.image_datatype
    try:
        array = np.asarray(values, dtype=DATATYPES[datatype])
    except (TypeError, ValueError, OverflowError) as exc:
        raise RequestError(f"the instances are not tensors of numbers of one shape ({exc})") from None
    return Tensor(signature.info.input_name, datatype, array)


def v1_answer(outputs: tuple[Tensor, ...], signature: Signature, explain: bool, top_k: int) -> dict[str, Any]:
    """The v1 answer to a request whose v2 outputs are ``outputs``."""
    got = {tensor.name: tensor.data for tensor in outputs}
    scores, targets = got[SCORES], got[TARGET]
    entries = []
    for index, (row, target) in enumerate(zip(scores, targets)):
        entry: dict[str, Any] = {
            "target": int(target),
            "label": signature.label(int(target)),
            "score": float(row[target]),
        }
        if explain:
            entry["grid"] = list(signature.info.grid)
            entry[SALIENCY] = got[SALIENCY][index].tolist()
            if OVERLAY in got:
                entry[OVERLAY] = to_list(Tensor(OVERLAY, BYTES, got[OVERLAY][index : index + 1]))[0]
        else:
            ranked = np.argsort(-row, kind="stable")[:top_k]
            entry["top_k"] = [
                {"class": int(k), "label": signature.label(int(k)), "score": float(row[k])} for k in ranked
            ]
        entries.append(entry)
    return {"explanations" if explain else "predictions": entries}
