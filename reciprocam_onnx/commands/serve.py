"""``reciprocam serve``: a model server of explanations (serve/), in the ``[serve]`` extra."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import OptionError
from ..options import PRESETS
from .common import add_option_flags, add_runtime_flags, default_model, first_sentence, given_options, providers
from .explain import EXPLAIN_OPTIONS

OPTIONAL = ("starlette", "uvicorn", "grpc", "google", "tritonclient", "orjson")  # the [serve] extra's modules
INSTALL = 'pip install "reciprocam-onnx[serve]"'


class Serve:
    """Serve a model's predictions and explanations over KServe's and Triton's protocols: the Open
    Inference Protocol v2 over REST and gRPC (health, metadata, config, infer) and KServe's v1 :predict
    and :explain. Listens on loopback unless --host says otherwise; ready once the model is split and
    verified; SIGTERM finishes the requests in flight and exits 0 (docs/serving.md)."""

    name = "serve"

    @classmethod
    def register(cls, sub) -> None:
        from ..serve.limits import Limits

        parser = sub.add_parser(cls.name, help=first_sentence(cls.__doc__), description=cls.__doc__)
        parser.add_argument(
            "model", nargs="?", type=Path, default=None, help="model, split folder or fused graph (default: the demo)"
        )
        parser.add_argument("--name", default=None, help="the model's name in URLs (default: the file's name)")
        parser.add_argument(
            "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)"
        )
        parser.add_argument("--http-port", type=int, default=8080, help="REST port (default 8080; 0: any free one)")
        parser.add_argument("--grpc-port", type=int, default=8081, help="gRPC port (default 8081; 0: any free one)")
        parser.add_argument("--no-grpc", action="store_true", help="serve REST only")
        parser.add_argument("--labels", type=Path, default=None, help="class names, one per line")
        parser.add_argument(
            "--preset", choices=tuple(PRESETS), default=None, help="a named method, as for explain (reciprocam+, ...)"
        )
        limits = parser.add_argument_group("limits")
        defaults = Limits()
        for flag, help in (
            ("max-images", "images in one request"),
            ("max-queue", "images waiting to be explained; more are answered 503"),
            ("batch-images", "images of concurrent requests explained in one run (1: each alone)"),
            ("max-body-bytes", "size of a REST body and of a gRPC message, in and out"),
            ("max-connections", "HTTP connections and gRPC calls at once; more are refused"),
        ):
            default = getattr(defaults, flag.replace("-", "_"))
            limits.add_argument(f"--{flag}", type=int, default=default, metavar="N", help=f"{help} (default {default})")
        limits.add_argument(
            "--grace",
            type=float,
            default=defaults.grace_seconds,
            metavar="SECONDS",
            help=f"on SIGTERM, how long requests in flight may take to finish (default {defaults.grace_seconds:g})",
        )
        add_option_flags(parser, EXPLAIN_OPTIONS)
        add_runtime_flags(parser)
        parser.set_defaults(run=cls.run)

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from ..serve.limits import Limits
        from ..serve.triton import check_model_name, name_of

        for flag, port in (("--http-port", args.http_port), ("--grpc-port", args.grpc_port)):
            if not 0 <= port <= 65535:
                raise OptionError(f"{flag} must be a port from 0 to 65535, not {port}")
        limits = Limits(
            max_images=args.max_images,
            max_queue=args.max_queue,
            batch_images=args.batch_images,
            max_body_bytes=args.max_body_bytes,
            max_connections=args.max_connections,
            grace_seconds=args.grace,
        )
        model = args.model or default_model()
        try:
            from ..serve.server import run_server
            from ..serve.service import ExplainService
        except ImportError as exc:
            if (exc.name or "").split(".")[0] not in OPTIONAL:
                raise
            raise OptionError(f"serving needs {exc.name}: {INSTALL}") from None
        service = ExplainService(
            model,
            check_model_name(args.name or name_of(model)),
            options=given_options(args),
            preset=args.preset,
            providers=providers(args),
            labels=args.labels,
            limits=limits,
        )
        return run_server(service, args.host, args.http_port, None if args.no_grpc else args.grpc_port)
