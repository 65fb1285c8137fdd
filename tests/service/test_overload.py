"""Under overload the service answers 429 with Retry-After, or 504 past the request timeout,
and stays healthy."""

from __future__ import annotations

import asyncio

import httpx

from service.app import create_app
from service.settings import Settings


async def _with_app(settings: Settings, embedder, fn):
    app = create_app(settings, embedder=embedder)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            return await fn(client)


def test_a_full_queue_answers_429_with_retry_after(tmp_path, tiny_embedder):
    settings = Settings(
        preset="tiny", data_dir=tmp_path, queue_size=2, max_batch_size=1, max_wait_ms=0
    )

    async def burst(client):
        texts = [f"text {i}" for i in range(24)]
        responses = await asyncio.gather(*(client.post("/embed", json={"text": t}) for t in texts))
        health = await client.get("/healthz")
        after = await client.post("/embed", json={"text": "after the burst"})
        metrics = (await client.get("/metrics")).text
        return responses, health, after, metrics

    responses, health, after, metrics = asyncio.run(_with_app(settings, tiny_embedder, burst))
    statuses = [r.status_code for r in responses]
    assert set(statuses) == {200, 429}, statuses
    refused = [r for r in responses if r.status_code == 429]
    assert all(int(r.headers["retry-after"]) >= 1 for r in refused)
    assert all(r.json()["error"]["type"] == "overloaded" for r in refused)
    assert health.status_code == 200 and after.status_code == 200
    assert 'route="/embed",status="429"' in metrics


def test_past_the_request_timeout_is_504(tmp_path, tiny_embedder):
    settings = Settings(preset="tiny", data_dir=tmp_path, request_timeout_s=0.0001)

    async def one(client):
        return await client.post("/embed", json={"text": "too slow"}), await client.get("/healthz")

    response, health = asyncio.run(_with_app(settings, tiny_embedder, one))
    assert response.status_code == 504
    assert response.json()["error"]["type"] == "timeout"
    assert health.status_code == 200
