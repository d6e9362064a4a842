"""Two small ASGI middlewares: a request-body size limit and per-request metrics.

Written by hand: Starlette and uvicorn bound header sizes but not body sizes, and
prometheus_client has no ASGI integration of its own.
"""
from __future__ import annotations

import json
import time
from typing import Iterable

from scaledet.serve.decode import UploadError
from scaledet.serve.metrics import ServiceMetrics


def error_body(message: str) -> bytes:
    """The one-line JSON every refusal carries."""
    return json.dumps({"error": message}).encode()


async def send_error(send, status: int, message: str) -> None:
    body = error_body(message)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class BodySizeLimit:
    """Refuse bodies over ``max_bytes``: at once when Content-Length says so, otherwise as soon as
    the streamed body passes the limit (the endpoint reading it gets an :class:`UploadError`)."""

    def __init__(self, app, max_bytes: int, metrics: ServiceMetrics | None = None):
        self.app = app
        self.max_bytes = max_bytes
        self.metrics = metrics

    def _too_large(self, size: str | None = None) -> str:
        what = f"upload of {size} bytes" if size else "upload"
        return f"{what} is over the limit of {self.max_bytes} bytes (--max-upload-mb)"

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            if self.metrics is not None:
                self.metrics.errors.labels("too_large").inc()
            await send_error(send, 413, self._too_large(declared.decode()))
            return
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise UploadError(413, "too_large", self._too_large())
            return message

        await self.app(scope, limited_receive, send)


class RequestMetrics:
    """Count every request by path (the known routes, else ``other``), method and status, and
    observe its latency."""

    def __init__(self, app, metrics: ServiceMetrics, paths: Iterable[str]):
        self.app = app
        self.metrics = metrics
        self.paths = frozenset(paths)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"] if scope["path"] in self.paths else "other"
        status = 500
        started = time.perf_counter()

        async def recording_send(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            self.metrics.requests.labels(path, scope["method"], str(status)).inc()
            self.metrics.latency.labels(path).observe(time.perf_counter() - started)
