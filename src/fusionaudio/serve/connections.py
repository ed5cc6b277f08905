"""Slow and greedy clients at the connection level (where a slowloris never reaches the app).

:class:`ClientLimits` holds the server's rules; :func:`serve_app` runs an app under uvicorn with a
protocol (uvicorn's own h11 one, extended) that enforces them:

* a request -- line, headers and body -- must arrive whole within ``request_timeout`` seconds of its
  first byte (or of the connection opening); a connection that dawdles is answered ``408`` and closed;
* a connection idle between requests is closed after ``request_timeout`` too (uvicorn's keep-alive timer);
* one client address holds at most ``max_connections_per_client`` connections: the next is answered
  ``429`` and closed at once.

Each closed connection is one log line (no traceback). Responses (a long streamed answer) are not timed.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("fusionaudio.serve")


@dataclass
class ClientLimits:
    request_timeout: float = 30.0
    max_connections_per_client: int = 64
    open: dict = field(default_factory=dict)  # client address -> open connections (event loop thread only)

    def __post_init__(self):
        if not self.request_timeout > 0:
            raise ValueError(f"request_timeout must be > 0 seconds, got {self.request_timeout}")
        if self.max_connections_per_client < 1:
            raise ValueError(f"max_connections_per_client must be >= 1, got {self.max_connections_per_client}")


def _raw_error(status: int, reason: str, message: str, code: str) -> bytes:
    body = json.dumps({"error": {"message": message, "type": "invalid_request_error", "param": None,
                                 "code": code}}).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\nconnection: close\r\n"
            f"content-length: {len(body)}\r\n\r\n").encode()
    return head + body


def limited_protocol(limits: ClientLimits) -> type:
    """uvicorn's h11 protocol with ``limits`` (pass it as ``uvicorn.Config(http=...)``)."""

    class LimitedH11Protocol(H11Protocol):
        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._deadline = None
            self._host = self.client[0] if self.client else "unknown"
            held = limits.open.get(self._host, 0)
            if held >= limits.max_connections_per_client:
                self._host = None
                log.info("refused a connection from %s: it holds %d (the limit)", self.client, held)
                transport.write(_raw_error(429, "Too Many Requests", f"this client already holds {held} connections, "
                                           "the server's limit; close some", "too_many_connections"))
                transport.close()
                return
            limits.open[self._host] = held + 1
            self._arm()

        def connection_lost(self, exc) -> None:
            self._disarm()
            host, self._host = getattr(self, "_host", None), None
            if host is not None:
                left = limits.open.get(host, 1) - 1
                if left > 0:
                    limits.open[host] = left
                else:
                    limits.open.pop(host, None)
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self._owes_request():
                self._arm()
            else:
                self._disarm()

        def _owes_request(self) -> bool:
            """The client has started a request (or just connected) and not sent all of it yet."""
            state = self.conn.their_state
            return state is h11.SEND_BODY or (state is h11.IDLE and bool(self.conn.trailing_data[0]))

        def _arm(self) -> None:
            if self._deadline is None and not self.transport.is_closing():
                self._deadline = self.loop.call_later(limits.request_timeout, self._too_slow)

        def _disarm(self) -> None:
            if getattr(self, "_deadline", None) is not None:
                self._deadline.cancel()
                self._deadline = None

        def _too_slow(self) -> None:
            self._deadline = None
            if self.transport.is_closing():
                return
            if self.conn.their_state is h11.IDLE and not self.conn.trailing_data[0] and self.cycle is not None:
                return  # between requests: uvicorn's keep-alive timer closes an idle connection
            log.info("closed a connection from %s: no whole request within %g s", self.client, limits.request_timeout)
            if self.cycle is None or not self.cycle.response_started:
                self.transport.write(_raw_error(408, "Request Timeout", f"the request did not arrive whole within "
                                                f"{limits.request_timeout:g} s", "request_timeout"))
            self.transport.close()

    return LimitedH11Protocol


def serve_app(app, host: str, port: int, limits: ClientLimits | None = None, log_level: str = "warning") -> None:
    """Run ``app`` under uvicorn with ``limits`` (blocking until the server stops)."""
    import uvicorn

    uvicorn.Server(server_config(app, host, port, limits, log_level)).run()


def server_config(app, host: str, port: int, limits: ClientLimits | None = None, log_level: str = "warning"):
    """The ``uvicorn.Config`` :func:`serve_app` runs (tests run it in a thread with ``uvicorn.Server``)."""
    import uvicorn

    limits = limits or ClientLimits()
    return uvicorn.Config(app, host=host, port=port, log_level=log_level, http=limited_protocol(limits),
                          timeout_keep_alive=limits.request_timeout)
