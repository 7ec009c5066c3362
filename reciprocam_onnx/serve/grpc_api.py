"""The gRPC side: the Open Inference Protocol's GRPCInferenceService (KServe's v2 and Triton's, one
service), with Triton's ModelConfig, on grpc.aio. The message types are Triton's own definitions
(tritonclient's service_pb2); the methods this server does not offer answer UNIMPLEMENTED.

Errors abort the call with the status matching the REST one (400 INVALID_ARGUMENT, 404 NOT_FOUND,
413 RESOURCE_EXHAUSTED, 503 UNAVAILABLE, else INTERNAL) and its one line.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2, service_pb2, service_pb2_grpc

from ..errors import RequestError
from .service import ExplainService, status_of
from .signature import VERSION
from .tensors import Tensor, WireAnswer, WireRequest, from_list, from_raw, to_raw

log = logging.getLogger(__name__)

CODES = {400: grpc.StatusCode.INVALID_ARGUMENT, 404: grpc.StatusCode.NOT_FOUND}
CODES |= {413: grpc.StatusCode.RESOURCE_EXHAUSTED, 503: grpc.StatusCode.UNAVAILABLE}
CONTENTS = {  # the typed contents field of each datatype (FP16 travels raw only)
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


class InferenceServicer(service_pb2_grpc.GRPCInferenceServiceServicer):
    """GRPCInferenceService for one ExplainService."""

    def __init__(self, service: ExplainService):
        self.service = service

    async def ServerLive(self, request, context):
        return service_pb2.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context):
        return service_pb2.ServerReadyResponse(ready=self.service.ready)

    async def ServerMetadata(self, request, context):
        return await _answer(context, lambda: _server_metadata(self.service))

    async def ModelReady(self, request, context):
        return await _answer(
            context,
            lambda: service_pb2.ModelReadyResponse(ready=self.service.model_ready(request.name, request.version)),
        )

    async def ModelMetadata(self, request, context):
        return await _answer(context, lambda: _metadata(self.service, request.name, request.version))

    async def ModelConfig(self, request, context):
        return await _answer(context, lambda: _config(self.service, request.name, request.version))

    async def ModelInfer(self, request, context):
        async def infer():
            wire = decode_request(request)
            return encode_answer(await self.service.infer(request.model_name, request.model_version, wire), request)

        return await _answer(context, infer)


def _unimplemented(method: str) -> Callable:
    async def refuse(self, request, context):
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{method} is not offered by this server")

    return refuse


for _method in service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].methods_by_name:
    if _method not in vars(InferenceServicer):  # statistics, repository, shared memory, trace, log settings
        setattr(InferenceServicer, _method, _unimplemented(_method))


async def _answer(context: grpc.aio.ServicerContext, work: Callable[[], Any]) -> Any:
    """``work()``'s response (awaited if it is a coroutine), or the call aborted with its error's status."""
    try:
        result = work()
        return await result if inspect.isawaitable(result) else result
    except Exception as exc:
        status, message = status_of(exc)
    log.log(logging.ERROR if status >= 500 else logging.INFO, "gRPC %d: %s", status, message)
    await context.abort(CODES.get(status, grpc.StatusCode.INTERNAL), message)


def _server_metadata(service: ExplainService) -> service_pb2.ServerMetadataResponse:
    return service_pb2.ServerMetadataResponse(**service.server_metadata())


def _metadata(service: ExplainService, name: str, version: str) -> service_pb2.ModelMetadataResponse:
    metadata = service.served(name, version).metadata()
    tensor = service_pb2.ModelMetadataResponse.TensorMetadata
    return service_pb2.ModelMetadataResponse(
        name=metadata["name"],
        versions=metadata["versions"],
        platform=metadata["platform"],
        inputs=[tensor(**spec) for spec in metadata["inputs"]],
        outputs=[tensor(**spec) for spec in metadata["outputs"]],
    )


def _config(service: ExplainService, name: str, version: str) -> service_pb2.ModelConfigResponse:
    config = json_format.ParseDict(service.config(name, version), model_config_pb2.ModelConfig())
    return service_pb2.ModelConfigResponse(config=config)


def decode_request(request: service_pb2.ModelInferRequest) -> WireRequest:
    """A ModelInferRequest as a WireRequest; RequestError if malformed."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise RequestError(f"{len(raw)} raw input contents for {len(request.inputs)} inputs")
    inputs = []
    for index, tensor in enumerate(request.inputs):
        name, datatype, shape = tensor.name, tensor.datatype, list(tensor.shape)
        if raw:
            data = from_raw(name, datatype, shape, raw[index])
        else:
            field = CONTENTS.get(datatype)
            if field is None:
                raise RequestError(f"input {name!r}: {datatype!r:.40} data must travel as raw input contents")
            data = from_list(name, datatype, shape, list(getattr(tensor.contents, field)))
        inputs.append(Tensor(name, datatype, data, _parameters(tensor.parameters)))
    outputs = {output.name: _parameters(output.parameters) for output in request.outputs} or None
    return WireRequest(request.id or None, tuple(inputs), _parameters(request.parameters), outputs)


def _parameters(parameters) -> dict[str, Any]:
    """A protobuf map<string, InferParameter> as plain values."""
    values = {}
    for key, parameter in parameters.items():
        which = parameter.WhichOneof("parameter_choice")
        values[key] = getattr(parameter, which) if which else None
    return values


def encode_answer(answer: WireAnswer, request: service_pb2.ModelInferRequest) -> service_pb2.ModelInferResponse:
    """The ModelInferResponse of ``answer``: every output as raw contents."""
    response = service_pb2.ModelInferResponse(
        model_name=request.model_name, model_version=request.model_version or VERSION, id=answer.id
    )
    for tensor in answer.outputs:
        response.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
        response.raw_output_contents.append(to_raw(tensor))
    return response


def grpc_server(service: ExplainService, address: str) -> tuple[grpc.aio.Server, int]:
    """A grpc.aio server of ``service`` bound to ``address`` ("host:port"), not started; and its port."""
    limit = service.limits.max_body_bytes
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
            ("grpc.so_reuseport", 0),  # a port in use is an error, not shared
        ],
        maximum_concurrent_rpcs=service.limits.max_connections,
    )
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(service), server)
    port = server.add_insecure_port(address)
    return server, port
