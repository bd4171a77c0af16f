"""Request body limits, enforced while the body streams in.

A body whose ``Content-Length`` is over the limit is refused before a byte of it is read; a body
without one (chunked) is counted as it arrives and refused at the first chunk that goes over. Either
way the answer is 413 with a JSON message that says the limit, and nothing past the limit is read.

Uploads (``POST /v1/reports``) may carry one photo up to ``max_image_bytes`` plus
:data:`FORM_OVERHEAD_BYTES` of form fields and multipart framing; every other request is JSON or
nothing, limited to :data:`JSON_BODY_LIMIT`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["FORM_OVERHEAD_BYTES", "JSON_BODY_LIMIT", "BodyLimitMiddleware", "BodyTooLargeError"]

FORM_OVERHEAD_BYTES = 64 * 1024
"""Room for the text fields and multipart framing on top of the largest photo."""

JSON_BODY_LIMIT = 64 * 1024
"""Largest body of any request but an upload."""


class BodyTooLargeError(HTTPException):
    """The request body went over its limit (HTTP 413).

    An ``HTTPException``, so that FastAPI lets it through its body parsing unchanged and the
    service's handler answers it (see :mod:`serving.errors`).
    """

    def __init__(self, detail: str, code: str) -> None:
        super().__init__(status_code=413, detail=detail)
        self.code = code


class BodyLimitMiddleware:
    """Pure ASGI middleware refusing request bodies over a per-path limit.

    Args:
        app: the wrapped application.
        default_limit: bytes allowed for paths not in ``limits``.
        limits: path -> bytes allowed, and the message and code of the refusal.
    """

    def __init__(self, app: ASGIApp, default_limit: int, limits: Mapping[str, tuple[int, str, str]]) -> None:
        self.app = app
        self.default = (
            default_limit,
            f"The request body is larger than {default_limit} bytes; requests other than photo uploads are small "
            "JSON documents.",
            "body_too_large",
        )
        self.limits = dict(limits)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, detail, code = self.limits.get(scope["path"], self.default)
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            await _refuse(send, detail, code)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLargeError(detail, code)
            return message

        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLargeError as exc:  # raised outside the app's own handlers
            if started:
                raise
            await _refuse(send, exc.detail, exc.code)


async def _refuse(send: Send, detail: str, code: str) -> None:
    body = json.dumps({"detail": detail, "code": code}).encode()
    await send({
        "type": "http.response.start",
        "status": 413,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close")],
    })
    await send({"type": "http.response.body", "body": body})
