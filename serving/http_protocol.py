"""uvicorn's h11 protocol with a deadline for a request's headers.

uvicorn has no header timeout (its ``timeout_keep_alive`` only runs between requests, and any byte
received resets it), so a client that opens connections and never finishes its headers, or trickles
them a byte at a time, holds them open for good. :class:`HeaderTimeoutProtocol` closes a connection
whose request line and headers are not all in ``timeout_keep_alive`` seconds after it opened or after
the previous answer was sent. Once the headers are in, the deadline no longer applies: a slow upload's
body and a long analysis are not cut. ``vipare serve`` selects it and sets ``timeout_keep_alive`` to
``VIPARE_HEADER_TIMEOUT_S``; run by hand, ``uvicorn --http serving.http_protocol:HeaderTimeoutProtocol
--timeout-keep-alive 10 --factory serving.app:create_app``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["HeaderTimeoutProtocol"]


class HeaderTimeoutProtocol(H11Protocol):
    """:class:`~uvicorn.protocols.http.h11_impl.H11Protocol` that closes connections slow to send their headers."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Start waiting for the first request's headers."""
        super().connection_made(transport)
        self._arm_header_deadline()

    def on_response_complete(self) -> None:
        """Start waiting for the next request's headers (unless a pipelined one is already in)."""
        super().on_response_complete()
        self._arm_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget the deadline."""
        self._cancel_header_deadline()
        super().connection_lost(exc)

    def _arm_header_deadline(self) -> None:
        self._cancel_header_deadline()
        if not self.transport.is_closing():
            self._header_deadline = self.loop.call_later(self.timeout_keep_alive, self._header_deadline_passed)

    def _cancel_header_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _header_deadline_passed(self) -> None:
        self._header_deadline = None
        # IDLE: the client has not finished a request's headers since the deadline was set.
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.logger.debug("closing a connection that sent no complete request headers in time")
            self.transport.close()
