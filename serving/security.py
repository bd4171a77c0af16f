"""Who may address the service, from which pages, and what every answer tells the browser.

Two checks before any route runs (:class:`RequestGuardMiddleware`):

- **Trusted hosts** (DNS rebinding): a request whose ``Host`` names none of
  :attr:`serving.config.ServiceSettings.host_names` is answered 400 ``untrusted_host``. A page of
  ``evil.example`` whose name an attacker re-points to 127.0.0.1 reaches the service with
  ``Host: evil.example`` and is refused. The probes (``/healthz``, ``/readyz``, ``/metrics``) answer
  any host: orchestrators and scrapers address the service by its IP, and they hold no data.
- **Origins** (cross-site requests): a request that may change something (any method but GET, HEAD,
  OPTIONS) sent by a browser page of another origin (its ``Origin`` header) is answered 403
  ``foreign_origin``; a page on the same machine cannot post reports or create keys. The service's
  own origin is ``public_url``'s (scheme included), or the ``Host`` the request was sent to (already
  trusted; behind a proxy the scheme is the proxy's); ``allowed_origins`` adds others. Requests
  without ``Origin`` (scripts, phones' apps, curl) are not browsers' cross-site requests and pass;
  ``Origin: null`` (a sandboxed or local file page) does not.

Every answer, the 500s of Starlette's outermost error middleware included, carries
``X-Content-Type-Options: nosniff`` (:class:`NoSniffMiddleware`, put outside everything by
:class:`HardenedFastAPI`): a browser never runs an uploaded file it was told is an image.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from urllib.parse import urlsplit

from fastapi import FastAPI
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.config import ServiceSettings

__all__ = [
    "PROBE_PATHS",
    "SAFE_METHODS",
    "HardenedFastAPI",
    "NoSniffMiddleware",
    "RequestGuardMiddleware",
    "host_allowed",
    "host_name",
    "origin_allowed",
]

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
"""Methods that change nothing: any origin may send them (it cannot read the answer without CORS)."""
PROBE_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
"""Answered whatever the ``Host``."""


def host_name(host: str) -> str | None:
    """The name part of a ``Host`` header (``name``, ``name:port``, ``[v6]:port``), lower case; None if malformed."""
    try:
        name = urlsplit(f"//{host}").hostname
    except ValueError:  # a bad port or bracket
        return None
    return name or None


def host_allowed(name: str | None, patterns: Iterable[str]) -> bool:
    """Whether ``name`` matches one of ``patterns``: a name, ``*.example.org`` (its subdomains) or ``*``."""
    for pattern in patterns:
        if pattern == "*":
            return True
        if name is None:
            continue
        if pattern.startswith("*.") and name.endswith(pattern[1:]):
            return True
        if name == pattern:
            return True
    return False


def origin_allowed(origin: str, host: str, settings: ServiceSettings) -> bool:
    """Whether a page of ``origin`` may send state-changing requests to this service.

    Args:
        origin: the request's ``Origin`` header.
        host: its ``Host`` header (already trusted): the service's own origin as the browser sees it.
        settings: ``public_url`` (the service's public origin) and ``allowed_origins``.
    """
    origin = origin.strip().lower().rstrip("/")
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return False  # "null": a sandboxed frame, a file:// page
    public = urlsplit(settings.public_url.lower()) if settings.public_url else None
    if public is not None and parts.netloc == public.netloc:
        return parts.scheme == public.scheme  # the public name: its scheme is known, an http page is not ours
    if parts.netloc == host.strip().lower():
        return True  # the page came from where the request goes (the scheme is the proxy's business)
    return origin in settings.allowed_origins


async def _refuse(send: Send, status: int, code: str, detail: str) -> None:
    body = json.dumps({"detail": detail, "code": code}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class RequestGuardMiddleware:
    """Refuses untrusted hosts (400 ``untrusted_host``), query strings holding a NUL (422 ``invalid_query``) and
    foreign origins' state-changing requests (403)."""

    def __init__(self, app: ASGIApp, settings: ServiceSettings) -> None:
        self.app = app
        self.settings = settings
        self.hosts = settings.host_names

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        host = headers.get("host", "")
        if scope["path"] not in PROBE_PATHS and not host_allowed(host_name(host), self.hosts):
            await _refuse(
                send, 400, "untrusted_host",
                f"This service is not served under the name {host!r}. If it should be, an administrator adds "
                "the name to VIPARE_TRUSTED_HOSTS (or sets VIPARE_PUBLIC_URL).",
            )
            return
        query = scope.get("query_string", b"")
        if b"\x00" in query or b"%00" in query:
            # No text the service stores or searches may hold a NUL (PostgreSQL refuses one mid-query).
            await _refuse(
                send, 422, "invalid_query",
                "A query parameter holds a NUL character (%00): no name, class or text here can contain one. "
                "Remove it from the address.",
            )
            return
        origin = headers.get("origin")
        changes = scope["method"] not in SAFE_METHODS
        if changes and origin is not None and not origin_allowed(origin, host, self.settings):
            await _refuse(
                send, 403, "foreign_origin",
                f"A page of {origin} may not change anything here: only this service's own pages may. If that "
                "site should, an administrator adds its origin to VIPARE_ALLOWED_ORIGINS.",
            )
            return
        await self.app(scope, receive, send)


class NoSniffMiddleware:
    """Adds ``X-Content-Type-Options: nosniff`` to every answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)["X-Content-Type-Options"] = "nosniff"
            await send(message)

        await self.app(scope, receive, send_with_header)


class HardenedFastAPI(FastAPI):
    """FastAPI with :class:`NoSniffMiddleware` outside its whole stack, error middleware included."""

    def build_middleware_stack(self) -> ASGIApp:
        """Starlette's stack (its 500 answers outermost), wrapped so that those carry the header too."""
        return NoSniffMiddleware(super().build_middleware_stack())
