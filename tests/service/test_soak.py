"""Soak: 64 concurrent clients for 60 s against a real server's embedding and search routes.

Every request must be answered (no connection errors: no request dropped with no
response) with a 200. `MMEMBED_SOAK_SECONDS` shortens the run while developing; CI
runs the full 60 s.
"""

from __future__ import annotations

import asyncio
import collections
import os
import time

import httpx
import pytest

CLIENTS = 64
SECONDS = float(os.environ.get("MMEMBED_SOAK_SECONDS", "60"))


def _requests(i: int) -> tuple[str, str, dict]:
    text = f"a dog runs along the river, take {i}"
    return [
        ("POST", "/embed", {"json": {"text": text}}),
        ("POST", "/v1/embeddings", {"json": {"model": "m", "input": text, "dimensions": 64}}),
        ("GET", "/search", {"params": {"q": text, "k": 5, "dims": 64}}),
    ][i % 3]


async def _soak(url: str, seconds: float) -> tuple[collections.Counter, list[str], int]:
    statuses: collections.Counter = collections.Counter()
    errors: list[str] = []
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
        for text in ("a red car", "an old song", "rain on a roof"):
            (await http.post("/items", json={"text": text})).raise_for_status()
        stop = time.monotonic() + seconds
        sent = 0

        async def client(c: int) -> None:
            nonlocal sent
            i = c
            while time.monotonic() < stop:
                method, path, kwargs = _requests(i)
                i += CLIENTS
                sent += 1
                try:
                    response = await http.request(method, path, **kwargs)
                except httpx.TransportError as exc:
                    errors.append(f"{method} {path}: {type(exc).__name__}: {exc!r}")
                    continue
                statuses[(path, response.status_code)] += 1
                if response.status_code == 200 and path != "/search":
                    body = response.json()
                    row = body["embedding"] if path == "/embed" else body["data"][0]["embedding"]
                    assert len(row) == (512 if path == "/embed" else 64)

        await asyncio.gather(*(client(c) for c in range(CLIENTS)))
    return statuses, errors, sent


@pytest.mark.slow
def test_64_clients_for_60_seconds_get_every_answer(live_server):
    statuses, errors, sent = asyncio.run(_soak(live_server.url, SECONDS))
    assert not errors, f"{len(errors)} of {sent} requests got no response: {errors[:5]}"
    unexpected = {k: n for k, n in statuses.items() if k[1] != 200}
    assert not unexpected, f"unexpected statuses: {unexpected}"
    for path in ("/embed", "/v1/embeddings", "/search"):
        assert statuses[(path, 200)] > 0, f"no {path} request completed: {statuses}"
    assert sum(statuses.values()) == sent
    log = live_server.log()
    assert " ERROR " not in log and "Traceback" not in log, log
