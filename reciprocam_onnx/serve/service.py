"""The model behind the server, whatever the protocol: opened once, then answering through the batcher.

    load()   open the explainer (split and verified, or a fused graph): until then every model route
             answers 503, and /v2/health/ready says false
    infer()  a v2 request (rest.py, grpc_api.py decode it) -> checked (signature.py, off the event loop)
             -> the batcher (batcher.py) -> the requested outputs
    v1()     KServe's v1 :predict and :explain (v1.py), through the same checks and batcher

Errors are ``ReciproCamError``s; ``status_of`` gives the status and the one line a client gets.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import OptionError, RequestError, UserError
from ..io.labels import read_labels
from .batcher import Batcher
from .limits import Limits
from .signature import PLATFORM, VERSION, Signature
from .tensors import WireAnswer, WireRequest
from .triton import model_config
from .v1 import v1_answer, v1_request

log = logging.getLogger(__name__)

SERVER_NAME = "reciprocam-onnx"
EXTENSIONS = ("binary_tensor_data", "classification", "model_configuration")


@dataclass
class ExplainService:
    """One model served under ``name``: ``model`` is a model file, split folder or fused graph, explained
    with ``options`` (or ``preset``) on ``providers``; class names from ``labels`` (a file) or the model."""

    model: str | os.PathLike
    name: str
    options: dict[str, Any] = field(default_factory=dict)
    preset: str | None = None
    providers: Sequence[str] | None = None
    labels: Path | None = None
    limits: Limits = field(default_factory=Limits)
    signature: Signature | None = None
    batcher: Batcher | None = None
    stopping: bool = False

    @property
    def ready(self) -> bool:
        return self.signature is not None and not self.stopping

    def load(self) -> None:
        """Open the explainer (minutes for a large model): blocking, run it off the event loop."""
        from ..engine.fused_explainer import open_explainer

        explainer = open_explainer(self.model, providers=self.providers, preset=self.preset, **self.options)
        info = explainer.info
        labels = read_labels(self.labels) if self.labels is not None else info.model.labels
        if labels is not None and len(labels) != info.classes:
            raise OptionError(f"{self.labels or 'the model'} names {len(labels)} classes; the model has {info.classes}")
        self.batcher = Batcher(explainer, self.limits.max_queue, self.limits.batch_images)
        preset = self.preset or getattr(explainer, "preset", None)  # a fused graph's own
        self.signature = Signature(self.name, info, explainer.options, labels, preset, self.limits.max_images)

    def start(self) -> None:
        """Start the batcher's worker, in the event loop, once loaded."""
        assert self.batcher is not None
        self.batcher.start()

    async def close(self) -> None:
        self.stopping = True
        if self.batcher is not None:
            await self.batcher.close()

    def served(self, model: str, version: str = "") -> Signature:
        """The signature of ``model`` (at ``version``: "" or "1"), else RequestError: 404 for another model
        or version, 503 while loading or stopping."""
        if model != self.name:
            raise RequestError(f"unknown model {model!r}: this server serves {self.name!r}", 404)
        if version not in ("", VERSION):
            raise RequestError(f"model {model!r} has no version {version!r}; it has version {VERSION}", 404)
        if self.stopping:
            raise RequestError("the server is stopping", 503)
        if self.signature is None:
            raise RequestError(f"model {model!r} is loading (split and verified before it serves); retry shortly", 503)
        return self.signature

    def model_ready(self, model: str, version: str = "") -> bool:
        """Whether ``model`` answers now (False while loading or stopping); RequestError (404) for another
        model or version."""
        try:
            self.served(model, version)
        except RequestError as exc:
            if exc.status != 503:
                raise
            return False
        return True

    def server_metadata(self) -> dict[str, Any]:
        return {"name": SERVER_NAME, "version": _version(), "extensions": list(EXTENSIONS)}

    def config(self, model: str, version: str = "") -> dict[str, Any]:
        """The model configuration (Triton's model-configuration extension, JSON form)."""
        signature = self.served(model, version)
        return model_config(signature.name, PLATFORM, signature.inputs(), signature.outputs(), signature.parameters())

    async def infer(self, model: str, version: str, wire: WireRequest, request_id: str | None = None) -> WireAnswer:
        """The answer to a v2 inference request (``request_id``: the transport's, used when the body has none)."""
        return await self._infer(self.served(model, version), wire, request_id)

    async def _infer(self, signature: Signature, wire: WireRequest, request_id: str | None = None) -> WireAnswer:
        assert self.batcher is not None
        count = signature.images_in(wire)
        if count <= signature.max_images:  # more: the checks below say so (400)
            self.batcher.check_room(count)  # busy: refuse before decoding anything
        query = await asyncio.to_thread(signature.query, wire)
        outcome = await self.batcher.run(query.work)
        outputs = await asyncio.to_thread(signature.answer, query, outcome)
        return WireAnswer(query.id or request_id or uuid.uuid4().hex, outputs)

    async def v1(self, model: str, body: bytes, explain: bool) -> dict[str, Any]:
        """The answer to a v1 :predict (``explain`` False) or :explain request body."""
        signature = self.served(model)
        wire, top_k = v1_request(body, signature, explain)
        answer = await self._infer(signature, wire)
        return v1_answer(answer.outputs, signature, explain, top_k)


def status_of(exc: BaseException) -> tuple[int, str]:
    """(HTTP status, one line) for an error met while answering a request."""
    if isinstance(exc, RequestError):
        status, message = exc.status, str(exc)
    elif isinstance(exc, UserError):
        status, message = 400, str(exc)
    else:
        status, message = 500, f"internal error (a bug in reciprocam-onnx): {type(exc).__name__}: {exc}"
    return status, " ".join(message.split()) or type(exc).__name__


def _version() -> str:
    try:
        return importlib.metadata.version(SERVER_NAME)
    except importlib.metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"
