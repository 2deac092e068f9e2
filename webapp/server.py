"""Serving with uvicorn, with deadlines for slow clients (uvicorn has none for reading a request).

A client that stalls mid-headers or mid-body would otherwise hold its connection (and, mid-body, the request's
buffers) forever. Here a request's headers must arrive within EMOTION_HEADER_TIMEOUT seconds of the connection (or of
the previous response), and its body may pause at most EMOTION_BODY_IDLE_TIMEOUT between chunks and take at most
EMOTION_BODY_TIMEOUT in all; past that the client gets a 408 and the connection is closed.
"""
from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from .settings import Settings, current

log = logging.getLogger(__name__)

KEEP_ALIVE_S = 5


def _timeout_response(what: str) -> bytes:
    body = json.dumps({"error": f"timed out waiting for the request {what}: send the whole request promptly"})
    return (f"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            f"connection: close\r\n\r\n{body}").encode()


class SlowClientProtocol(H11Protocol):
    """uvicorn's h11 protocol plus header and body read deadlines (`protocol_for` sets them)."""

    settings: Settings = current()

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._idle: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_deadline(self.settings.header_timeout_s, "headers")

    def data_received(self, data: bytes) -> None:
        before = self.conn.their_state
        super().data_received(data)
        self._track(before)

    def on_response_complete(self) -> None:
        before = self.conn.their_state
        super().on_response_complete()
        self._track(before)
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self._arm_deadline(self.settings.header_timeout_s + KEEP_ALIVE_S, "headers")

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        super().connection_lost(exc)

    # -------------------------------------------------------------------------------------------------- timers
    def _track(self, before: Any) -> None:
        """Moves the deadlines along with h11's view of the client: headers -> body -> done."""
        state = self.conn.their_state
        if state is h11.SEND_BODY:
            if before is not h11.SEND_BODY:
                self._arm_deadline(self.settings.body_timeout_s, "body")
            if self._idle is not None:
                self._idle.cancel()
            self._idle = self.loop.call_later(self.settings.body_idle_timeout_s, self._expire, "body")
        elif state is not h11.IDLE:  # the whole request is in (DONE, MUST_CLOSE, ...)
            self._cancel()

    def _arm_deadline(self, seconds: float, what: str) -> None:
        self._cancel()
        self._deadline = self.loop.call_later(seconds, self._expire, what)

    def _cancel(self) -> None:
        for timer in (self._deadline, self._idle):
            if timer is not None:
                timer.cancel()
        self._deadline = self._idle = None

    def _expire(self, what: str) -> None:
        self._cancel()
        if self.transport.is_closing():
            return
        cycle = self.cycle if self.conn.their_state is h11.SEND_BODY else None
        if cycle is None or not cycle.response_started:
            self.transport.write(_timeout_response(what))
        if cycle is not None:  # the app sees a disconnect instead of waiting for the rest of the body
            cycle.response_started = cycle.response_complete = cycle.disconnected = True
            cycle.message_event.set()
        log.info("closed a connection from %s: no complete request %s in time", self.client, what)
        self.transport.close()


def protocol_for(settings: Settings) -> type[SlowClientProtocol]:
    """The protocol class with `settings`' deadlines, for uvicorn's `http=`."""
    return type("SlowClientProtocol", (SlowClientProtocol,), {"settings": settings})


def server_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's options (`uvicorn.run(app, **options)`) for settings.host:settings.port with its deadlines."""
    # Open browser tabs hold Gradio's event streams forever: without a grace limit a restart would wait on them.
    # proxy_headers: the client (which the per-client bounds count, bodies.py) is the connection's address unless
    # the connection comes from a trusted proxy: then the address that proxy names in X-Forwarded-For.
    return {"host": settings.host, "port": settings.port, "http": protocol_for(settings),
            "timeout_keep_alive": KEEP_ALIVE_S, "timeout_graceful_shutdown": 5, "proxy_headers": True,
            "forwarded_allow_ips": settings.trusted_proxies}


def run(app: Any) -> None:
    """Serves `app` (from `create_app`, whose settings it uses) on $HOST:$PORT with the slow-client deadlines."""
    import uvicorn

    uvicorn.run(app, **server_options(app.state.settings))
