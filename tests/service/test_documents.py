"""Search answers carry the document: real `mmembed serve` processes over HTTP, both backends.

Each backend's server opens a store that an older release wrote (no documents
table; the items answer text null, nothing is rebuilt), then takes texts, captions
and opt-outs through every write route, and gives them back from every read route.
"""

from __future__ import annotations

import base64
import sqlite3

import httpx
import numpy as np
import psycopg
import pytest

from index import VectorStore
from index.pg import PostgresConfig, PostgresStore
from index.sqlite_store import DB_NAME

CHICKEN = "These days a chicken leg is a rare dish."
CAPTION = "A drawing of coloured shapes, as a title"
LIMIT = 300  # MMEMBED_MAX_TEXT_CHARS for these servers


def _old_store(backend: str, server, postgres_url: str | None) -> None:
    """An item written the way the release before documents left it."""
    vector = np.random.default_rng(0).standard_normal(512).astype(np.float32)
    if backend == "local":
        with VectorStore.open(server.data_dir) as store:
            store.add(vector, modality="text", id="old", metadata={"from": "before"})
        with sqlite3.connect(server.data_dir / DB_NAME) as conn:
            conn.execute("DROP TABLE documents")
            conn.execute("UPDATE meta SET value = 2 WHERE key = 'schema_version'")
        return
    with psycopg.connect(postgres_url, autocommit=True) as conn:  # the module's database
        for table in ("documents", "previews", "items", "meta"):
            conn.execute(f"DROP TABLE IF EXISTS public.mmembed_{table}")
    with PostgresStore.open(postgres_url, PostgresConfig()) as store:
        store.add(vector, modality="text", id="old", metadata={"from": "before"})
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("DROP TABLE public.mmembed_documents")
        conn.execute("UPDATE public.mmembed_meta SET value = '1' WHERE key = 'schema_version'")


@pytest.fixture(params=["local", "postgres"])
def server(request, server_factory):
    env = {"MMEMBED_MAX_TEXT_CHARS": str(LIMIT)}
    url = None
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_url")
        env["MMEMBED_INDEX_URL"] = url
    made = server_factory(env=env)
    _old_store(request.param, made, url)
    made.start()
    made.backend = request.param
    return made


def _hits(response: httpx.Response) -> list[dict]:
    assert response.status_code == 200, response.text
    return response.json()["results"]


def test_texts_and_captions_come_back_from_every_route(server, png_bytes, png_bytes_2, wav_bytes):
    base = server.url
    # the older release's item serves, with no text
    old = httpx.get(f"{base}/items/old").json()
    assert old["text"] is None and old["metadata"] == {"from": "before"}

    assert httpx.post(f"{base}/items", json={"text": CHICKEN, "id": "chicken"}).status_code == 201
    created = httpx.post(
        f"{base}/items",
        files={"file": ("shapes.png", png_bytes, "image/png")},
        data={"text": CAPTION, "id": "pic", "metadata": '{"k": 1}'},
    )
    assert created.status_code == 201, created.text
    assert created.json() == {"id": "pic", "modality": "image"}
    secret = httpx.post(
        f"{base}/items", params={"store_text": "false"}, json={"text": "private", "id": "secret"}
    )
    assert secret.status_code == 201
    batch = httpx.post(
        f"{base}/items/batch",
        json={
            "items": [
                {"text": "batch one", "id": "b1"},
                {
                    "content_base64": base64.b64encode(png_bytes_2).decode(),
                    "text": "batch caption",
                    "id": "b2",
                },
                {"content_base64": base64.b64encode(wav_bytes).decode(), "id": "b3"},
            ]
        },
    )
    assert batch.status_code == 201, batch.text

    expected = {
        "old": None,
        "chicken": CHICKEN,
        "pic": CAPTION,
        "secret": None,
        "b1": "batch one",
        "b2": "batch caption",
        "b3": None,
    }
    for item_id, text in expected.items():
        assert httpx.get(f"{base}/items/{item_id}").json()["text"] == text, item_id
    listed = httpx.get(f"{base}/items").json()["items"]
    assert {it["id"]: it["text"] for it in listed} == expected

    # GET /search: the text first, with its document and metadata
    hits = _hits(httpx.get(f"{base}/search", params={"q": CHICKEN, "k": 7}))
    assert hits[0]["id"] == "chicken" and hits[0]["text"] == CHICKEN
    assert hits[0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert {h["id"]: h["text"] for h in hits} == expected
    assert {h["id"]: h["metadata"] for h in hits}["pic"] == {"k": 1}
    # POST /search with the picture, with JSON text, and with speech
    hits = _hits(
        httpx.post(f"{base}/search", files={"file": ("q.png", png_bytes)}, params={"k": 7})
    )
    assert hits[0]["id"] == "pic" and hits[0]["text"] == CAPTION
    hits = _hits(httpx.post(f"{base}/search", json={"text": CHICKEN}, params={"k": 1}))
    assert hits == [
        {"id": "chicken", "score": hits[0]["score"], "modality": "text", "text": CHICKEN,
         "metadata": {}}
    ]  # fmt: skip
    hits = _hits(
        httpx.post(f"{base}/search", files={"file": ("s.wav", wav_bytes)}, params={"k": 7})
    )
    assert {h["id"]: h["text"] for h in hits} == expected

    # include= asks for less
    for include, keys in [
        ("text", {"text"}),
        ("metadata", {"metadata"}),
        ("", set()),
        (" metadata , text ", {"text", "metadata"}),
    ]:
        hits = _hits(httpx.get(f"{base}/search", params={"q": CHICKEN, "include": include}))
        assert {key for hit in hits for key in hit} == {"id", "score", "modality"} | keys, include
    hits = _hits(
        httpx.post(
            f"{base}/search", params={"include": "text"}, files={"file": ("q.png", png_bytes)}
        )
    )
    assert hits[0]["text"] == CAPTION and "metadata" not in hits[0]
    wrong = httpx.get(f"{base}/search", params={"q": "x", "include": "text,vector"})
    assert wrong.status_code == 422
    assert (
        "unknown field 'vector'; include takes text, metadata" in wrong.json()["error"]["message"]
    )

    # PUT replaces the text, or drops it when none is sent
    put = httpx.put(f"{base}/items/chicken", json={"text": "a rare dish indeed"})
    assert put.status_code == 200
    assert httpx.get(f"{base}/items/chicken").json()["text"] == "a rare dish indeed"
    put = httpx.put(f"{base}/items/pic", files={"file": ("shapes.png", png_bytes, "image/png")})
    assert put.status_code == 200 and httpx.get(f"{base}/items/pic").json()["text"] is None


def test_a_text_over_the_limit_is_refused_naming_it(server, png_bytes):
    base = server.url
    before = httpx.get(f"{base}/items").json()["total"]
    long = "word " * 61  # 305 characters
    for request in (
        {"json": {"text": long}},
        {"data": {"text": long}},
        {"json": {"text": long, "content_base64": base64.b64encode(png_bytes).decode()}},
        {"files": {"file": ("p.png", png_bytes)}, "data": {"text": long}},
    ):
        refused = httpx.post(f"{base}/items", **request)
        assert refused.status_code == 413, refused.text
        message = refused.json()["error"]["message"]
        assert f"is 305 characters; a stored text is at most {LIMIT} (MMEMBED_MAX_TEXT_CHARS)" in (
            message
        )
    refused = httpx.post(f"{base}/items/batch", json={"items": [{"text": "ok"}, {"text": long}]})
    assert refused.status_code == 413 and "items[1]" in refused.json()["error"]["message"]
    refused = httpx.put(f"{base}/items/x", json={"text": long})
    assert refused.status_code == 413
    assert httpx.get(f"{base}/items").json()["total"] == before
    # at the limit it is stored whole
    exact = "x" * LIMIT
    created = httpx.post(f"{base}/items", json={"text": exact}).json()
    assert httpx.get(f"{base}/items/{created['id']}").json()["text"] == exact


def test_store_text_false_keeps_vectors_only(server_factory, png_bytes):
    server = server_factory(env={"MMEMBED_STORE_TEXT": "false"})
    server.start()
    base = server.url
    assert httpx.post(f"{base}/items", json={"text": CHICKEN, "id": "t"}).status_code == 201
    # a request cannot ask to keep what the server is set to keep none of
    created = httpx.post(
        f"{base}/items",
        params={"store_text": "true"},
        files={"file": ("p.png", png_bytes)},
        data={"text": CAPTION, "id": "p"},
    )
    assert created.status_code == 201
    hits = _hits(httpx.get(f"{base}/search", params={"q": CHICKEN}))
    assert hits[0]["id"] == "t" and [h["text"] for h in hits] == [None, None]
    assert httpx.get(f"{base}/items/p").json()["text"] is None
    assert httpx.get(f"{base}/readyz").json()["index"]["text_bytes"] == 0
