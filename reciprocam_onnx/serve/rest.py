"""The REST side: the Open Inference Protocol v2 (JSON, and Triton's binary tensor extension) and KServe's
v1 verbs, as a Starlette app.

    GET  /v2   /v2/health/live   /v2/health/ready
    GET  /v2/models/NAME[/versions/V]   .../ready   .../config
    POST /v2/models/NAME[/versions/V]/infer
    GET  /v1/models   /v1/models/NAME
    POST /v1/models/NAME:predict   /v1/models/NAME:explain

A binary request has the header Inference-Header-Content-Length (the JSON part's length), the tensors'
bytes after it; an answer is binary where the client asks (``binary_data`` per output, or
``binary_data_output`` for all). Every error is the protocol's {"error": "<one line>"} with its status,
bodies above the limit get 413 before they are read, and every answer carries an x-request-id header
(the client's, or one made for it).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..errors import RequestError
from .service import ExplainService, status_of
from .signature import OVERLAY, VERSION
from .tensors import BYTES, Tensor, WireAnswer, WireRequest, from_list, from_raw, parse_json, to_list, to_raw

log = logging.getLogger(__name__)

HEADER_LENGTH = "Inference-Header-Content-Length"
REQUEST_ID = "x-request-id"
Endpoint = Callable[[Request], Awaitable[Response]]


def rest_app(service: ExplainService) -> Callable:
    """The ASGI app serving ``service`` over REST, bodies limited to its max_body_bytes."""

    async def live(request: Request) -> Response:
        return _json({"live": True})

    async def ready(request: Request) -> Response:
        return _json({"ready": service.ready}, 200 if service.ready else 503)

    async def server_metadata(request: Request) -> Response:
        return _json(service.server_metadata())

    async def model_metadata(request: Request) -> Response:
        return _json(service.served(*_model(request)).metadata())

    async def model_ready(request: Request) -> Response:
        ready = service.model_ready(*_model(request))
        return _json({"name": request.path_params["model"], "ready": ready}, 200 if ready else 503)

    async def model_config(request: Request) -> Response:
        return _json(service.config(*_model(request)))

    async def infer(request: Request) -> Response:
        name, version = _model(request)
        service.served(name, version)  # 404 or 503 before the body is read
        body = await request.body()
        wire = await asyncio.to_thread(decode_request, body, request.headers.get(HEADER_LENGTH))
        answer = await service.infer(name, version, wire, request.state.request_id)
        content, headers = await asyncio.to_thread(encode_answer, answer, wire, name)
        return Response(content, headers=headers)

    async def v1_models(request: Request) -> Response:
        return _json({"models": [service.name]})

    async def v1_model(request: Request) -> Response:
        name = request.path_params["model"]
        service.served(name)
        return _json({"name": name, "ready": service.ready})

    def v1_verb(explain: bool) -> Endpoint:
        async def verb(request: Request) -> Response:
            name = request.path_params["model"]
            service.served(name)
            return _json(await service.v1(name, await request.body(), explain))

        return verb

    def route(path: str, endpoint: Endpoint, methods: tuple[str, ...] = ("GET",)) -> Route:
        return Route(path, _answering(endpoint), methods=list(methods))

    models, versions = "/v2/models/{model}", "/v2/models/{model}/versions/{version}"
    routes = [
        route("/v2", server_metadata),
        route("/v2/health/live", live),
        route("/v2/health/ready", ready),
        *(route(base, model_metadata) for base in (models, versions)),
        *(route(base + "/ready", model_ready) for base in (models, versions)),
        *(route(base + "/config", model_config) for base in (models, versions)),
        *(route(base + "/infer", infer, ("POST",)) for base in (models, versions)),
        route("/v1/models", v1_models),
        route("/v1/models/{model}:predict", v1_verb(explain=False), ("POST",)),
        route("/v1/models/{model}:explain", v1_verb(explain=True), ("POST",)),
        route("/v1/models/{model}", v1_model),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: _http_error})
    return BodyLimit(app, service.limits.max_body_bytes)


def _model(request: Request) -> tuple[str, str]:
    return request.path_params["model"], request.path_params.get("version", "")


def _answering(endpoint: Endpoint) -> Endpoint:
    """``endpoint`` with its errors answered in the protocol's form, and the request id on every answer."""

    async def answered(request: Request) -> Response:
        request.state.request_id = request.headers.get(REQUEST_ID) or uuid.uuid4().hex
        try:
            response = await endpoint(request)
        except Exception as exc:
            status, message = status_of(exc)
            level = logging.ERROR if status >= 500 else logging.INFO
            log.log(level, "%d %s %s: %s", status, request.method, request.url.path, message)
            response = _json({"error": message}, status)
        response.headers[REQUEST_ID] = request.state.request_id
        return response

    return answered


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    detail = "no such route" if exc.status_code == 404 else exc.detail
    return _json({"error": f"{request.method} {request.url.path}: {detail}"}, exc.status_code)


def _json(document: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(document), status, media_type="application/json")


def decode_request(body: bytes, header_length: str | None) -> WireRequest:
    """A v2 REST request body (JSON, or JSON and binary tensors) as a WireRequest; RequestError if malformed."""
    if header_length is None:
        head, rest = body, b""
    else:
        if not header_length.strip().isdigit() or int(header_length) > len(body):
            raise RequestError(
                f"{HEADER_LENGTH} is {header_length!r:.40}, not a length within the {len(body)}-byte body"
            )
        head, rest = body[: int(header_length)], body[int(header_length) :]
    document = parse_json(head)
    if not isinstance(document, dict) or not isinstance(document.get("inputs"), list):
        raise RequestError('an inference request is a JSON object with a list of "inputs"')
    offset, inputs = 0, []
    for item in document["inputs"]:
        tensor, used = _input(item, memoryview(rest)[offset:])
        inputs.append(tensor)
        offset += used
    if offset != len(rest):
        raise RequestError(f"{len(rest) - offset} bytes of binary data follow the inputs that no input claims")
    request_id = document.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise RequestError(f'"id" must be a string, not {request_id!r:.40}')
    return WireRequest(
        request_id, tuple(inputs), _mapping(document.get("parameters"), "parameters"), _outputs(document)
    )


def _input(item: object, binary: memoryview) -> tuple[Tensor, int]:
    """One input of a request, and how many bytes of the binary part it took."""
    if not isinstance(item, dict) or not isinstance(item.get("name"), str):
        raise RequestError('every input is an object with a "name", a "datatype" and a "shape"')
    name, datatype, shape = item["name"], item.get("datatype"), item.get("shape")
    parameters = _mapping(item.get("parameters"), f"input {name!r} parameters")
    size = parameters.get("binary_data_size")
    if size is not None:
        if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= len(binary):
            raise RequestError(f"input {name!r}: binary_data_size {size!r:.40} is not within the binary data")
        return Tensor(name, str(datatype), from_raw(name, datatype, shape, bytes(binary[:size])), parameters), size
    if "data" not in item:
        raise RequestError(f'input {name!r} has no "data" and no binary_data_size')
    return Tensor(name, str(datatype), from_list(name, datatype, shape, item["data"]), parameters), 0


def _outputs(document: dict) -> dict[str, dict] | None:
    given = document.get("outputs")
    if given is None:
        return None
    if not isinstance(given, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str) for o in given):
        raise RequestError('"outputs" must be a list of objects, each with a "name"')
    return {o["name"]: _mapping(o.get("parameters"), f"output {o['name']!r} parameters") for o in given}


def _mapping(value: object, what: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RequestError(f"{what} must be an object, not {value!r:.40}")
    return value


def encode_answer(answer: WireAnswer, wire: WireRequest, model: str) -> tuple[bytes, dict[str, str]]:
    """(body, headers) of a v2 REST answer: binary tensors where the request asked for them."""
    every = wire.parameters.get("binary_data_output") is True
    asked = wire.outputs or {}
    outputs, blobs = [], []
    for tensor in answer.outputs:
        entry: dict[str, Any] = {"name": tensor.name, "datatype": tensor.datatype, "shape": tensor.shape}
        if asked.get(tensor.name, {}).get("binary_data", every) is True:
            blob = to_raw(tensor)
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = to_list(tensor)
            if tensor.datatype == BYTES and tensor.name == OVERLAY:
                entry["parameters"] = {"content_encoding": "base64"}
        outputs.append(entry)
    head = orjson.dumps({"id": answer.id, "model_name": model, "model_version": VERSION, "outputs": outputs})
    if not blobs:
        return head, {"content-type": "application/json"}
    return b"".join([head, *blobs]), {"content-type": "application/octet-stream", HEADER_LENGTH: str(len(head))}


class BodyLimit:
    """ASGI middleware: a request body above ``limit`` bytes is answered 413, by its declared length
    before it is read, or as soon as a streamed body passes the limit."""

    def __init__(self, app: Callable, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            await _refuse(send, self._message(int(declared)))
            return
        received = 0

        async def counted() -> dict:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise RequestError(self._message(None), 413)
            return message

        await self.app(scope, counted, send)

    def _message(self, size: int | None) -> str:
        what = f"is {size} bytes" if size is not None else "runs past"
        return f"the request body {what}, above this server's limit of {self.limit} bytes (--max-body-bytes)"


async def _refuse(send: Callable, message: str) -> None:
    body = orjson.dumps({"error": message})
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})
