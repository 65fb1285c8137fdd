"""Decoded media bytes in flight across the whole server, capped.

A request with files reserves, before decoding any of them, the memory their
headers say decoding will hold (`service.media.probe_media`), and keeps it until
its response is sent: decoded audio and images stay alive through the embedding.
Concurrency therefore cannot multiply the worst case: past
`max_decode_bytes_in_flight` a request waits up to `wait_s` for room, then gets
429 with Retry-After. One request larger than the whole cap waits for all of it.

The reservation is request-scoped through a context variable that
`DecodeBudgetMiddleware` sets, so routes call `reserve_decode(n)` without being
handed anything; outside a request (the command line) it does nothing.
"""

from __future__ import annotations

import asyncio
import logging
from contextvars import ContextVar

from starlette.types import ASGIApp, Receive, Scope, Send

from service.errors import Overloaded

logger = logging.getLogger("mmembed.service")

MiB = 2**20


class DecodeBudget:
    """A counter of bytes with a capacity; reservations wait briefly, then fail."""

    def __init__(self, capacity: int, *, wait_s: float = 1.0) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be positive, got {capacity}")
        self.capacity = capacity
        self.wait_s = wait_s
        self.in_flight = 0
        self.peak = 0
        self.refused = 0
        self._changed: asyncio.Condition | None = None

    def _condition(self) -> asyncio.Condition:
        if self._changed is None:
            self._changed = asyncio.Condition()
        return self._changed

    async def reserve(self, amount: int) -> int:
        """Reserve `amount` bytes (at most the capacity); returns what was reserved."""
        amount = max(0, min(amount, self.capacity))
        changed = self._condition()
        async with changed:
            try:
                async with asyncio.timeout(self.wait_s):
                    await changed.wait_for(lambda: self.in_flight + amount <= self.capacity)
            except TimeoutError:
                self.refused += 1
                logger.warning(
                    "decode budget full: %d MiB in flight, %d MiB more asked; refused (429)",
                    self.in_flight // MiB,
                    amount // MiB,
                )
                raise Overloaded(
                    f"the server is decoding {self.in_flight // MiB} MiB of media already; "
                    f"this request needs {amount // MiB} MiB more, over the "
                    f"{self.capacity // MiB} MiB limit (MMEMBED_MAX_DECODE_BYTES_IN_FLIGHT); "
                    "retry shortly",
                    retry_after_s=1,
                ) from None
            self.in_flight += amount
            self.peak = max(self.peak, self.in_flight)
        return amount

    async def release(self, amount: int) -> None:
        changed = self._condition()
        async with changed:
            self.in_flight -= amount
            changed.notify_all()


_request: ContextVar[tuple[DecodeBudget, list[int]] | None] = ContextVar(
    "mmembed_decode_budget", default=None
)


async def reserve_decode(amount: int) -> None:
    """Hold `amount` decoded bytes until this request's response is sent (no-op outside one)."""
    current = _request.get()
    if current is None or amount <= 0:
        return
    budget, held = current
    held.append(await budget.reserve(amount))


class DecodeBudgetMiddleware:
    """Gives each HTTP request its share of `budget`, released when its response is sent."""

    def __init__(self, app: ASGIApp, budget: DecodeBudget) -> None:
        self.app = app
        self.budget = budget

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        held: list[int] = []
        token = _request.set((self.budget, held))
        try:
            await self.app(scope, receive, send)
        finally:
            _request.reset(token)
            if held:
                await self.budget.release(sum(held))
