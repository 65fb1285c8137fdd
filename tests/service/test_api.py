"""The HTTP API in-process (tiny preset): embed, batch, items, search, health, docs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from model.config import preset
from model.matryoshka import truncate


def vec(response) -> np.ndarray:
    assert response.status_code == 200, response.text
    return np.asarray(response.json()["embedding"], dtype=np.float32)


def test_readyz_says_demo_and_what_is_loaded(client):
    body = client.get("/readyz").json()
    assert body["status"] == "ready" and body["preset"] == "tiny"
    assert body["demo"] is True and body["trained"] is False
    assert "DEMO" in body["warning"]
    assert set(body["modalities"]) == {"image", "audio", "text"}
    assert body["audio_window"] == preset("tiny").encoders["audio"].audio_window == "full"
    assert body["text_tower"] == "trained" and body["blend"] is None
    # "auto" keeps the random tiny encoders in torch
    assert body["encoder_runtime"] == {"image": "torch", "audio": "torch", "text": "torch"}
    assert body["index"]["counts"] == {"image": 0, "audio": 0, "text": 0}
    assert body["upgrades"] == {"takes_over": [], "turns": []}  # a preset replaces nothing
    assert client.get("/healthz").json() == {"status": "ok"}


def test_every_response_carries_the_demo_warning(client):
    response = client.post("/embed", json={"text": "hello"})
    assert "DEMO MODEL" in response.headers["x-mmembed-warning"]


def test_text_as_json_and_as_form_field_agree(client):
    as_json = vec(client.post("/embed", json={"text": "a red ball"}))
    as_form = vec(client.post("/embed", data={"text": "a red ball"}))
    assert as_json.shape == (512,)
    np.testing.assert_allclose(as_json, as_form, atol=1e-6)
    assert abs(np.linalg.norm(as_json) - 1) < 1e-5


def test_image_and_audio_are_detected_from_bytes_whatever_the_name(client, png_bytes, wav_bytes):
    image = client.post("/embed", files={"file": ("sound.wav", png_bytes, "audio/wav")})
    audio = client.post("/embed", files={"file": ("picture.png", wav_bytes, "image/png")})
    assert image.json()["modality"] == "image"
    assert audio.json()["modality"] == "audio"
    assert len(image.json()["embedding"]) == 512


@pytest.mark.parametrize("dims", [64, 128, 256])
def test_dims_is_the_renormalised_prefix_of_the_full_vector(client, png_bytes, dims):
    full = vec(client.post("/embed", files={"file": ("x", png_bytes)}))
    short = vec(client.post(f"/embed?dims={dims}", files={"file": ("x", png_bytes)}))
    assert short.shape == (dims,)
    assert abs(np.linalg.norm(short) - 1) < 1e-5
    np.testing.assert_allclose(short, truncate(full[None], dims)[0], atol=1e-5)


def test_batch_embed_mixes_modalities_in_order(client, png_bytes, wav_bytes):
    files = [("file", ("a", png_bytes)), ("file", ("b", wav_bytes))]
    response = client.post("/embed/batch?dims=128", files=files, data={"text": ["one", "two"]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["dims"] == 128
    assert [row["index"] for row in body["data"]] == [0, 1, 2, 3]
    assert sorted(row["modality"] for row in body["data"]) == ["audio", "image", "text", "text"]
    single = vec(client.post("/embed?dims=128", json={"text": "two"}))
    texts = [row for row in body["data"] if row["modality"] == "text"]
    np.testing.assert_allclose(texts[1]["embedding"], single, atol=1e-5)


def test_batch_embed_json_texts(client):
    response = client.post("/embed/batch?dims=64", json={"texts": ["a", "b", "c"]})
    assert response.status_code == 200
    rows = response.json()["data"]
    assert len(rows) == 3 and all(len(r["embedding"]) == 64 for r in rows)
    assert rows[0]["embedding"] != rows[1]["embedding"]


def test_items_round_trip(client, png_bytes, wav_bytes):
    text = client.post("/items", json={"text": "a dog", "id": "t1", "metadata": {"lang": "en"}})
    assert text.status_code == 201 and text.json() == {"id": "t1", "modality": "text"}
    image = client.post(
        "/items", files={"file": ("p", png_bytes)}, data={"metadata": json.dumps({"n": 1})}
    )
    assert image.status_code == 201 and image.json()["modality"] == "image"
    audio = client.post("/items", files={"file": ("w", wav_bytes)}, data={"id": "a1"})
    assert audio.json() == {"id": "a1", "modality": "audio"}

    got = client.get("/items/t1", params={"include_embedding": "true", "dims": 64}).json()
    assert got["metadata"] == {"lang": "en"} and got["modality"] == "text"
    direct = vec(client.post("/embed?dims=64", json={"text": "a dog"}))
    np.testing.assert_allclose(got["embedding"], direct, atol=1e-5)

    listing = client.get("/items").json()
    assert listing["total"] == 3
    assert client.get("/items", params={"modality": "audio"}).json()["total"] == 1
    assert client.get("/readyz").json()["index"]["counts"] == {"image": 1, "audio": 1, "text": 1}

    assert client.delete("/items/t1").json() == {"id": "t1", "deleted": True}
    missing = client.get("/items/t1")
    assert missing.status_code == 404 and "t1" in missing.json()["error"]["message"]
    assert client.get("/items").json()["total"] == 2


def test_put_replaces_an_item(client, png_bytes):
    assert client.put("/items/p1", json={"text": "first", "metadata": {"v": 1}}).status_code == 200
    replaced = client.put(
        "/items/p1", files={"file": ("x", png_bytes)}, data={"metadata": '{"v": 2}'}
    )
    assert replaced.json() == {"id": "p1", "modality": "image"}
    item = client.get("/items/p1").json()
    assert item["modality"] == "image" and item["metadata"] == {"v": 2}
    assert client.get("/items").json()["total"] == 1
    mismatch = client.put("/items/p1", json={"text": "x", "id": "other"})
    assert mismatch.status_code == 400 and "differs" in mismatch.json()["error"]["message"]


def test_ids_may_contain_slashes(client):
    assert client.post("/items", json={"text": "x", "id": "docs/a/1"}).status_code == 201
    assert client.get("/items/docs/a/1").json()["id"] == "docs/a/1"
    assert client.delete("/items/docs/a/1").status_code == 200
    assert client.get("/items/docs/a/1").status_code == 404


def test_batch_add_json_and_multipart(client, png_bytes):
    import base64

    body = {
        "items": [
            {"text": "first", "id": "b1", "metadata": {"i": 1}},
            {"content_base64": base64.b64encode(png_bytes).decode(), "id": "b2"},
        ]
    }
    response = client.post("/items/batch", json=body)
    assert response.status_code == 201, response.text
    assert response.json()["items"] == [
        {"id": "b1", "modality": "text"},
        {"id": "b2", "modality": "image"},
    ]
    multi = client.post("/items/batch", files=[("file", ("x", png_bytes))], data={"text": "t"})
    # httpx sends form fields before files; the service answers in the order received.
    assert [i["modality"] for i in multi.json()["items"]] == ["text", "image"]
    assert client.get("/items").json()["total"] == 4


def test_search_text_to_image_and_image_to_image(client, png_bytes, png_bytes_2):
    first = client.post("/items", files={"file": ("p", png_bytes)}, data={"id": "img1"}).json()
    client.post("/items", files={"file": ("p", png_bytes_2)}, data={"id": "img2"})
    client.post("/items", json={"text": "a caption", "id": "txt"})

    by_image = client.post("/search?k=3", files={"file": ("q", png_bytes)}).json()
    assert by_image["query_modality"] == "image"
    assert by_image["results"][0]["id"] == first["id"]
    assert by_image["results"][0]["score"] > 0.999

    by_text = client.get("/search", params={"q": "a picture", "modality": "image", "k": 5}).json()
    assert {hit["id"] for hit in by_text["results"]} == {"img1", "img2"}
    scores = [hit["score"] for hit in by_text["results"]]
    assert scores == sorted(scores, reverse=True)

    text_hit = client.get("/search", params={"q": "a caption", "dims": 64}).json()
    assert text_hit["results"][0]["id"] == "txt" and text_hit["dims"] == 64

    adaptive = client.get("/search", params={"q": "a caption", "mode": "adaptive", "k": 2}).json()
    assert adaptive["mode"] == "adaptive" and adaptive["results"][0]["id"] == "txt"

    json_query = client.post("/search?k=1", json={"text": "a caption"}).json()
    assert json_query["results"][0]["id"] == "txt"


def test_search_filters_by_metadata(client):
    client.post("/items", json={"text": "hello", "id": "en", "metadata": {"lang": "en"}})
    client.post("/items", json={"text": "hello", "id": "fr", "metadata": {"lang": "fr"}})
    response = client.get("/search", params={"q": "hello", "where": json.dumps({"lang": "fr"})})
    assert [hit["id"] for hit in response.json()["results"]] == ["fr"]


def test_openapi_docs_list_every_route(client):
    schema = client.get("/openapi.json").json()
    paths = set(schema["paths"])
    assert {"/embed", "/embed/batch", "/search", "/items", "/items/{item_id}"} <= paths
    assert {"/v1/embeddings", "/healthz", "/readyz", "/metrics"} <= paths
    body = schema["paths"]["/items"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "application/json"} <= set(body)
    assert client.get("/docs").status_code == 200


def test_metrics_count_requests_by_route_template(client):
    client.post("/items", json={"text": "x", "id": "m1"})
    client.get("/items/m1")
    client.get("/items/nope")
    text = client.get("/metrics").text
    assert (
        'mmembed_http_requests_total{method="GET",route="/items/{item_id}",status="200"} 1.0'
        in text
    )
    assert 'route="/items/{item_id}",status="404"} 1.0' in text
    assert 'mmembed_index_items{modality="text"} 1.0' in text
    assert 'mmembed_batch_size_count{modality="text"}' in text


def test_partial_modalities_refuse_the_missing_one(tmp_path, png_bytes):
    from fastapi.testclient import TestClient

    from model import Embedder
    from service.app import create_app
    from service.settings import Settings

    text_only = Embedder.from_preset("tiny", modalities=("text",))
    data_dir = tmp_path / "text-only"
    settings = Settings(preset="tiny", modalities="text", data_dir=data_dir)
    with TestClient(create_app(settings, embedder=text_only), base_url="http://127.0.0.1") as c:
        response = c.post("/embed", files={"file": ("p", png_bytes)})
        assert response.status_code == 400
        assert response.json()["error"]["type"] == "modality_unavailable"
        assert c.get("/readyz").json()["modalities"] == ["text"]
