"""Issue 29, findings 3 and 4, over real HTTP: a malformed value gets a 400 naming it, in
every place a client's JSON arrives, and one bad text among concurrent good ones fails
alone."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

DEEP = "[" * 3000 + "]" * 3000
MANY_KEYS = "{" + ",".join(f'"k{i}": 1' for i in range(1000)) + "}"

# name -> (a JSON value, text a 400's message names). Each one gave a 500 before.
VALUES = {
    "int over 2^63-1": ("18446744073709551616", "64-bit"),
    "int under -2^63": ("-9223372036854775809", "64-bit"),
    "5000-digit int": ("1" * 5000, "digits"),
    "nested 3000 deep": (DEEP, "nested deeper"),
    "1000 keys": (MANY_KEYS, "keys"),
    "lone surrogate": ('"x \\ud800"', "surrogate"),
    "NUL in a key": ('{"a\\u0000b": 1}', "NUL"),
}


def _bodies(value: str) -> dict[str, tuple[str, str, dict]]:
    """Where a client's JSON arrives: (method, path, httpx request arguments)."""
    obj = value if value.startswith("{") else '{"a": VALUE}'.replace("VALUE", value)
    as_json = {"headers": {"content-type": "application/json"}}
    return {
        "where=": ("GET", "/search", {"params": {"q": "red", "where": obj}}),
        "/items metadata": (
            "POST",
            "/items",
            {"content": '{"text": "x", "metadata": VALUE}'.replace("VALUE", obj), **as_json},
        ),
        "/items/batch metadata": (
            "POST",
            "/items/batch",
            {
                "content": '{"items": [{"text": "x", "metadata": VALUE}]}'.replace("VALUE", obj),
                **as_json,
            },
        ),
        "form metadata": ("POST", "/items", {"data": {"text": "x", "metadata": obj}}),
        "/embed text": (
            "POST",
            "/embed",
            {"content": '{"text": VALUE}'.replace("VALUE", value), **as_json},
        ),
        "/search text": (
            "POST",
            "/search",
            {"content": '{"text": VALUE}'.replace("VALUE", value), **as_json},
        ),
        "/v1/embeddings dimensions": (
            "POST",
            "/v1/embeddings",
            {
                "content": '{"model": "m", "input": "hi", "dimensions": VALUE}'.replace(
                    "VALUE", value
                ),
                **as_json,
            },
        ),
        "/v1/embeddings input": (
            "POST",
            "/v1/embeddings",
            {"content": '{"model": "m", "input": VALUE}'.replace("VALUE", value), **as_json},
        ),
    }


@pytest.fixture(scope="module")
def server(module_server_factory):
    server = module_server_factory()
    server.start()
    response = httpx.post(f"{server.url}/items", json={"text": "seed", "id": "seed"})
    assert response.status_code == 201, response.text
    return server


@pytest.mark.parametrize("name", VALUES)
def test_a_malformed_value_gets_a_4xx_naming_it_wherever_it_arrives(server, name):
    value, named = VALUES[name]
    with httpx.Client(base_url=server.url, timeout=60) as http:
        for place, (method, path, kwargs) in _bodies(value).items():
            response = http.request(method, path, **kwargs)
            assert response.status_code in (400, 422), (place, response.status_code, response.text)
            message = response.json()["error"]["message"]
            if response.status_code == 400:
                assert named in message, (place, message)
        # nothing was stored, and the service answers as before
        assert http.get("/items").json()["total"] == 1
        assert http.get("/search", params={"q": "seed", "where": '{"a": 1}'}).status_code == 200


def test_in_range_values_still_work(server):
    with httpx.Client(base_url=server.url, timeout=60) as http:
        metadata = {"big": 2**63 - 1, "small": -(2**63), "nested": [[[{"a": "é ✓"}]]]}
        response = http.post("/items", json={"text": "edge", "id": "edge", "metadata": metadata})
        assert response.status_code == 201, response.text
        assert http.get("/items/edge").json()["metadata"] == metadata
        where = json.dumps({"big": 2**63 - 1})
        hits = http.get("/search", params={"q": "edge", "where": where}).json()["results"]
        assert [hit["id"] for hit in hits] == ["edge"]
        assert http.delete("/items/edge").status_code in (200, 204)


def test_one_bad_text_among_concurrent_ones_fails_alone(server):
    """Finding 3's reproduction: 30 concurrent /embed calls, one of them with a lone
    surrogate. Before, all 30 got 500; now the bad one gets 400 and 29 get their vector."""
    bodies = [json.dumps({"text": f"good text {i}"}) for i in range(29)]
    bodies.insert(13, '{"text": "x \\ud800"}')

    async def main() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as http:
            return await asyncio.gather(
                *(
                    http.post("/embed", content=b, headers={"content-type": "application/json"})
                    for b in bodies
                )
            )

    responses = asyncio.run(main())
    statuses = [r.status_code for r in responses]
    assert statuses[13] == 400, responses[13].text
    assert "surrogate" in responses[13].json()["error"]["message"]
    assert statuses[:13] + statuses[14:] == [200] * 29
    assert all(len(r.json()["embedding"]) == 512 for r in responses if r.status_code == 200)
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'status="500"' not in metrics
