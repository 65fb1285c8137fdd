"""`/embed?output=transcript`: what a clip was heard to say, from a model that mixes
transcripts into audio vectors (a tiny one with a random decoder here: the words are
its demo vocabulary, and what is checked is the path, not their meaning)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from model import Embedder
from model.multimodal import MultimodalModel
from model.transcripts import DEMO_WORDS
from tests.conftest import tiny_with_transcripts
from tests.service.conftest import client_factory


@pytest.fixture(scope="module")
def hearing() -> Embedder:
    return Embedder(MultimodalModel(tiny_with_transcripts()).eval(), preset_name="tiny")


@pytest.fixture
def hclient(tmp_path: Path, hearing: Embedder) -> TestClient:
    yield from client_factory(tmp_path, hearing, preset="tiny")


def test_a_clip_comes_back_with_what_was_heard(hclient: Callable[..., TestClient], wav_bytes):
    client = hclient()
    body = client.post("/embed?output=embedding,transcript", files={"file": ("a.wav", wav_bytes)})
    assert body.status_code == 200, body.text
    answer = body.json()
    assert answer["modality"] == "audio" and len(answer["embedding"]) == 512
    assert answer["transcript"] and set(answer["transcript"].split()) <= set(DEMO_WORDS)
    plain = client.post("/embed", files={"file": ("a.wav", wav_bytes)}).json()["embedding"]
    np.testing.assert_allclose(answer["embedding"], plain, atol=1e-5)  # the same vector


def test_a_batch_answers_null_for_text_and_images(hclient, wav_bytes, png_bytes):
    client = hclient()
    rows = client.post(
        "/embed/batch?output=transcript",
        files=[("file", ("a.wav", wav_bytes)), ("file", ("p.png", png_bytes))],
        data={"text": ["a red ball"]},
    ).json()["data"]
    by_modality = {r["modality"]: r for r in rows}
    assert by_modality["audio"]["transcript"]
    assert by_modality["image"]["transcript"] is None and by_modality["text"]["transcript"] is None
    assert "embedding" not in by_modality["audio"] or by_modality["audio"]["embedding"] is None


def test_a_model_without_transcripts_refuses_the_output(client, wav_bytes):
    response = client.post("/embed?output=transcript", files={"file": ("a.wav", wav_bytes)})
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "output_unavailable"
    assert "transcript" in response.json()["error"]["message"]
