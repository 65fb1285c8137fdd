"""Fixtures for the model tests: one tiny model per session, real speech from espeak-ng."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from model import Embedder
from model.config import PRESETS
from model.multimodal import MultimodalModel


@pytest.fixture(scope="session")
def tiny_model() -> MultimodalModel:
    """The tiny preset, all three modalities, in eval mode. Do not train it in tests."""
    return MultimodalModel(PRESETS["tiny"]).eval()


@pytest.fixture(scope="session")
def tiny_embedder(tiny_model: MultimodalModel) -> Embedder:
    return Embedder(tiny_model, preset_name="tiny")


def _espeak(text: str, path: Path) -> tuple[np.ndarray, int]:
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is not installed (apt-get install espeak-ng)")
    subprocess.run(["espeak-ng", "-w", str(path), text], check=True, capture_output=True)
    samples, rate = sf.read(path, dtype="float32")
    return samples, rate


@pytest.fixture(scope="session")
def speech(tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, int]:
    """A real spoken sentence (espeak-ng, 22.05 kHz mono float32), about 2 s."""
    return _espeak("A man is eating food.", tmp_path_factory.mktemp("speech") / "man.wav")


@pytest.fixture(scope="session")
def speech_other(tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, int]:
    """A different spoken sentence."""
    return _espeak(
        "The weather will be cold and windy tomorrow.",
        tmp_path_factory.mktemp("speech") / "weather.wav",
    )
