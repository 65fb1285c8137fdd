"""`POST /describe` and `/embed?output=latents|llm_prefix` over HTTP (tiny model, tiny LLM).

The tiny random Llama of tests/conftest.py stands in for SmolLM2: what is checked is
the path (limits, errors, shapes, encodings, determinism), not the words.
"""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from model import Embedder
from tests.service.conftest import client_factory, mmembed_command


@pytest.fixture(scope="module")
def describing_embedder(describing_checkpoint: Path) -> Embedder:
    return Embedder.from_checkpoint(describing_checkpoint)


@pytest.fixture
def make_describing_client(tmp_path, describing_embedder, tiny_llm_dir):
    yield from client_factory(tmp_path / "describing", describing_embedder, llm=str(tiny_llm_dir))


@pytest.fixture
def dclient(make_describing_client) -> TestClient:
    return make_describing_client()


def _array(field: dict) -> np.ndarray:
    data = field["data"]
    if isinstance(data, str):
        return np.frombuffer(base64.b64decode(data), dtype="<f4").reshape(field["shape"])
    return np.asarray(data, dtype=np.float32).reshape(field["shape"])


def test_describe_writes_the_same_text_for_the_same_clip(dclient, wav_bytes, tiny_llm_dir):
    first = dclient.post(
        "/describe", files={"file": ("a.wav", wav_bytes)}, data={"max_tokens": "5"}
    )
    assert first.status_code == 200, first.text
    body = first.json()
    assert set(body) == {"text", "modality", "model", "tokens", "seconds"}
    assert body["modality"] == "audio" and body["model"] == tiny_llm_dir.name
    assert 0 <= body["tokens"] <= 5 and body["seconds"] > 0
    again = dclient.post(
        "/describe", files={"file": ("a.wav", wav_bytes)}, data={"max_tokens": "5"}
    )
    assert again.json()["text"] == body["text"]


def test_describe_takes_images_and_a_prompt(dclient, png_bytes):
    response = dclient.post(
        "/describe",
        files={"file": ("p.png", png_bytes)},
        data={"prompt": "What colour is it?", "max_tokens": "3"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["modality"] == "image" and response.json()["tokens"] <= 3


@pytest.mark.parametrize(
    ("data", "files", "status", "kind", "words"),
    [
        ({"max_tokens": "0"}, True, 400, "invalid_request", "max_tokens must be 1 to 64"),
        ({"max_tokens": "65"}, True, 400, "invalid_request", "max_tokens must be 1 to 64"),
        ({"max_tokens": "many"}, True, 400, "invalid_request", "whole number"),
        ({"prompt": "word " * 200}, True, 400, "invalid_request", "the limit is 64"),
        ({"text": "describe me"}, False, 400, "invalid_request", "not text"),
        ({"prompt": "hello"}, False, 400, "invalid_request", None),
    ],
)
def test_bad_describe_requests_are_4xx(dclient, wav_bytes, data, files, status, kind, words):
    response = dclient.post(
        "/describe", data=data, files={"file": ("a.wav", wav_bytes)} if files else None
    )
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["type"] == kind
    if words:
        assert words in error["message"]


def test_describe_wants_multipart(dclient):
    response = dclient.post("/describe", json={"text": "hello"})
    assert response.status_code == 415 and "multipart" in response.json()["error"]["message"]


def test_describe_is_off_with_llm_none_and_says_why(make_describing_client, wav_bytes):
    client = make_describing_client(llm="none")
    response = client.post("/describe", files={"file": ("a.wav", wav_bytes)})
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "describe_unavailable"
    assert "--llm none" in response.json()["error"]["message"]
    # Embedding is unaffected.
    assert client.post("/embed", files={"file": ("a.wav", wav_bytes)}).status_code == 200


def test_describe_without_a_projector_names_what_is_missing(client, wav_bytes):
    response = client.post("/describe", files={"file": ("a.wav", wav_bytes)})
    assert response.status_code == 400
    assert "no trained LLM projector" in response.json()["error"]["message"]


def test_embed_returns_latents_and_prefix_as_floats_and_base64(
    dclient, describing_embedder, wav_bytes
):
    config = describing_embedder.model.config.perceiver
    floats = dclient.post(
        "/embed?output=embedding,latents,llm_prefix", files={"file": ("a.wav", wav_bytes)}
    )
    assert floats.status_code == 200, floats.text
    body = floats.json()
    assert body["latents"]["shape"] == [config.num_latents, config.dim]
    assert body["llm_prefix"]["shape"] == [config.num_latents, 32]
    plain = np.asarray(
        dclient.post("/embed", files={"file": ("a.wav", wav_bytes)}).json()["embedding"]
    )
    np.testing.assert_allclose(np.asarray(body["embedding"]), plain, atol=1e-5)
    b64 = dclient.post(
        "/embed?output=latents,llm_prefix&encoding_format=base64",
        files={"file": ("a.wav", wav_bytes)},
    ).json()
    assert "embedding" not in b64 or b64["embedding"] is None
    for name in ("latents", "llm_prefix"):
        assert isinstance(b64[name]["data"], str)
        np.testing.assert_allclose(_array(b64[name]), _array(body[name]), atol=1e-6)
    only = dclient.post("/embed?encoding_format=base64&dims=64", json={"text": "a red ball"}).json()
    vector = np.frombuffer(base64.b64decode(only["embedding"]), dtype="<f4")
    assert vector.shape == (64,) and abs(np.linalg.norm(vector) - 1) < 1e-5


def test_batch_outputs_keep_the_order_of_mixed_inputs(dclient, png_bytes, wav_bytes):
    response = dclient.post(
        "/embed/batch?output=latents",
        files=[("file", ("a.wav", wav_bytes)), ("file", ("p.png", png_bytes))],
        data={"text": ["a red ball"]},
    )
    assert response.status_code == 200, response.text
    rows = response.json()["data"]
    assert [r["index"] for r in rows] == [0, 1, 2]
    single = dclient.post("/embed?output=latents", json={"text": "a red ball"}).json()
    by_modality = {r["modality"]: r for r in rows}
    np.testing.assert_allclose(
        _array(by_modality["text"]["latents"]), _array(single["latents"]), atol=1e-5
    )


def test_bad_outputs_are_refused(dclient, client):
    bad = dclient.post("/embed?output=logits", json={"text": "x"})
    assert bad.status_code == 422 and "embedding, latents, llm_prefix" in bad.text
    assert bad.json()["error"]["type"] == "validation_error"
    fmt = dclient.post("/embed/batch?encoding_format=hex", json={"texts": ["x"]})
    assert fmt.status_code == 422 and "encoding_format" in fmt.text
    no_projector = client.post("/embed?output=llm_prefix", json={"text": "x"})
    assert no_projector.status_code == 400
    assert no_projector.json()["error"]["type"] == "output_unavailable"
    assert client.post("/embed?output=latents", json={"text": "x"}).status_code == 200


def test_openapi_documents_describe_and_outputs(dclient):
    schema = dclient.get("/openapi.json").json()
    assert "/describe" in schema["paths"]
    params = {p["name"] for p in schema["paths"]["/embed"]["post"]["parameters"]}
    assert {"output", "encoding_format", "dims"} <= params
    assert "DescribeOut" in schema["components"]["schemas"]


def test_a_real_server_and_the_cli_describe(
    server_factory, describing_checkpoint, tiny_llm_dir, wav_bytes, tmp_path
):
    server = server_factory(
        model_args=["--checkpoint", str(describing_checkpoint), "--llm", str(tiny_llm_dir)]
    )
    server.start()
    over_http = httpx.post(
        f"{server.url}/describe", files={"file": ("a.wav", wav_bytes)}, data={"max_tokens": "4"}
    )
    assert over_http.status_code == 200, over_http.text
    clip = tmp_path / "a.wav"
    clip.write_bytes(wav_bytes)
    result = subprocess.run(
        [
            *mmembed_command(),
            "describe",
            str(clip),
            "--max-tokens",
            "4",
            "--checkpoint",
            str(describing_checkpoint),
            "--llm",
            str(tiny_llm_dir),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={"HF_HUB_OFFLINE": "1", "MMEMBED_TORCH_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    row = json.loads(result.stdout.strip().splitlines()[-1])
    assert row["text"] == over_http.json()["text"] and row["modality"] == "audio"
    refused = subprocess.run(
        [
            *mmembed_command(),
            "describe",
            str(clip),
            "--checkpoint",
            str(describing_checkpoint),
            "--llm",
            "none",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={"HF_HUB_OFFLINE": "1", "MMEMBED_TORCH_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )
    assert refused.returncode == 1 and "turned off" in refused.stderr


def test_describe_needs_the_api_key_and_is_counted_in_metrics(make_describing_client, wav_bytes):
    client = make_describing_client(api_keys="k1")
    assert client.post("/describe", files={"file": ("a.wav", wav_bytes)}).status_code == 401
    ok = client.post(
        "/describe",
        files={"file": ("a.wav", wav_bytes)},
        data={"max_tokens": "2"},
        headers={"Authorization": "Bearer k1"},
    )
    assert ok.status_code == 200, ok.text
    metrics = client.get("/metrics").text
    assert 'batch_size_count{modality="describe"} 1.0' in metrics.replace("mmembed_", "")
