"""Fixtures for the model tests: one tiny model per session, real speech from espeak-ng."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

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


SHARED_MODELS = Path(__file__).resolve().parents[3] / "shared" / "models"


@pytest.fixture(scope="session")
def shared_encoders() -> dict[str, str]:
    """{modality: folder} of the real encoders in ../shared/models."""
    return {
        "audio": str(SHARED_MODELS / "whisper-base-encoder"),
        "text": str(SHARED_MODELS / "all-MiniLM-L6-v2"),
    }


def _fake_hub_cache(root: Path, repos: dict[str, str]) -> Path:
    """A Hugging Face cache folder holding ``repos`` ({hub ID: model folder}) laid out as
    the hub client lays them out (refs/main -> snapshots/<commit>/files)."""
    for repo_id, folder in repos.items():
        repo = root / f"models--{repo_id.replace('/', '--')}"
        commit = "0" * 40
        snapshot = repo / "snapshots" / commit
        snapshot.mkdir(parents=True)
        for item in Path(folder).iterdir():
            (snapshot / item.name).symlink_to(item.resolve())
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text(commit)
    return root


@pytest.fixture
def hub_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shared_encoders: dict[str, str]
) -> Path:
    """An offline Hugging Face cache holding the shared encoders under their hub IDs."""
    from model.release import HUB_IDS

    cache = _fake_hub_cache(
        tmp_path / "hub", {HUB_IDS[m]: folder for m, folder in shared_encoders.items()}
    )
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


@pytest.fixture
def small_real_checkpoint(tmp_path: Path, shared_encoders: dict[str, str]) -> Path:
    """An (untrained) audio-text checkpoint on the shared encoders with a small resampler."""
    import dataclasses

    from model.checkpoint import save_checkpoint
    from model.config import PerceiverConfig, preset

    config = preset("base", encoders=shared_encoders, modalities=("audio", "text"))
    config = dataclasses.replace(
        config, perceiver=PerceiverConfig(dim=64, num_latents=4, depth=1, heads=4)
    )
    torch.manual_seed(0)
    return save_checkpoint(MultimodalModel(config), tmp_path / "ckpt", {"trained": True})
