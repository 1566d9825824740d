"""How much one request may ask of the service, and the guard that stops an oversized body as it arrives."""

from __future__ import annotations

import json
from dataclasses import dataclass

MIB = 1 << 20


@dataclass(frozen=True)
class Limits:
    """Per-request limits (``gallery serve --max-upload-mb ...``).

    ``max_pixels`` is the decompression-bomb guard: a 50 KB file can claim 100,000 x 100,000 pixels,
    so an image is refused by the size its header declares, before it is decoded.
    """

    max_upload_bytes: int = 20 * MIB
    max_pixels: int = 40_000_000
    max_photos: int = 32
    max_vectors: int = 10_000
    max_k: int = 100


class BodyTooLarge(Exception):
    """The request body went over :attr:`Limits.max_upload_bytes` while it was being read."""

    def __init__(self, limit: int):
        super().__init__(f"request body is over the limit of {limit} bytes ({limit / MIB:g} MiB); send fewer or smaller files")


class BodyLimit:
    """ASGI middleware: refuse a body over ``max_bytes`` by its Content-Length, or once that many bytes
    have arrived when it has none (chunked uploads), without reading the rest."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = int(max_bytes)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or ()).get(b"content-length")
        if declared is not None:
            try:
                too_large = int(declared) > self.max_bytes
            except ValueError:
                return await _refuse(send, 400, "Content-Length is not a number")
            if too_large:
                return await _refuse(send, 413, str(BodyTooLarge(self.max_bytes)))
        received = 0

        async def counted():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, counted, send)


async def _refuse(send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
