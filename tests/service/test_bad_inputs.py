"""Every bad input gets a 4xx JSON error naming the problem; the service and index survive."""

from __future__ import annotations

import base64
import os

import pytest

LIMIT = 64 * 1024


@pytest.fixture
def seeded(make_client, png_bytes):
    """A client with small upload limits and three items already stored."""
    client = make_client(max_upload_bytes=LIMIT, max_request_bytes=4 * LIMIT, max_text_chars=2000)
    client.post("/items", json={"text": "kept", "id": "keep"})
    client.post("/items", files={"file": ("p", png_bytes)}, data={"id": "keep-img"})
    client.post("/items", json={"text": "also kept", "metadata": {"a": 1}})
    assert client.get("/items").json()["total"] == 3
    return client


def truncated_png(png: bytes) -> bytes:
    return png[: len(png) // 2]


M4A = b"\x00\x00\x00\x20ftypM4A \x00\x00\x00\x00" + b"\x00" * 64
TOO_BIG = b"\x89PNG\r\n\x1a\n" + os.urandom(LIMIT + 10)
MANY_TOKENS = " ".join(["word"] * 400)  # under the character limit, over the tiny model's tokens


def cases(png: bytes) -> list[tuple[str, str, str, dict, int, str, str]]:
    """(name, method, path, request kwargs, status, error type, text in the message).

    Long on purpose: a table, one row per bad request, read down rather than called.
    """
    corrupt = truncated_png(png)
    b64_corrupt = base64.b64encode(corrupt).decode()
    return [
        (
            "corrupt image",
            "POST",
            "/embed",
            {"files": {"file": ("x.png", corrupt)}},
            400,
            "corrupt_media",
            "corrupt image",
        ),
        (
            "corrupt image item",
            "POST",
            "/items",
            {"files": {"file": ("x.png", corrupt)}},
            400,
            "corrupt_media",
            "corrupt image",
        ),
        (
            "corrupt base64 item",
            "POST",
            "/items",
            {"json": {"content_base64": b64_corrupt}},
            400,
            "corrupt_media",
            "corrupt image",
        ),
        (
            "bad base64",
            "POST",
            "/items",
            {"json": {"content_base64": "%%%"}},
            400,
            "invalid_request",
            "base64",
        ),
        (
            "unsupported audio",
            "POST",
            "/embed",
            {"files": {"file": ("a.m4a", M4A)}},
            415,
            "unsupported_media_type",
            "WAV",
        ),
        (
            "unsupported audio item",
            "POST",
            "/items",
            {"files": {"file": ("a.m4a", M4A)}},
            415,
            "unsupported_media_type",
            "M4A",
        ),
        (
            "file too large",
            "POST",
            "/embed",
            {"files": {"file": ("big.png", TOO_BIG)}},
            413,
            "payload_too_large",
            "limit",
        ),
        (
            "file too large item",
            "POST",
            "/items",
            {"files": {"file": ("big.png", TOO_BIG)}},
            413,
            "payload_too_large",
            "limit",
        ),
        (
            "body too large",
            "POST",
            "/embed",
            {"content": b"x" * (4 * LIMIT + 1), "headers": {"content-type": "application/json"}},
            413,
            "payload_too_large",
            "limit",
        ),
        ("empty text", "POST", "/embed", {"json": {"text": ""}}, 400, "invalid_request", "empty"),
        (
            "blank text form",
            "POST",
            "/items",
            {"data": {"text": "   "}},
            400,
            "invalid_request",
            "empty",
        ),
        (
            "text over chars",
            "POST",
            "/embed",
            {"json": {"text": "a" * 2001}},
            400,
            "invalid_request",
            "limit is 2000",
        ),
        (
            "text over tokens",
            "POST",
            "/items",
            {"json": {"text": MANY_TOKENS}},
            400,
            "invalid_input",
            "tokens",
        ),
        ("empty search query", "GET", "/search?q=", {}, 400, "invalid_request", "empty"),
        (
            "dims not allowed",
            "POST",
            "/embed?dims=100",
            {"json": {"text": "x"}},
            422,
            "validation_error",
            "dims must be one of 64, 128, 256, 512",
        ),
        ("dims not a number", "GET", "/search?q=x&dims=big", {}, 422, "validation_error", "dims"),
        ("k zero", "GET", "/search?q=x&k=0", {}, 422, "validation_error", "k"),
        (
            "k too large",
            "GET",
            "/search?q=x&k=100000",
            {},
            400,
            "invalid_request",
            "k must be between 1 and 1000",
        ),
        ("bad mode", "GET", "/search?q=x&mode=fast", {}, 422, "validation_error", "mode"),
        ("malformed where", "GET", "/search?q=x&where={oops", {}, 400, "invalid_request", "where"),
        (
            "where not an object",
            "GET",
            "/search?q=x&where=[1]",
            {},
            400,
            "invalid_request",
            "where must be a JSON object",
        ),
        ("unknown id", "GET", "/items/does-not-exist", {}, 404, "not_found", "does-not-exist"),
        (
            "delete unknown id",
            "DELETE",
            "/items/does-not-exist",
            {},
            404,
            "not_found",
            "does-not-exist",
        ),
        (
            "metadata not json",
            "POST",
            "/items",
            {"data": {"text": "x", "metadata": "{nope"}},
            400,
            "invalid_request",
            "metadata is not valid JSON",
        ),
        (
            "metadata not object",
            "POST",
            "/items",
            {"data": {"text": "x", "metadata": "[1, 2]"}},
            400,
            "invalid_request",
            "metadata must be a JSON object",
        ),
        (
            "metadata wrong type json",
            "POST",
            "/items",
            {"json": {"text": "x", "metadata": [1]}},
            422,
            "validation_error",
            "metadata",
        ),
        (
            "duplicate id",
            "POST",
            "/items",
            {"json": {"text": "x", "id": "keep"}},
            409,
            "duplicate_id",
            "keep",
        ),
        (
            "malformed json",
            "POST",
            "/embed",
            {"content": b"{not json", "headers": {"content-type": "application/json"}},
            400,
            "invalid_request",
            "malformed JSON",
        ),
        (
            "wrong content type",
            "POST",
            "/embed",
            {"content": b"hello", "headers": {"content-type": "text/plain"}},
            415,
            "unsupported_media_type",
            "multipart/form-data",
        ),
        (
            "no input",
            "POST",
            "/embed",
            {"data": {"other": "x"}},
            400,
            "invalid_request",
            "no input",
        ),
        (
            "two inputs to single",
            "POST",
            "/embed",
            {"data": {"text": "x"}, "files": {"file": ("p", png)}},
            400,
            "invalid_request",
            "one input",
        ),
        (
            "batch with a bad item",
            "POST",
            "/items/batch",
            {"json": {"items": [{"text": "fine"}, {"text": ""}]}},
            400,
            "invalid_request",
            "items[1]",
        ),
        (
            "batch with a corrupt file",
            "POST",
            "/items/batch",
            {"files": [("file", ("ok", png)), ("file", ("bad", corrupt))]},
            400,
            "corrupt_media",
            "input 1",
        ),
        (
            "openai bad dimensions",
            "POST",
            "/v1/embeddings",
            {"json": {"input": "x", "model": "m", "dimensions": 300}},
            400,
            "invalid_request",
            "dimensions",
        ),
        (
            "openai token arrays",
            "POST",
            "/v1/embeddings",
            {"json": {"input": [1, 2, 3], "model": "m"}},
            400,
            "invalid_request",
            "token arrays",
        ),
        (
            "openai empty list",
            "POST",
            "/v1/embeddings",
            {"json": {"input": [], "model": "m"}},
            400,
            "invalid_request",
            "empty",
        ),
        (
            "openai empty string",
            "POST",
            "/v1/embeddings",
            {"json": {"input": "", "model": "m"}},
            400,
            "invalid_request",
            "empty",
        ),
        (
            "openai form body",
            "POST",
            "/v1/embeddings",
            {"data": {"input": "x", "model": "m"}},
            415,
            "unsupported_media_type",
            "application/x-www-form-urlencoded",
        ),
        (
            "openai malformed json",
            "POST",
            "/v1/embeddings",
            {"content": b'{"input": "x", "model"', "headers": {"content-type": "application/json"}},
            400,
            "invalid_request",
            "malformed JSON",
        ),
        (
            "openai missing model",
            "POST",
            "/v1/embeddings",
            {"json": {"input": "x"}},
            422,
            "validation_error",
            "model",
        ),
        ("unknown route", "GET", "/nowhere", {}, 404, "not_found", "Not Found"),
    ]


CASE_NAMES = [c[0] for c in cases(b"\x89PNG")]


@pytest.mark.parametrize("name", CASE_NAMES)
def test_bad_input_gets_a_clear_4xx_and_changes_nothing(seeded, png_bytes, name):
    (case,) = [c for c in cases(png_bytes) if c[0] == name]
    _, method, path, kwargs, status, error_type, text = case
    response = seeded.request(method, path, **kwargs)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["type"] == error_type
    assert text in error["message"], error["message"]

    assert seeded.get("/healthz").status_code == 200
    assert seeded.get("/readyz").status_code == 200
    assert seeded.get("/items").json()["total"] == 3
    assert seeded.get("/items/keep").status_code == 200
    assert seeded.post("/embed", json={"text": "still works"}).status_code == 200


def test_no_500_was_served(seeded, png_bytes):
    for _, method, path, kwargs, *_ in cases(png_bytes):
        seeded.request(method, path, **kwargs)
    metrics = seeded.get("/metrics").text
    assert 'status="500"' not in metrics
    assert 'status="4' in metrics


@pytest.mark.parametrize("path", ["/embed", "/v1/embeddings", "/items"])
def test_a_chunked_body_is_stopped_at_the_limit_while_streaming(seeded, path):
    def chunks():
        for _ in range(64):
            yield b"x" * (LIMIT // 4)

    response = seeded.post(path, content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413, response.text
    assert response.json()["error"]["type"] == "payload_too_large"
    assert seeded.get("/items").json()["total"] == 3
