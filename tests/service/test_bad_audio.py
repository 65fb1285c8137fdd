"""Audio that used to embed as something other than what was sent: refused by name, or
embedded with a warning header; and the start-up warning for an untrained checkpoint."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf

from service.app import model_warning
from service.responses import INPUT_WARNING_HEADER


def _audio(seconds: float, fmt: str = "WAV") -> bytes:
    t = np.arange(int(seconds * 16_000), dtype=np.float32) / 16_000
    buf = io.BytesIO()
    sf.write(buf, 0.3 * np.sin(2 * np.pi * 330 * t), 16_000, format=fmt)
    return buf.getvalue()


@pytest.mark.parametrize("path", ["/embed", "/search", "/items"])
def test_a_60_byte_truncated_wav_is_a_400_naming_the_truncation(client, path):
    response = client.post(path, files={"file": ("clip.wav", _audio(1.0)[:60])})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "truncated_media"
    assert "truncated WAV" in error["message"] and "holds 16" in error["message"]


def test_a_clip_under_the_minimum_is_a_400_with_its_length(make_client):
    client = make_client(min_audio_seconds=0.25)
    response = client.post("/embed", files={"file": ("short.wav", _audio(0.2))})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "audio_too_short"
    assert "0.2000 s long" in error["message"] and "0.25 s" in error["message"]
    assert client.post("/embed", files={"file": ("ok.wav", _audio(0.3))}).status_code == 200


def test_a_cut_mp3_is_embedded_with_a_warning_header(client):
    mp3 = _audio(2.0, "MP3")
    whole = client.post("/embed", files={"file": ("a.mp3", mp3)})
    cut = client.post("/embed", files={"file": ("a.mp3", mp3[: len(mp3) * 2 // 3])})
    assert whole.status_code == 200 and INPUT_WARNING_HEADER not in whole.headers
    assert cut.status_code == 200 and len(cut.json()["embedding"]) == 512
    warning = cut.headers[INPUT_WARNING_HEADER]
    assert warning.startswith("input 0 (file): audio ends early") and "2.00 s" in warning
    search = client.post("/search", files={"file": ("a.mp3", mp3[: len(mp3) * 2 // 3])})
    assert search.status_code == 200 and search.headers[INPUT_WARNING_HEADER] == warning


def test_an_untrained_checkpoint_is_called_that_not_no_checkpoint():
    info = {"demo": False, "trained": False, "checkpoint": "/models/run-3"}
    warning = model_warning(info)
    assert warning is not None and "UNTRAINED CHECKPOINT /models/run-3" in warning
    assert "no checkpoint" not in warning
    assert "no checkpoint" in model_warning({**info, "checkpoint": None})
    assert model_warning({**info, "trained": True}) is None
