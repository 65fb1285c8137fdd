"""Slow and excess clients: deadlines for a request's head and body, a cap on connections.

uvicorn (0.54) times out nothing before a request's head is complete: a connection that
sends nothing, or a header line every few seconds, stays open for good, and its
keep-alive timer is cancelled by any byte and only re-armed after a response. Its
`limit_concurrency` answers 503 once a request head is in, but never stops connections
from piling up to the open-file limit, where `accept()` fails and every new client is
reset. So:

- `connection_protocol(settings)`: uvicorn's HTTP protocol with a **head deadline**
  (`head_timeout_s`), armed when a connection opens and when the first byte of a next
  request arrives on a kept-alive one, cancelled when the head is complete; and a
  **connection cap** (`max_connections`, by default below RLIMIT_NOFILE): a connection
  over it is closed as soon as it is accepted, with a rate-limited warning.
- `BodyDeadlineMiddleware`: a **body deadline** (`body_timeout_s`) from the start of the
  request, applied to every `receive()` until the body is complete: 408 after, and the
  connection is closed.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import ServiceError
from service.settings import Settings

logger = logging.getLogger("mmembed.service")

# Files the service holds besides client sockets: the index, its database, the model,
# logs, the listening socket, pipes. A ready tiny-preset server holds 22.
RESERVED_FILES = 256
LOG_INTERVAL_S = 10.0


class BodyTimedOut(ServiceError):
    status_code = 408
    error_type = "request_timeout"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"Connection": "close"})


class RateLimitedLog:
    """One log line per `interval_s` at most for a repeating event, counting the rest."""

    def __init__(self, level: int, message: str, interval_s: float = LOG_INTERVAL_S) -> None:
        self.level = level
        self.message = message  # formatted with {count}
        self.interval_s = interval_s
        self._count = 0
        self._last = float("-inf")

    def event(self) -> None:
        self._count += 1
        now = time.monotonic()
        if now - self._last >= self.interval_s:
            logger.log(self.level, self.message.format(count=self._count))
            self._count = 0
            self._last = now


def file_limit() -> int:
    """The process's soft open-file limit (RLIMIT_NOFILE)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return 1 << 20 if soft == resource.RLIM_INFINITY else int(soft)


def connection_limit(settings: Settings) -> int:
    """The cap on open client connections: the setting, else the file limit less what the
    service itself needs (half the limit where that is small)."""
    if settings.max_connections is not None:
        return settings.max_connections
    limit = file_limit()
    return max(limit - RESERVED_FILES, limit // 2, 1)


def connection_protocol(settings: Settings, base: type[asyncio.Protocol] | None = None) -> type:
    """uvicorn's HTTP protocol class (httptools, else h11) with the head deadline and the
    connection cap of `settings`, for `uvicorn.Config(http=...)`."""
    if base is None:
        from uvicorn.protocols.http.auto import AutoHTTPProtocol

        base = AutoHTTPProtocol
    head_timeout_s = settings.head_timeout_s
    cap = connection_limit(settings)
    refused_log = RateLimitedLog(
        logging.WARNING,
        f"connection cap reached: {cap} open connections (MMEMBED_MAX_CONNECTIONS, below the "
        f"open-file limit {file_limit()}); closed {{count}} new connection(s) since the last "
        "such line",
    )
    timed_out_log = RateLimitedLog(
        logging.INFO,
        f"closed {{count}} connection(s) that sent no complete request head within "
        f"{head_timeout_s:g} s (MMEMBED_HEAD_TIMEOUT_S) since the last such line",
    )

    class DeadlineProtocol(base):  # type: ignore[misc, valid-type]
        _refused = False
        _head_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:
            if len(self.connections) >= cap:
                self._refused = True
                refused_log.event()
                transport.abort()  # frees the descriptor now; the client sees a reset/EOF
                return
            super().connection_made(transport)
            self._arm_head_deadline()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._refused:
                return
            self._cancel_head_deadline()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            idle = self.cycle is None or self.cycle.response_complete
            if idle and self._head_timer is None:
                self._arm_head_deadline()  # the first byte of a next request
            before = self.cycle
            super().data_received(data)
            if self.cycle is not before:  # a request head is complete
                self._cancel_head_deadline()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            # between requests uvicorn's keep-alive timer runs; ours starts at the next byte
            self._cancel_head_deadline()

        def _arm_head_deadline(self) -> None:
            self._cancel_head_deadline()
            self._head_timer = self.loop.call_later(head_timeout_s, self._head_timed_out)

        def _cancel_head_deadline(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timed_out(self) -> None:
            self._head_timer = None
            if self.transport is None or self.transport.is_closing():
                return
            timed_out_log.event()
            self.transport.close()

    DeadlineProtocol.__name__ = DeadlineProtocol.__qualname__ = f"Deadline{base.__name__}"
    return DeadlineProtocol


class BodyDeadlineMiddleware:
    """408 for a request whose body is not complete `timeout_s` after the request began."""

    def __init__(self, app: ASGIApp, timeout_s: float) -> None:
        self.app = app
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        complete = False

        async def timed_receive() -> Message:
            nonlocal complete
            if complete:  # after the body: waiting for a disconnect has no deadline
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise BodyTimedOut(
                    f"the request body did not arrive within {self.timeout_s:g} s "
                    "(MMEMBED_BODY_TIMEOUT_S)"
                ) from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                complete = True
            return message

        await self.app(scope, timed_receive, send)
