"""``reciprocam serve``'s process: REST and gRPC on one event loop, the model loaded behind them.

    bind both ports (one line and exit 1 when a port is taken) -> "listening ..." -> load the model off the
    loop (health live, not ready; model routes 503) -> "ready ..." -> serve
    SIGTERM or Ctrl-C -> not ready; stop accepting; the requests in flight finish (up to the grace
    period) -> "stopped ..." -> exit 0

Uvicorn's own signal handling is off: this loop's handlers stop both servers together.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import math
import signal
import socket
import sys
from collections.abc import Iterator

import uvicorn

from ..errors import OptionError, ReciproCamError
from .grpc_api import grpc_server
from .rest import rest_app
from .service import ExplainService

log = logging.getLogger(__name__)


class _Uvicorn(uvicorn.Server):
    """Uvicorn without its signal handlers (the server's loop has its own)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def run_server(service: ExplainService, host: str, http_port: int, grpc_port: int | None) -> int:
    """Serve ``service`` until SIGTERM or Ctrl-C: 0 after a clean stop, 1 when the model cannot be loaded."""
    return asyncio.run(_serve(service, host, http_port, grpc_port))


async def _serve(service: ExplainService, host: str, http_port: int, grpc_port: int | None) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    listening = _bind(host, http_port)
    limits = service.limits
    config = uvicorn.Config(
        rest_app(service),
        log_config=None,
        log_level="warning",
        access_log=False,
        limit_concurrency=limits.max_connections,
        timeout_graceful_shutdown=math.ceil(limits.grace_seconds),  # whole seconds: never less than asked
        lifespan="off",
    )
    rest = _Uvicorn(config)
    rest_task = asyncio.create_task(rest.serve(sockets=[listening]))
    grpc = None
    where = f"REST http://{_address(host, listening.getsockname()[1])}"
    if grpc_port is not None:
        grpc, bound = _grpc(service, host, grpc_port)
        await grpc.start()
        where += f", gRPC {_address(host, bound)}"
    print(f"listening: {where} (model {service.name!r} loading)", flush=True)
    if not _loopback(host):
        log.warning("listening on %s: reachable from other machines, and the server has no authentication", host)
    code = await _load_and_serve(service, stop)
    service.stopping = True
    rest.should_exit = True
    await asyncio.gather(rest_task, *([grpc.stop(limits.grace_seconds)] if grpc is not None else []))
    await service.close()
    print("stopped" if code == 0 else "stopped: the model could not be loaded", flush=True)
    return code


async def _load_and_serve(service: ExplainService, stop: asyncio.Event) -> int:
    """Load the model (off the loop), then serve until ``stop``: 0, or 1 when loading failed."""
    loading = asyncio.get_running_loop().run_in_executor(None, service.load)
    stopped = asyncio.create_task(_until(stop))
    await asyncio.wait([loading, stopped], return_when=asyncio.FIRST_COMPLETED)
    if not loading.done():  # stopped while loading: let it finish, it cannot be interrupted
        print("stopping: the model was still loading", flush=True)
        with contextlib.suppress(Exception):
            await loading
        return 0
    try:
        loading.result()
    except ReciproCamError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    service.start()
    signature = service.signature
    assert signature is not None
    info = signature.info
    print(
        f"ready: model {service.name!r}, {info.classes} classes, grid {info.grid[0]}x{info.grid[1]}, "
        f"input {info.input_name!r} {signature.image_datatype} {list(info.image.shape(1)[1:])}",
        flush=True,
    )
    await stopped
    print("stopping: finishing the requests in flight", flush=True)
    return 0


async def _until(event: asyncio.Event) -> None:
    await event.wait()


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host``:``port`` (0: any free port), else OptionError in one line."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # IPPROTO_TCP named: asyncio turns Nagle's algorithm off only on sockets that say so, and with it
        # on, an answer written in two parts waits 40 ms for the client's delayed acknowledgement
        listening = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listening.bind((host, port))
        listening.listen(128)
    except OSError as exc:
        raise OptionError(f"cannot listen on {_address(host, port)} (REST): {exc.strerror or exc}") from None
    listening.setblocking(False)
    return listening


def _grpc(service: ExplainService, host: str, port: int):
    try:
        server, bound = grpc_server(service, _address(host, port))
    except RuntimeError as exc:
        raise OptionError(f"cannot listen on {_address(host, port)} (gRPC): {exc}") from None
    if bound == 0:
        raise OptionError(f"cannot listen on {_address(host, port)} (gRPC): the address is taken or not this machine's")
    return server, bound


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
