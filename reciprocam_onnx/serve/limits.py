"""How much the model server takes at once (``reciprocam serve``'s limit flags)."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import OptionError


@dataclass(frozen=True)
class Limits:
    """How much the server takes: per request, waiting, per explainer run, per message, at once."""

    max_images: int = 16  # images in one request
    max_queue: int = 64  # images waiting to be explained; more answer 503
    batch_images: int = 8  # images of concurrent requests run as one explainer call
    max_body_bytes: int = 64 << 20  # a REST body or a gRPC message, either way
    max_connections: int = 64  # HTTP connections and gRPC calls at once
    grace_seconds: float = 30.0  # on SIGTERM: how long requests in flight may take to finish

    def __post_init__(self) -> None:
        for name in ("max_images", "max_queue", "batch_images", "max_body_bytes", "max_connections"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value < 2**31:
                raise OptionError(f"{name.replace('_', '-')} must be a whole number from 1 up, not {value!r}")
        if self.max_queue < self.max_images:
            raise OptionError(
                f"max-queue ({self.max_queue}) must hold at least one whole request (max-images {self.max_images})"
            )
        if not self.grace_seconds >= 0:
            raise OptionError(f"grace must be 0 seconds or more, not {self.grace_seconds}")
