"""The official `openai` client against `/v1/embeddings` of a real server, unchanged."""

from __future__ import annotations

import base64

import numpy as np
import openai
import pytest

from model.matryoshka import truncate


@pytest.fixture(scope="module")
def client(live_server):
    return openai.OpenAI(base_url=f"{live_server.url}/v1", api_key="unused", max_retries=0)


def test_float_and_base64_agree_with_embed(client, live_server, tiny_embedder):
    import httpx

    texts = ["a small dog barks", "stock prices fell"]
    as_float = client.embeddings.create(model="mmembed", input=texts, encoding_format="float")
    as_base64 = client.embeddings.create(model="mmembed", input=texts)  # the client's default
    assert as_float.model == "mmembed" and len(as_float.data) == 2
    assert [d.index for d in as_float.data] == [0, 1]
    for f, b in zip(as_float.data, as_base64.data, strict=True):
        np.testing.assert_allclose(f.embedding, b.embedding, atol=1e-6)
    direct = httpx.post(f"{live_server.url}/embed", json={"text": texts[0]}).json()["embedding"]
    np.testing.assert_allclose(as_float.data[0].embedding, direct, atol=1e-5)
    # usage comes from the batch that embedded the texts: the same tokenizer's counts
    assert as_float.usage.prompt_tokens == sum(tiny_embedder.count_tokens(texts)) > 0
    assert as_float.usage.total_tokens == as_float.usage.prompt_tokens


@pytest.mark.parametrize("encoding_format", ["float", "base64"])
def test_dimensions_is_the_matryoshka_truncation(client, encoding_format):
    full = client.embeddings.create(model="m", input="hello world", encoding_format="float")
    short = client.embeddings.create(
        model="m", input="hello world", dimensions=64, encoding_format=encoding_format
    )
    embedding = short.data[0].embedding
    if encoding_format == "base64":  # asked for explicitly, the client hands back the string
        assert isinstance(embedding, str)
        embedding = np.frombuffer(base64.b64decode(embedding), dtype="<f4")
    vector = np.asarray(embedding)
    assert vector.shape == (64,) and abs(np.linalg.norm(vector) - 1) < 1e-5
    expected = truncate(np.asarray(full.data[0].embedding)[None], 64)[0]
    np.testing.assert_allclose(vector, expected, atol=1e-5)


def test_a_single_string_input(client):
    result = client.embeddings.create(model="m", input="one string")
    assert len(result.data) == 1 and len(result.data[0].embedding) == 512


def test_errors_reach_the_client_as_openai_errors(client):
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model="m", input="x", dimensions=100)
    assert "dimensions" in str(info.value)
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="m", input="")


def test_models_list(client):
    assert [m.id for m in client.models.list()] == ["mmembed"]


def test_a_json_body_without_content_type_is_read_as_json(live_server, client):
    import httpx

    body = b'{"model": "m", "input": "one string", "dimensions": 64}'
    raw = httpx.post(f"{live_server.url}/v1/embeddings", content=body)
    assert raw.status_code == 200, raw.text
    expected = client.embeddings.create(
        model="m", input="one string", dimensions=64, encoding_format="float"
    )
    np.testing.assert_allclose(
        raw.json()["data"][0]["embedding"], expected.data[0].embedding, atol=1e-6
    )
